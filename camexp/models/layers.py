"""Which activation is explained, and whether the head allows CAM (global average pool + one linear layer)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from camexp.errors import CamexpError
from camexp.models.layout import LAYOUTS, Layout


def get_module(net: nn.Module, path: str) -> nn.Module:
    """Module at dotted `path`, or a clear error listing a few valid paths."""
    modules = dict(net.named_modules())
    if path not in modules:
        near = [n for n in modules if n and n.split(".")[0] == path.split(".")[0]][:8] or [
            n for n in modules if n and "." not in n
        ]
        raise CamexpError(f"model.layer {path!r} does not exist in this model; e.g. {near}")
    return modules[path]


@contextmanager
def forward_hooks(hooks: Iterable[tuple[nn.Module, Callable[..., object]]]) -> Iterator[None]:
    """While active, each (module, hook) pair is a forward hook of its module; all are removed on exit, an error
    included. Every camexp forward hook goes through here, so none can outlive its use."""
    handles = [m.register_forward_hook(hook) for m, hook in hooks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def record_outputs(net: nn.Module) -> Iterator[list[tuple[str, object]]]:
    """Record (module name, output) of every module in execution order."""
    seen: list[tuple[str, object]] = []
    with forward_hooks((m, lambda mod, inp, out, n=n: seen.append((n, out))) for n, m in net.named_modules() if n):
        yield seen


def auto_layer(net: nn.Module, probe: torch.Tensor, prefer: Layout | None = None) -> str:
    """The papers' layer: the one a registered layout names for the model's family (`prefer`, the declared
    model.layout, asked first; VGG/AlexNet, ViT-style and Swin are the built-in ones: camexp/models/layout.py);
    otherwise the final feature map before global pooling: the outermost module whose output *is* timm's
    `forward_features` output, or, for models without it, the last module with a 4-D output larger than 1x1."""
    for entry in ([prefer] if prefer else []) + [e for _, e in LAYOUTS.items()]:
        layer = entry.auto_layer(net)
        if layer:
            return layer
    with torch.no_grad(), record_outputs(net) as seen:
        # timm method, typed via Module.__getattr__
        feats = net.forward_features(probe) if hasattr(net, "forward_features") else None  # type: ignore[operator]
        if feats is None:
            net(probe)
    if feats is not None:
        hits = [n for n, out in seen if out is feats]
    else:
        hits = [
            n for n, out in seen if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1
        ]
        hits = [n for n, out in seen if out is dict(seen)[hits[-1]]] if hits else []
    if not hits:
        raise CamexpError("could not find the last convolutional feature map automatically: set model.layer")
    return min(hits, key=lambda n: n.count("."))


def probe_layer(net: nn.Module, layer: nn.Module, probe: torch.Tensor) -> tuple[object, torch.Tensor]:
    """One forward of `probe`: the layer's (last) output and the logits."""
    captured: list[object] = []
    with forward_hooks([(layer, lambda m, i, o: captured.append(o))]), torch.no_grad():
        logits = net(probe)
    if not captured:
        raise CamexpError("model.layer is never called in the model's forward pass")
    return captured[-1], logits


def find_cam_classifier(net: nn.Module, a: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor | None, str]:
    """W_fc (C, K) when logits == GAP(A) @ W.T + b holds for a probe's activation A, else (None, why not).

    Verifying the identity numerically is what guarantees CAM is meaningful for this backbone/layer,
    whatever its module structure.
    """
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None, "the model has no linear classifier"
    fc = linears[-1]
    if a.shape[1] != fc.in_features:
        return None, f"the layer's {a.shape[1]} channels do not feed the last linear layer"
    gap = a.double().mean((2, 3)) @ fc.weight.double().T
    if fc.bias is not None:
        gap = gap + fc.bias.double()
    if gap.shape != logits.shape or not torch.allclose(gap, logits.double(), rtol=1e-3, atol=1e-3):
        return None, "its head is not global average pooling + one linear layer on this layer"
    return fc.weight.detach(), ""
