"""Which images a study shows: the model's per-class F1 on the labelled data set, and the selection rules.

The paper took the 5 ILSVRC2012 val classes on which VGG-16 has the highest F1 score (all above 0.94) and
all 50 val images of each. F1 of class c: 2·TP / (2·TP + FP + FN) over the data set's top-1 predictions
(the harmonic mean of precision TP/(TP+FP) and recall TP/(TP+FN)); a class without images has no F1.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from camexp.data import ImageDataset, collate
from camexp.errors import CamexpError
from camexp.models import LoadedModel
from camexp.study.config import SelectionConfig

F1_CSV = "f1_per_class.csv"


def predict(
    loaded: LoadedModel,
    dataset: ImageDataset,
    indices: list[int],
    device: torch.device,
    batch_size: int,
    progress: bool = True,
) -> np.ndarray:
    """Top-1 predictions of the images `indices` of the data set (-1 for an unreadable image skipped)."""
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, collate_fn=collate)
    out = []
    with torch.inference_mode(), tqdm(total=len(indices), unit="img", desc="predict", disable=not progress) as bar:
        for batch in loader:
            pred = loaded.model(batch["image"].to(device)).argmax(1).cpu()
            out.append(torch.where(batch["bad"].bool(), -1, pred))
            bar.update(len(pred))
    return torch.cat(out).numpy() if out else np.empty(0, dtype=np.int64)


def f1_table(labels: np.ndarray, preds: np.ndarray, class_names: list[str] | None) -> pd.DataFrame:
    """Per class with images (support > 0) over the labelled images (label -1: none): support, TP, FP, FN,
    precision, recall and F1, sorted best first
    (F1 descending, then support descending, then class index): the order `top_f1_classes` takes."""
    labelled = np.asarray(labels) >= 0  # an image without a label is no one's true or false positive
    labels, preds = np.asarray(labels)[labelled], np.asarray(preds)[labelled]
    classes = np.unique(labels)
    tp = np.array([np.sum((labels == c) & (preds == c)) for c in classes])
    fp = np.array([np.sum((labels != c) & (preds == c)) for c in classes])
    fn = np.array([np.sum((labels == c) & (preds != c)) for c in classes])
    with np.errstate(invalid="ignore", divide="ignore"):
        frame = pd.DataFrame(
            {
                "class": classes,
                "name": [class_names[c] if class_names else f"class {c}" for c in classes],
                "support": tp + fn,
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "precision": np.where(tp + fp > 0, tp / (tp + fp), 0.0),
                "recall": tp / (tp + fn),
                "f1": 2 * tp / (2 * tp + fp + fn),
            }
        )
    return frame.sort_values(["f1", "support", "class"], ascending=[False, False, True]).reset_index(drop=True)


def top_f1_indices(labels: np.ndarray, f1: pd.DataFrame, k: int, per_class: int | None) -> list[int]:
    """Data set indices of the images of the `k` best classes of `f1`, in data set order within a class
    (at most `per_class` each), classes best first."""
    if len(f1) < k:
        raise CamexpError(
            f"study.select.top_f1_classes: {k} classes asked, but the data set has images of only {len(f1)} classes"
        )
    out: list[int] = []
    for c in f1["class"][:k]:
        out += np.flatnonzero(np.asarray(labels) == c)[:per_class].tolist()
    return out


def chosen_indices(sel: SelectionConfig, image_ids: list[str]) -> list[int]:
    """`random: N` (seeded, ascending) or `image_ids` (in the order given) as data set indices."""
    if sel.random is not None:
        return sorted(random.Random(sel.seed).sample(range(len(image_ids)), min(sel.random, len(image_ids))))
    where = {i: n for n, i in enumerate(image_ids)}
    assert sel.image_ids is not None
    unknown = [i for i in sel.image_ids if i not in where]
    if unknown:
        raise CamexpError(f"study.select.image_ids: {len(unknown)} id(s) not in the data set, e.g. {unknown[0]!r}")
    if len(set(sel.image_ids)) != len(sel.image_ids):
        raise CamexpError("study.select.image_ids: an image is listed twice")
    return [where[i] for i in sel.image_ids]
