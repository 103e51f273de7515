"""Consistency across backbones from runs held in memory: which (image, backbone pair)s count, their maps'
similarity per method, and the per-method means with bootstrap intervals and paired differences.

A pair of runs counts on an image when both backbones predict the same class, both maps explain that
class, and (when the image has a label) it is the true class: a correct prediction should highlight the
same region whichever network made it. On an image without a label the filter is agreement only: two
backbones that agree on a wrong class count too, and the counts and the report say so.

The summary of a method is the mean over all counted (image, pair)s; its interval resamples images (each
image's pairs stay together: its value is the mean over its pairs, weighted by their number), with camexp's
one bootstrap (camexp/stats/bootstrap.py), which also gives the paired difference between methods on the same
images.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
import torch

from camexp.config import StatsConfig
from camexp.consistency.similarity import FieldOfView, align, common_view
from camexp.errors import CamexpError
from camexp.metrics import Row
from camexp.stats.bootstrap import interval_tables
from camexp.stats.similarity import Ranked, rank, spearman, top_iou

SPEARMAN = Row("spearman", "Spearman ρ", lower_is_better=False)
TOP_IOU = Row("top_iou", "top-q IoU", lower_is_better=False)
MEASURES = (SPEARMAN, TOP_IOU)
PAIR_COLUMNS = ["image_id", "run_a", "run_b", "method", "class", SPEARMAN.key, TOP_IOU.key]


@dataclass
class RunMaps:
    """One run as the comparison needs it: its name, the field of view and input size (H, W) of its
    backbone's preprocessing, per image its prediction and label (frame indexed by image_id with columns
    pred, label; label −1: none), and its maps (image_id, method, target, map: float array (h, w))."""

    name: str
    view: FieldOfView
    size: tuple[int, int]
    classes: pd.DataFrame
    maps: pd.DataFrame


NO_LABELS = "no labels: pairs are filtered by agreement only, not correctness"


@dataclass
class PairCounts:
    """How many (image, run pair)s the filter saw, why it dropped the others, and how many it saw (and
    counted) on images without a label, where it could check agreement only."""

    pairs: int = 0
    different_prediction: int = 0
    wrong: int = 0
    counted: int = 0
    unlabelled: int = 0
    counted_unlabelled: int = 0

    def caveat(self) -> str | None:
        """What the filter could not check: None when every image has a label."""
        if not self.unlabelled:
            return None
        if self.unlabelled == self.pairs:
            return NO_LABELS
        return (
            f"{self.unlabelled} of the {self.pairs} (image, backbone pair)s are of images without a label: their "
            f"{self.counted_unlabelled} counted pairs are filtered by agreement only, not correctness"
        )

    def describe(self) -> str:
        head = f"{self.counted} of {self.pairs} (image, backbone pair)s counted: {self.different_prediction} "
        if self.unlabelled == self.pairs:  # nothing to check correctness against
            return f"{NO_LABELS}; {head}predicted different classes, the others agreed on a class"
        return f"{head}predicted different classes, {self.wrong} agreed on a class other than the label" + (
            f"; {caveat}" if (caveat := self.caveat()) else ""
        )


def counted_pairs(runs: list[RunMaps], images: list[str]) -> tuple[pd.DataFrame, PairCounts]:
    """The (image_id, a, b, cls) where runs a < b (positions in `runs`) predict the same class and, for a
    labelled image, the true one (for an image without a label: any class); and the counts of the filter."""
    counts, rows = PairCounts(), []
    for a, b in combinations(range(len(runs)), 2):
        ca, cb = (runs[i].classes.loc[images] for i in (a, b))
        same = ca["pred"].to_numpy() == cb["pred"].to_numpy()
        label = ca["label"].to_numpy()
        unlabelled = label < 0
        right = unlabelled | (ca["pred"].to_numpy() == label)
        counts.pairs += len(images)
        counts.unlabelled += int(unlabelled.sum())
        counts.counted_unlabelled += int((same & unlabelled).sum())
        counts.different_prediction += int((~same).sum())
        counts.wrong += int((same & ~right).sum())
        keep = same & right
        counts.counted += int(keep.sum())
        rows.append(
            pd.DataFrame({"image_id": np.asarray(images)[keep], "a": a, "b": b, "cls": ca["pred"].to_numpy()[keep]})
        )
    return pd.concat(rows, ignore_index=True), counts


def similarities(runs: list[RunMaps], methods: list[str], q: float) -> tuple[pd.DataFrame, PairCounts]:
    """Per counted (image, run pair) and method: Spearman ρ and top-q IoU of the two aligned maps
    (PAIR_COLUMNS), over the images every run recorded; and the filter's counts. A map must explain the
    class its run predicted (with `target: true` a wrongly predicted image is dropped by the filter anyway)."""
    keeps = common_view([r.view for r in runs])
    if keeps is None:
        views = "; ".join(f"{r.name}: {r.view.describe()}" for r in runs)
        raise CamexpError(
            f"the runs' preprocessing keeps differently shaped parts of each image ({views}); compare runs whose "
            "models crop alike (model crop_mode, square or not)"
        )
    images = sorted(set.intersection(*(set(r.classes.index) for r in runs)))
    if not images:
        raise CamexpError(f"runs {[r.name for r in runs]} share no image: compare runs over the same images")
    pairs, counts = counted_pairs(runs, images)
    size = (max(r.size[0] for r in runs), max(r.size[1] for r in runs))
    if not counts.counted:
        agree = "on a class" if counts.unlabelled == counts.pairs else "on the true class"
        raise CamexpError(f"{counts.describe()}: no image where the backbones agree {agree} to compare")
    found = [
        {(m.image_id, m.method): (int(m.target), m.map) for m in r.maps.itertuples() if m.method in methods}
        for r in runs
    ]
    out = []
    for (image_id, method), rows in pairs.merge(pd.Series(methods, name="method"), how="cross").groupby(
        ["image_id", "method"], sort=False
    ):
        ranked: dict[int, tuple[int, Ranked]] = {}  # one image's aligned maps at a time: memory stays small
        for i in {*rows["a"], *rows["b"]}:
            target, cam = found[i][(image_id, method)]
            ranked[i] = target, rank(align(torch.as_tensor(cam), keeps[i], size).numpy())
        for p in rows.itertuples():
            (ta, ma), (tb, mb) = ranked[p.a], ranked[p.b]
            if ta == tb == p.cls:
                out.append(
                    [image_id, runs[p.a].name, runs[p.b].name, method, p.cls, spearman(ma, mb), top_iou(ma, mb, q)]
                )
    return pd.DataFrame(out, columns=PAIR_COLUMNS), counts


def per_image(pairs: pd.DataFrame, methods: list[str], measure: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Images × methods: the mean of `measure` over each image's counted pairs where it is defined, and how
    many pairs that mean averages (its weight)."""
    grouped = pairs.dropna(subset=[measure]).groupby(["image_id", "method"])[measure]
    mean = grouped.mean().unstack("method").reindex(columns=methods)
    count = grouped.count().unstack("method").reindex(index=mean.index, columns=methods).fillna(0.0)
    return mean, count


def summary(pairs: pd.DataFrame, methods: list[str], stats: StatsConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per measure and method: the mean over counted pairs with its bootstrap interval over images
    (metric, method, value, lo, hi, n: images) and the paired difference of every two methods (metric,
    method_a, method_b, value, lo, hi, n)."""
    wides, weights = {}, {}
    for row in MEASURES:
        wides[row.key], weights[row.key] = per_image(pairs, methods, row.key)
    return interval_tables(wides, stats.bootstrap, stats.level, stats.seed, weights=weights)
