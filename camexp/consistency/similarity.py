"""Where two backbones' maps of one image meet (pure functions).

The maps come at each backbone's explained-layer resolution and cover the part of the image that the
backbone's preprocessing kept (its field of view). `align` brings a map onto the common field of view of
the compared backbones at one common size by bilinear interpolation, and min-max normalises it to [0, 1];
camexp/stats/similarity.py then compares two aligned maps by Spearman ρ and top-q IoU (docs/guide/consistency.md,
"Consistency across backbones"). Both are invariant to any increasing transform of either map, so the
normalisation only fixes the scale the figures show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from camexp.data.transforms import InputSpec
from camexp.explain.maps import normalize_exact


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
    return normalize_exact(out[None])[0]
