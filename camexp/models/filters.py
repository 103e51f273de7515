"""Subsets that need the model: the confident-images subset of the relative-performance metric."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from camexp.data.base import ImageDataset, collate
from camexp.errors import CamexpError
from camexp.models import LoadedModel


def filter_min_true_prob(dataset: ImageDataset, loaded_model: LoadedModel, threshold: float,
                         device: torch.device | str, batch_size: int) -> list[int]:
    """Indices of the images whose true class gets a post-softmax probability above `threshold` on the
    full image (equivalence paper: 4219 of 10,000 ImageNetV2 images). Unlabelled or unreadable images
    never pass."""
    if not any(it.label >= 0 for it in dataset.items):
        raise CamexpError("relperf_min_true_prob needs true labels, and this data set has none (single-label "
                          "kinds: imagenet_val, imagenetv2, folder with labels)")
    model = loaded_model.model
    keep: list[int] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    with torch.no_grad():
        for batch in loader:
            labels = batch["label"].to(device)
            probs = model(batch["image"].to(device)).softmax(dim=1)
            true_prob = probs.gather(1, labels.clamp(min=0).unsqueeze(1)).squeeze(1)
            ok = (labels >= 0) & (true_prob > threshold) & ~batch["bad"].to(device)
            keep += batch["index"][ok.cpu()].tolist()
    return keep
