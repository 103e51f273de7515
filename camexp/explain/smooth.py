"""SmoothGrad (Smilkov et al., 2017) and VarGrad (Adebayo et al., 2018) around any registered method: a method's
`smooth: {n, sigma, kind, seed}` setting (camexp/config.py: SmoothSpec).

The method runs on n noisy copies of each image (`noisy_copies`: x + N(0, (sigma * (max x - min x))^2), drawn per
image id, as Smooth Grad-CAM++'s) and the map is the mean (SmoothGrad) or the population variance (VarGrad) over the
copies. A pixel-level method (`Method.pixel`) is smoothed before its channel reduction, as the papers and Captum's
NoiseTunnel do, and its copies run stacked, several copies of the batch per call, so its forwards fill the scorer's
chunks. Any other method (a CAM) runs on each copy's own shared pass (`MethodInputs.at`) and its maps at the layer's
resolution are smoothed. Smooth Grad-CAM++ (`smoothgradcam++`) stays its own method: it averages weights, not maps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from camexp.config import SmoothSpec
from camexp.explain.attributions import NO_REDUCTION, pixel_rows, reduce_channels, smooth_saliency
from camexp.explain.methods import Method, MethodInputs
from camexp.explain.model_methods import block_size, noisy_copies


class Moments:
    """Running mean and population variance of equally shaped tensors, shifted by the first one (so that the
    variance of values far from 0 keeps its digits)."""

    def __init__(self) -> None:
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.total_sq: torch.Tensor | None = None

    def add(self, a: torch.Tensor) -> None:
        if self.shift is None:
            self.shift, self.total, self.total_sq = a.clone(), torch.zeros_like(a), torch.zeros_like(a)
        assert self.total is not None and self.total_sq is not None
        d = a - self.shift
        self.total += d
        self.total_sq += d * d
        self.n += 1

    def result(self, kind: str) -> torch.Tensor:
        assert self.shift is not None and self.total is not None and self.total_sq is not None
        mean_d = self.total / self.n
        return self.shift + mean_d if kind == "mean" else self.total_sq / self.n - mean_d * mean_d


def smoothed(method: Method, params: Mapping[str, Any], spec: SmoothSpec, ctx: MethodInputs) -> torch.Tensor:
    """The (B,h,w) SmoothGrad / VarGrad map of `method` with `params` (its defaults filled in by the caller)."""
    assert ctx.x is not None
    b = len(ctx.x)
    copies = noisy_copies(ctx, spec.n, spec.sigma, spec.seed)
    moments = Moments()
    if method.pixel:
        per_block = block_size(ctx.x[0].numel() * b, None)
        for stacked in pixel_rows(ctx, copies, per_block):
            attr = method.fn(stacked, **{**params, "reduce": NO_REDUCTION})
            for part in attr.split(b):
                moments.add(part)
        reduced = reduce_channels(moments.result(spec.kind), params["reduce"])
        return smooth_saliency(reduced, params.get("smoothing", 0.0))
    assert ctx.at is not None  # the explainer gives every context its `at`
    for x_s in copies:
        copy = ctx.at(x_s)
        moments.add(method(copy, **params))
        shared = {"forwards": b} if copy.G is None else {"forwards": b, "head_backwards": b}
        for key, value in {**shared, **copy.counts}.items():
            ctx.count(key, value)
    return moments.result(spec.kind)
