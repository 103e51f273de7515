"""COCO's segmentations decoded to pixel masks, as pycocotools decodes them (polygons and run-length counts).

Its own module below `base` (which decodes an item's segments when it loads the image) and `coco` (which lists
them), so that neither imports the other's layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from camexp.errors import CamexpError

POLY_SCALE = 5  # COCO's polygon rasteriser traces the outline on a 5x finer grid


def segment_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """(height, width) bool mask of one COCO segmentation, as pycocotools' annToMask decodes it: a list of
    polygons (their union), or run-length counts (a list, or COCO's compressed string) in column-major order
    starting with a run of zeros."""
    if isinstance(segmentation, list):
        mask = np.zeros((height, width), dtype=bool)
        for poly in segmentation:
            mask |= polygon_mask(poly, height, width)
        return mask
    counts = segmentation["counts"]
    runs = rle_string_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    values = np.arange(len(runs)) % 2 == 1
    flat = np.repeat(values, runs)
    if len(flat) != height * width:
        raise CamexpError(f"a COCO RLE of {len(flat)} pixels does not fit its {width}x{height} image")
    return flat.reshape(width, height).T.copy()


def rle_string_counts(text: str) -> list[int]:
    """COCO's compressed RLE string: 6-bit characters from '0' (5 bits of value, bit 0x20: more follow, the
    last one's bit 0x10: negative), each count after the second stored as a difference from the one two back."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            c = ord(text[pos]) - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        counts.append(value + (counts[-2] if len(counts) > 2 else 0))
    return counts


def polygon_mask(poly: list[float], height: int, width: int) -> np.ndarray:
    """COCO's polygon rasterisation (maskApi rleFrPoly): the outline, with vertices rounded on a grid
    POLY_SCALE times finer, is traced densely; where it crosses a pixel column's centre line, the column's state
    flips at the first pixel row whose centre lies below the crossing. The flips, in column-major order, are
    the run boundaries of the mask."""
    xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    x = np.trunc(POLY_SCALE * xy[:, 0] + 0.5).astype(np.int64)  # C's (int) cast truncates
    y = np.trunc(POLY_SCALE * xy[:, 1] + 0.5).astype(np.int64)
    x, y = np.append(x, x[0]), np.append(y, y[0])
    us: list[np.ndarray] = []
    vs: list[np.ndarray] = []
    for xs, xe, ys, ye in zip(x[:-1], x[1:], y[:-1], y[1:]):
        dx, dy = abs(xe - xs), abs(ye - ys)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        steps = np.arange(max(dx, dy) + 1)
        t = max(dx, dy) - steps if flip else steps
        if dx >= dy:
            slope = (ye - ys) / dx if dx else 0.0
            us.append(t + xs)
            vs.append(np.trunc(ys + slope * t + 0.5).astype(np.int64))
        else:
            slope = (xe - xs) / dy
            vs.append(t + ys)
            us.append(np.trunc(xs + slope * t + 0.5).astype(np.int64))
    u, v = np.concatenate(us), np.concatenate(vs)
    moved = np.nonzero(u[1:] != u[:-1])[0] + 1
    col = np.where(u[moved] < u[moved - 1], u[moved], u[moved] - 1)
    xd = (col + 0.5) / POLY_SCALE - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= width - 1)
    yd = (np.minimum(v[moved], v[moved - 1]) + 0.5) / POLY_SCALE - 0.5
    rows = np.ceil(np.clip(yd, 0, height))[keep].astype(np.int64)
    flips = np.sort(np.append(xd[keep].astype(np.int64) * height + rows, height * width))
    toggles = np.zeros(height * width + 1, dtype=np.int64)
    np.add.at(toggles, flips, 1)
    return (np.cumsum(toggles)[:-1] % 2 == 1).reshape(width, height).T.copy()
