"""The explainer core: one forward and at most one backward per batch serve every method.

A forward hook replaces the layer's output by a leaf tensor that requires grad. Parameters are frozen and
the input needs no grad, so autograd records nothing before the layer and the backward pass runs through
the head only.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from camexp.errors import CamexpError
from camexp.explain.maps import upsample_normalize
from camexp.explain.methods import METHODS, MethodInputs
from camexp.models import LoadedModel


@dataclass
class Explanation:
    """Everything one batch yields: logits on the full images, targets, and per method the normalised
    maps (B,H,W) with flags of constant maps and of non-finite maps."""

    logits: torch.Tensor
    targets: torch.Tensor
    maps: dict[str, torch.Tensor]
    constant: dict[str, torch.Tensor]
    finite: dict[str, torch.Tensor]
    inputs: MethodInputs


@contextmanager
def leaf_activation(layer: nn.Module) -> Iterator[list[torch.Tensor]]:
    """While active, `layer`'s output becomes a fresh leaf requiring grad (appended to the yielded list).

    The model continues on a clone of the leaf, so an in-place op after the layer (VGG's ReLU(inplace))
    cannot modify A or trip autograd's leaf check.
    """
    store: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(True)
        store.append(leaf)
        return leaf.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


class Explainer:
    """Computes maps of several methods for a batch of pixel-space images on the model's device."""

    def __init__(self, loaded: LoadedModel, methods: list[str], score: str = "logit"):
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise CamexpError(f"unknown method(s) {unknown}; known: {sorted(METHODS)}")
        if "cam" in methods and loaded.cam_weight is None:
            raise CamexpError(f"method 'cam' is not defined for {loaded.name} at layer {loaded.layer_name!r}: "
                              f"{loaded.cam_unavailable}. Use gradient methods (gradcam, gradcam++, ...) instead.")
        if score not in ("logit", "softmax"):
            raise CamexpError(f"score must be 'logit' or 'softmax', not {score!r}")
        self.loaded = loaded
        self.methods = list(methods)
        self.score = score
        self.needs_grad = any(METHODS[m].needs_grad for m in methods)

    def activations(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, MethodInputs]:
        """Forward (and, if any method needs it, backward) pass: logits and the method inputs.

        `targets` None means the top-1 prediction of each image.
        """
        model = self.loaded.model
        with leaf_activation(self.loaded.layer) as store, torch.enable_grad():
            logits = model(x)
            A = store[-1]
            t = logits.argmax(1) if targets is None else targets.to(logits.device)
            G = None
            if self.needs_grad:
                scores = logits if self.score == "logit" else logits.float().softmax(1)
                (G,) = torch.autograd.grad(scores.gather(1, t[:, None]).sum(), A)
        return logits.detach(), MethodInputs(A=A.detach().float(), G=None if G is None else G.float(), targets=t,
                                             cam_weight=self.loaded.cam_weight)

    def explain(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> Explanation:
        """Maps of every method for images `x` (B,3,H,W in [0,1]); see `activations` for `targets`."""
        logits, inputs = self.activations(x, targets)
        maps, constant, finite = {}, {}, {}
        for name in self.methods:
            raw = METHODS[name].fn(inputs)
            maps[name], constant[name] = upsample_normalize(raw, tuple(x.shape[-2:]))
            finite[name] = torch.isfinite(raw).all(dim=(1, 2))
        return Explanation(logits, inputs.targets, maps, constant, finite, inputs)
