"""Small maps and images kept as text in a CSV (the mprt figure's rows), so that `camexp plot` redraws the
figure from the run folder alone: float16 at THUMB pixels on the shorter side, base64-encoded."""

from __future__ import annotations

import base64

import numpy as np
import torch
import torch.nn.functional as F

THUMB = 80  # the shorter side of a kept map (pixels)


def thumbnails(maps: torch.Tensor) -> list[tuple[str, str]]:
    """(N,C,H,W) or (N,H,W) images as ('CxHxW', base64 of float16) at THUMB pixels on the shorter side."""
    x = maps if maps.dim() == 4 else maps[:, None]
    h, w = x.shape[-2:]
    size = (THUMB, max(1, round(w * THUMB / h))) if h <= w else (max(1, round(h * THUMB / w)), THUMB)
    small = F.interpolate(x.float(), size=size, mode="area").cpu().numpy().astype("<f2")
    return [("x".join(map(str, t.shape)), base64.b64encode(t.tobytes()).decode()) for t in small]


def from_thumbnail(shape: str, data: str) -> np.ndarray:
    """The array `thumbnails` encoded."""
    dims = tuple(int(d) for d in shape.split("x"))
    return np.frombuffer(base64.b64decode(data), dtype="<f2").reshape(dims).astype(np.float32)
