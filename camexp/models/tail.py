"""`tail(A') -> logits`: the network after the explained layer, applied to a modified activation.

Ablation-CAM (and any method that edits A) needs the logits that a changed activation would produce. Where
the model can be split at the layer, nothing before it is recomputed: timm's `forward_head` when the layer
is the `forward_features` output; the remaining children of the enclosing nn.Sequential(s) (VGG after
conv5_3) followed by `forward_head` or torchvision's avgpool/flatten/classifier. Every split is verified on
the probe image against the full model; when none holds, the tail is a full forward whose layer output is
substituted by a hook (correct for any model, at the cost of the layers before it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from camexp.models.layers import forward_hooks

Split = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Tail:
    """The network after `layer`: `split` maps the layer's native output to logits, or None for a full
    forward with substitution (which needs the normalised input images)."""

    net: nn.Module
    layer: nn.Module
    kind: str  # forward_head | sequential | full_forward
    split: Split | None = None

    def __call__(self, a_native: torch.Tensor, x_norm: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for activations `a_native` (the layer's layout); `x_norm` only for the full forward."""
        if self.split is not None:
            return self.split(a_native.clone())  # the tail's first op may be an in-place ReLU
        assert x_norm is not None, "a full-forward tail needs the input images"
        with forward_hooks([(self.layer, lambda m, i, o: a_native)]):
            return self.net(x_norm)


def _sequential_rest(net: nn.Module, layer_name: str) -> tuple[list[nn.Module], str]:
    """Modules after the layer inside its enclosing nn.Sequential(s), and the path of the outermost one."""
    modules = dict(net.named_modules())
    rest: list[nn.Module] = []
    path = layer_name
    while "." in path:
        parent_path, _, child = path.rpartition(".")
        parent = modules[parent_path]
        if not isinstance(parent, nn.Sequential) or not child.isdigit():
            break
        rest += list(parent)[int(child) + 1 :]
        path = parent_path
    return rest, path


def _torchvision_head(net: nn.Module) -> Split | None:
    if all(hasattr(net, a) for a in ("features", "avgpool", "classifier")):
        # looked up per call (not bound here): replace_head may swap the classifier after the tail is built
        return lambda a: cast(nn.Module, net.classifier)(torch.flatten(cast(nn.Module, net.avgpool)(a), 1))
    return None


def _candidates(net: nn.Module, layer_name: str) -> list[tuple[str, Split]]:
    head = getattr(net, "forward_head", None)
    out: list[tuple[str, Split]] = []
    if callable(head):
        out.append(("forward_head", head))
    rest, outer = _sequential_rest(net, layer_name)
    if outer != layer_name:
        seq = nn.Sequential(*rest)
        finishers: list[Split] = [
            f
            for f in (head if callable(head) else None, _torchvision_head(net) if outer == "features" else None)
            if f is not None
        ]

        def after_seq(f: Split) -> Split:  # binds f per finisher (a typed stand-in for `lambda a, f=f: ...`)
            return lambda a: f(seq(a))

        out += [("sequential", after_seq(f)) for f in finishers]
    return out


def build_tail(
    net: nn.Module, layer: nn.Module, layer_name: str, probe_out: torch.Tensor, probe_logits: torch.Tensor
) -> Tail:
    """The cheapest tail that reproduces `probe_logits` from `probe_out` (the layer's output on a probe)."""
    tol = 1e-4 * (1.0 + float(probe_logits.abs().max()))
    for kind, split in _candidates(net, layer_name):
        try:
            with torch.no_grad():
                got = split(probe_out.clone())
        except Exception:  # a split that does not apply to this model's structure: try the next one
            continue
        if (
            isinstance(got, torch.Tensor)
            and got.shape == probe_logits.shape
            and torch.allclose(got, probe_logits, rtol=1e-4, atol=tol)
        ):
            return Tail(net, layer, kind, split)
    return Tail(net, layer, "full_forward")
