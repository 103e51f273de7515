"""How alike two explanation maps of one image are, when two backbones explain it (pure functions).

The maps come at each backbone's explained-layer resolution and cover the part of the image that the
backbone's preprocessing kept (its field of view). `align` brings a map onto the common field of view of
the compared backbones at one common size by bilinear interpolation, and min-max normalises it to [0, 1];
`spearman` and `top_iou` compare two aligned maps. Both are invariant to any increasing transform of either
map, so the normalisation only fixes the scale the figures show.

Definitions (README.md, "Consistency across backbones"):
- Spearman: the Pearson correlation of the pixels' ranks, tied values sharing their average rank (scipy's
  `spearmanr`); undefined (NaN) when a map is constant.
- Top-q region of a map with P pixels: with k = ceil(q·P), pixel p is in it when at most k pixels have a
  value ≥ its value. So the region never splits a group of tied values: it holds at most k pixels, the
  plateau at the threshold (a ReLU'd map's zeros) stays out, and a constant map's region is empty.
- Top-q IoU: |R_a ∩ R_b| / |R_a ∪ R_b| of the two regions; undefined (NaN) when both are empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from camexp.data.transforms import InputSpec


@dataclass(frozen=True)
class FieldOfView:
    """The centred part of the original image that a preprocessing keeps.

    `short_side`: True when the kept part is a square whose side is `fraction[0]` of the image's shorter
    side (timm's `center` crop of a square input: resize the shorter side, then crop); False when it is
    `fraction` (height, width) of the image's height and width (`squash`, or a non-square input)."""

    short_side: bool
    fraction: tuple[float, float]

    @classmethod
    def of_input(cls, spec: InputSpec) -> FieldOfView:
        """What a backbone's preprocessing keeps (camexp/data/transforms.py: PixelTransform's resize and crop)."""
        h, w = spec.size
        fraction = (h / math.floor(h / spec.crop_pct), w / math.floor(w / spec.crop_pct))
        return cls(spec.crop_mode == "center" and h == w, fraction)

    def describe(self) -> str:
        fy, fx = self.fraction
        if self.short_side:
            return f"a centred square of {fy:.4f} of the shorter side"
        return f"the centred {fy:.4f} of the height and {fx:.4f} of the width"


def common_view(views: Sequence[FieldOfView]) -> list[tuple[float, float]] | None:
    """Per view, the centred fraction (height, width) of its map that covers the part of the image every
    view keeps; None when the views keep parts of different shapes (a square of the shorter side and a
    fraction of each side), whose overlap depends on each image's aspect ratio."""
    if len({v.short_side for v in views}) > 1:
        return None
    fy = min(v.fraction[0] for v in views)
    fx = min(v.fraction[1] for v in views)
    return [(fy / v.fraction[0], fx / v.fraction[1]) for v in views]


def align(cam: torch.Tensor, keep: tuple[float, float], size: tuple[int, int]) -> torch.Tensor:
    """The centred `keep` (height, width) fraction of map `cam` (h, w), bilinearly resampled to `size`
    (pixel centres, border values beyond the edge: F.interpolate's bilinear upsampling when keep is
    (1, 1)), min-max normalised to [0, 1] (a constant map: zeros), float64."""
    x = cam.to(torch.float64)[None, None]
    theta = torch.tensor([[[keep[1], 0.0, 0.0], [0.0, keep[0], 0.0]]], dtype=torch.float64)
    grid = F.affine_grid(theta, [1, 1, *size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0]
    lo, hi = out.min(), out.max()
    return (out - lo) / (hi - lo) if hi > lo else torch.zeros_like(out)


@dataclass(frozen=True)
class Ranked:
    """An aligned map's pixels ready for comparison: average ranks (1..P, ties sharing their mean rank;
    None for a constant map) and the top-q region (bool, P)."""

    ranks: np.ndarray | None
    region: np.ndarray


def rank(values: np.ndarray, q: float) -> Ranked:
    """Average ranks and the top-q region (module docstring) of a map's values (any shape, flattened)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    uniq, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    below = np.cumsum(counts) - counts  # pixels strictly below each distinct value
    at_least = x.size - below[inverse]  # per pixel: how many pixels have a value >= its value
    region = at_least <= math.ceil(q * x.size)
    ranks = None if len(uniq) == 1 else (below + (counts + 1) / 2.0)[inverse]
    return Ranked(ranks, region)


def spearman(a: Ranked, b: Ranked) -> float:
    """Spearman's rank correlation of two ranked maps of equal size; NaN when either is constant."""
    if a.ranks is None or b.ranks is None:
        return float("nan")
    ra, rb = a.ranks - a.ranks.mean(), b.ranks - b.ranks.mean()
    return float((ra @ rb) / math.sqrt((ra @ ra) * (rb @ rb)))


def top_iou(a: Ranked, b: Ranked) -> float:
    """IoU of the two maps' top-q regions; NaN when both are empty."""
    union = int(np.count_nonzero(a.region | b.region))
    return float(np.count_nonzero(a.region & b.region) / union) if union else float("nan")
