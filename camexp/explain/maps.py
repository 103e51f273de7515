"""Map post-processing shared by every method: bilinear upsampling and per-image min-max normalisation (`normalize`
for maps; `normalize_exact`, without a tolerance and in the maps' own dtype, where a peer's rule or float64
matters)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# A map whose range is below this fraction of its magnitude is float noise around a constant.
CONSTANT_RTOL = 1e-6


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B,h,w) maps -> (B,H,W) float32 by bilinear interpolation (half-pixel centres), values as they are."""
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def upsample_normalize(maps: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,h,w) maps -> (B,H,W) in [0,1], and a (B,) bool flag for constant maps (returned as zeros).

    Upsampling first and normalising after is the order of docs/definitions.md, D2; since bilinear upsampling is
    affine equivariant, a normalise-resize-normalise pipeline (pytorch-grad-cam's output re-normalised) agrees.
    Non-finite input values propagate so that the caller can refuse them.
    """
    return normalize(upsample(maps, size))


def normalize(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,h,w) maps -> per-map min-max normalised float32 maps in [0,1], and a (B,) bool flag for constant maps
    (returned as zeros). At the layer's resolution this is what a run keeps with `output.maps`: upsampling it
    and normalising again gives the run's map (bilinear upsampling is affine equivariant)."""
    maps = maps.float()
    lo = maps.amin((1, 2), keepdim=True)
    hi = maps.amax((1, 2), keepdim=True)
    span = hi - lo
    scale = torch.maximum(hi.abs(), lo.abs())
    constant = (span <= CONSTANT_RTOL * scale) | (span == 0)
    out = (maps - lo).div_(torch.where(constant, torch.inf, span))  # a constant map: (maps - lo) / inf = 0
    return out, constant.view(-1)


def normalize_exact(maps: torch.Tensor) -> torch.Tensor:
    """(B,h,w) maps -> per-map min-max normalised maps in [0,1] in their own dtype; only an exactly constant map
    (or one holding a NaN) becomes zeros. Score-CAM's masks (Wang et al.'s code: no tolerance) and the consistency
    report's float64 alignment use it: `normalize`'s float32 and relative tolerance would change their numbers."""
    lo = maps.amin((1, 2), keepdim=True)
    hi = maps.amax((1, 2), keepdim=True)
    live = hi > lo
    return torch.where(live, (maps - lo) / torch.where(live, hi - lo, 1.0), 0.0)
