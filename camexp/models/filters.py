"""Subsets that need the model: the confident-images subset of the relative-performance metric."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from camexp.data.base import ImageDataset, collate
from camexp.errors import CamexpError

NEEDS_LABELS = (
    "dataset.min_true_prob needs a single true label per image (single-label kinds: imagenet_val, "
    "imagenetv2, folder with labels)"
)


def filter_min_true_prob(
    dataset: ImageDataset,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    threshold: float,
    device: torch.device | str,
    batch_size: int,
) -> list[int]:
    """Indices of the images whose true class gets a confidence above `threshold` on the full image.

    `score(images, classes)` is the run's confidence of `classes` on pixel-space `images` (the run's Scorer:
    softmax, or sigmoid for multi-label heads, as the records' p_true), so the filter and the records agree
    (equivalence paper, softmax: 4219 of 10,000 ImageNetV2 images). Unlabelled or unreadable images never pass.
    """
    if not any(it.label >= 0 for it in dataset.items):
        raise CamexpError(f"{NEEDS_LABELS}, and this data set has none")
    keep: list[int] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    for batch in loader:
        labels = batch["label"].to(device)
        true_prob = score(batch["image"].to(device), labels.clamp(min=0))
        ok = (labels >= 0) & (true_prob > threshold) & ~batch["bad"].to(device)
        keep += batch["index"][ok.cpu()].tolist()
    return keep
