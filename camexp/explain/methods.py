"""CAM methods as pure functions of the layer activation A and its gradient G (README.md, Definitions D2).

Every gradient method reads the same (A, G) from one forward + one backward pass. A method is one
decorated function returning the map before upsampling, shape (B, h, w); adding one is a few lines here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass
class MethodInputs:
    """A and G (B,K,h,w, float32), the target classes (B,) and the classifier weights for CAM (C,K)."""

    A: torch.Tensor
    G: torch.Tensor | None
    targets: torch.Tensor
    cam_weight: torch.Tensor | None = None

    @cached_property
    def alpha(self) -> torch.Tensor:
        """Grad-CAM++ alpha, eq. (14) with Y = exp(S): G^2 / (2G^2 + sum_ab A_ab G^3).

        Evaluated as 1 / (2 + sum_ab A_ab * G), which is exact where G != 0 and, unlike the G^2 form,
        needs no epsilon: with |G| ~ 1e-3 an eps of 1e-6 would swamp the true denominator. alpha = 0 where
        G = 0 or where the denominator vanishes.
        """
        assert self.G is not None
        denom = 2.0 + self.A.sum((2, 3), keepdim=True) * self.G
        ok = (self.G != 0) & (denom != 0)
        return torch.where(ok, 1.0 / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(denom))


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[[MethodInputs], torch.Tensor]
    needs_grad: bool
    summary: str


METHODS: dict[str, Method] = {}


def method(name: str, summary: str, needs_grad: bool = True) -> Callable[[Callable[[MethodInputs], torch.Tensor]], Callable[[MethodInputs], torch.Tensor]]:
    """Register `fn` under `name`."""

    def register(fn: Callable[[MethodInputs], torch.Tensor]) -> Callable[[MethodInputs], torch.Tensor]:
        METHODS[name] = Method(name, fn, needs_grad, summary)
        return fn

    return register


def weighted_sum(w: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """sum_k w_k A_k for channel weights w (B,K) -> (B,h,w)."""
    return torch.einsum("bk,bkhw->bhw", w, A)


@method("cam", "CAM (Zhou et al.): classifier weights of the target class; GAP + linear heads only", needs_grad=False)
def cam(x: MethodInputs) -> torch.Tensor:
    assert x.cam_weight is not None
    return weighted_sum(x.cam_weight[x.targets].to(x.A.dtype), x.A)


@method("gradcam", "Grad-CAM: w_k = mean of G")
def gradcam(x: MethodInputs) -> torch.Tensor:
    return weighted_sum(x.G.mean((2, 3)), x.A).relu()


@method("gradcam+", "Grad-CAM+: w_k = mean of ReLU(G) (equivalence paper eq. 3)")
def gradcam_plus(x: MethodInputs) -> torch.Tensor:
    return weighted_sum(x.G.relu().mean((2, 3)), x.A).relu()


@method("gradcam++", "Grad-CAM++: w_k = sum alpha * ReLU(G), exact eq. (14) alpha")
def gradcam_pp(x: MethodInputs) -> torch.Tensor:
    return weighted_sum((x.alpha * x.G.relu()).sum((2, 3)), x.A).relu()


@method("gradcam++all", "Grad-CAM++ with alpha on all gradients, no ReLU on G (supplementary Table 4)")
def gradcam_pp_all(x: MethodInputs) -> torch.Tensor:
    return weighted_sum((x.alpha * x.G).sum((2, 3)), x.A).relu()


@method("gradcam++orig", "Grad-CAM++ with alpha normalised per channel over G > 0, as the authors' code")
def gradcam_pp_orig(x: MethodInputs) -> torch.Tensor:
    norm = (x.alpha * (x.G > 0)).sum((2, 3), keepdim=True)
    alpha = x.alpha / torch.where(norm == 0, torch.ones_like(norm), norm)
    return weighted_sum((alpha * x.G.relu()).sum((2, 3)), x.A).relu()


@method("hirescam", "HiRes-CAM (extension): ReLU(sum_k G_k * A_k), element-wise")
def hirescam(x: MethodInputs) -> torch.Tensor:
    return (x.G * x.A).sum(1).relu()


@method("layercam", "LayerCAM (extension): ReLU(sum_k ReLU(G_k) * A_k), element-wise")
def layercam(x: MethodInputs) -> torch.Tensor:
    return (x.G.relu() * x.A).sum(1).relu()
