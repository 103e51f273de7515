"""Localization of docs/definitions.md, D5 (Grad-CAM++ paper eq. 12) as pure tensor functions.

Boxes are xyxy pixel *edges* in the (resized, cropped) image: a box covers the pixels whose centre
(j + 0.5, i + 0.5) lies inside [x0, x1) x [y0, y1), so (0, 0, W, H) covers the whole W x H image.
"""

from __future__ import annotations

import torch


def box_union_mask(boxes: torch.Tensor, owner: torch.Tensor, batch: int, size: tuple[int, int]) -> torch.Tensor:
    """(batch, H, W) bool: per image, the union of the boxes `owner` assigns to it.

    boxes: (N, 4) xyxy pixel edges; owner: (N,) image index of each box (0 <= owner < batch).
    """
    h, w = size
    ys = torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5
    rows = (ys[None] >= boxes[:, 1:2]) & (ys[None] < boxes[:, 3:4])  # (N, H)
    cols = (xs[None] >= boxes[:, 0:1]) & (xs[None] < boxes[:, 2:3])  # (N, W)
    per_box = (rows[:, :, None] & cols[:, None, :]).to(torch.int32)
    union = torch.zeros(batch, h, w, dtype=torch.int32, device=boxes.device)
    return union.index_add_(0, owner.to(boxes.device), per_box) > 0


def localization(maps: torch.Tensor, box: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Loc(δ) = |on ∩ box| / (|box| + |on \\ box|) with on = map > δ: (B, T) in float64.

    maps: (B, H, W) normalised to [0, 1]; box: (B, H, W) bool, non-empty per image; thresholds: (T,).
    A map that is all zeros has no pixel on at any δ >= 0 and scores 0.
    """
    on = maps[:, None] > thresholds.to(maps)[None, :, None, None]  # (B, T, H, W)
    inside = box[:, None]
    hit = (on & inside).sum((2, 3)).double()
    spill = (on & ~inside).sum((2, 3)).double()
    area = box.sum((1, 2)).double()[:, None]
    return hit / (area + spill)


def class_box_masks(
    boxes: list[torch.Tensor | None],
    box_labels: list[torch.Tensor | None],
    classes: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """(B, H, W) bool: per image i, the union of its boxes labelled `classes[i]` (empty when it has none).

    boxes[i]: (n_i, 4) xyxy pixel edges or None; box_labels[i]: (n_i,) class indices or None.
    """
    device = classes.device
    keep, owner = [], []
    for i, (b, lab) in enumerate(zip(boxes, box_labels)):
        if b is None or lab is None:
            continue
        hit = lab.to(device) == classes[i]
        keep.append(b.to(device)[hit])
        owner.append(torch.full((int(hit.sum()),), i, dtype=torch.long, device=device))
    if not keep:
        return torch.zeros(len(classes), *size, dtype=torch.bool, device=device)
    return box_union_mask(torch.cat(keep).float(), torch.cat(owner), len(classes), size)
