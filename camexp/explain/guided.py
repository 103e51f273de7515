"""Guided Backpropagation (Springenberg et al.), the deconvnet's backward rule (Zeiler & Fergus) and the product of a
guided gradient with a CAM map: "Guided Grad-CAM++" (paper §3).

Guided backprop lets a gradient through a ReLU only where the ReLU's input was positive *and* the incoming
gradient is positive. We get it without editing the model: a forward hook on every ReLU/ReLU6 module passes
the module's output through an identity whose backward clamps the gradient at 0; the module's own backward
then applies its input mask. Hooking the output (rather than a backward hook on the module) works with
timm's inplace activations, because the hook returns a fresh tensor. Activations called functionally
(F.relu inside a forward) cannot be hooked: a model with no ReLU module at all is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from camexp.errors import CamexpError
from camexp.models.layers import forward_hooks

GUIDED_PREFIX = "guided-"
GUIDED_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)


def split_guided(method: str) -> tuple[str, bool]:
    """'guided-gradcam++' -> ('gradcam++', True); 'gradcam' -> ('gradcam', False)."""
    if method.startswith(GUIDED_PREFIX):
        return method[len(GUIDED_PREFIX) :], True
    return method, False


class _ClampGradient(torch.autograd.Function):
    """Identity forward; backward keeps only the positive part of the gradient."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


class _DeconvGradient(torch.autograd.Function):
    """Forward: the activation's output; backward: the positive part of the incoming gradient, handed straight to
    the activation's input, past its own mask (the deconvnet's backward ReLU)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.clamp(min=0), None


def relu_modules(net: nn.Module) -> list[nn.Module]:
    """The ReLU/ReLU6 modules of `net`, those guided backprop and the deconvnet rewrite."""
    return [m for m in net.modules() if isinstance(m, GUIDED_ACTIVATIONS)]


def no_relu_modules(net: nn.Module, what: str) -> str:
    """Why `what` is not defined for `net` (it has no ReLU/ReLU6 module to rewrite), '' when it is."""
    if relu_modules(net):
        return ""
    return (
        f"{what} needs ReLU/ReLU6 activation modules; {type(net).__name__} has none (it uses other or functional "
        "activations), so its backward rule is not defined there"
    )


@contextmanager
def guided_relus(net: nn.Module) -> Iterator[int]:
    """While active, every ReLU/ReLU6 module of `net` back-propagates guided; yields how many were hooked."""
    acts = relu_modules(net)
    if not acts:
        raise CamexpError(no_relu_modules(net, "guided backpropagation") + ": use a method without 'guided-'")
    with forward_hooks((m, lambda mod, inp, out: _ClampGradient.apply(out)) for m in acts):
        yield len(acts)


@contextmanager
def deconv_relus(net: nn.Module) -> Iterator[int]:
    """While active, every ReLU/ReLU6 module of `net` back-propagates as the deconvnet's (Zeiler & Fergus): the
    positive part of the gradient, whatever the sign of the forward input. In-place activations run out of place
    meanwhile (the hook needs their input), then get their setting back; yields how many were hooked."""
    acts = relu_modules(net)
    if not acts:
        raise CamexpError(no_relu_modules(net, "the deconvnet"))
    inplace = [getattr(m, "inplace", False) for m in acts]
    try:
        for m in acts:
            m.inplace = False  # type: ignore[assignment]
        with forward_hooks((m, lambda mod, inp, out: _DeconvGradient.apply(inp[0], out)) for m in acts):
            yield len(acts)
    finally:
        for m, flag in zip(acts, inplace, strict=True):
            m.inplace = flag  # type: ignore[assignment]


def guided_backprop(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Guided gradient of the logit of `targets` (B,) w.r.t. the images `x` (B,3,H,W): (B,3,H,W)."""
    with guided_relus(model), torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        logits = model(leaf)
        (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None].to(logits.device)).sum(), leaf)
    return grad


def guided_cam(grad: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """Guided Grad-CAM(++) = guided gradient (B,3,H,W) times the upsampled, normalised map (B,H,W)."""
    return grad * cam[:, None]


def to_display(g: torch.Tensor) -> torch.Tensor:
    """Per image, standardise a gradient image (B,3,H,W) and map it to [0,1] around grey (0.5), as the
    Guided Backprop/Grad-CAM papers render them; an all-zero image stays flat grey."""
    mean = g.mean((1, 2, 3), keepdim=True)
    std = g.std((1, 2, 3), keepdim=True)
    return ((g - mean) / std.clamp(min=1e-12) * 0.1 + 0.5).clamp(0, 1)
