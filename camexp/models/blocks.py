"""The blocks of a backbone in the order the `mprt` sanity check randomises them (head first), and the
backbone as its own constructor initialises it (the weights a block is reset to).

A block is a unit of the model's own structure: the network's named children that hold parameters, where a
child that holds the stages timm's `feature_info` points into (`blocks`, `layers`, `stages`, `features`) is
split into its own parameterised children (EfficientNet's `blocks.0` ... `blocks.6`, Swin's `layers.0` ...).
Parameters that sit on the network itself (ViT's `cls_token`, `pos_embed`) form one block of their own, at the
bottom, since the model uses them first. The list is the same for every method of a run, and `camexp check`
prints it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from camexp.config import ModelConfig
from camexp.errors import CamexpError
from camexp.models import _create


@dataclass(frozen=True)
class Block:
    """One randomisation unit: its name and the parameter/buffer names (state-dict keys of the network)."""

    name: str
    keys: tuple[str, ...]


def _stage_containers(net: nn.Module) -> set[str]:
    """The children of `net` that hold the stages timm's feature_info names (`blocks` for `blocks.4`)."""
    info = getattr(net, "feature_info", None)
    modules = [f["module"] for f in info] if isinstance(info, list) else []
    return {m.split(".")[0] for m in modules if "." in m}


def _keys(module: nn.Module, prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{k}" for k in module.state_dict())


def randomisation_blocks(net: nn.Module) -> list[Block]:
    """The blocks of `net`, head first (see the module docstring); blocks without parameters are left out."""
    containers = _stage_containers(net)
    units: list[tuple[str, nn.Module]] = []
    for name, child in net.named_children():
        if name in containers:
            units += [(f"{name}.{sub}", grandchild) for sub, grandchild in child.named_children()]
        else:
            units.append((name, child))
    blocks = [Block(name, _keys(m, name)) for name, m in units if any(True for _ in m.parameters())]
    own = tuple(k for k, _ in net.named_parameters(recurse=False))
    if own:
        blocks.insert(0, Block("+".join(own), own))
    return blocks[::-1]


def reset_layers(net: nn.Module) -> list[Block]:
    """Every module of `net` that has `reset_parameters`, head first (named_modules reversed): Quantus 0.6's
    randomisation units (`PyTorchModel.get_random_layer_generator`, order top_down)."""
    units = [(n, m) for n, m in net.named_modules() if hasattr(m, "reset_parameters")]
    return [Block(name, _keys(m, name) if name else tuple(m.state_dict())) for name, m in units][::-1]


def randomisation_units(net: nn.Module, units: str) -> list[Block]:
    """`sanity.mprt_units`' units of `net`, head first: its blocks, or every module with reset_parameters."""
    return reset_layers(net) if units == "layers" else randomisation_blocks(net)


def checkpoints(blocks: list[Block], chosen: list[str] | None) -> list[int]:
    """The depths (1: the first block randomised) after which `mprt` explains: every depth, or those of the
    blocks `chosen` (`sanity.mprt_blocks`) and always the last (the fully randomised model, the main table's
    row); a name that is not a block is a user error naming the blocks."""
    names = [b.name for b in blocks]
    if chosen is None:
        return list(range(1, len(blocks) + 1))
    unknown = [n for n in chosen if n not in names]
    if unknown or not chosen:
        raise CamexpError(
            f"sanity.mprt_blocks: {unknown or 'empty'} not among the model's blocks (head first): {', '.join(names)}"
        )
    return sorted({names.index(n) + 1 for n in chosen} | {len(names)})


def initial_state(cfg: ModelConfig, num_classes: int, seed: int) -> dict[str, torch.Tensor]:
    """The state dict of the network (keys as in `randomisation_blocks`) as its constructor initialises it
    (timm's or torchvision's own init scheme for the family), drawn on the CPU from `seed` so that it is the
    same on every device; the global RNG is left as it was."""
    random_weights = cfg.model_copy(update={"weights": "random"})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net, _ = _create(random_weights, num_classes)
    return {k: v.detach() for k, v in net.state_dict().items()}
