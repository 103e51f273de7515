"""How alike two explanation maps are: the measures of Adebayo et al.'s sanity checks (docs/guide/trustworthiness.md,
"Sanity checks").

Maps are the run's normalised (B,H,W) maps in [0,1] at the input's resolution. `spearman`: Spearman's rank
correlation of the pixels (ties share their mean rank); `spearman_abs`: the same of the absolute values of the
raw maps upsampled to the input (it differs from `spearman` only for a method whose raw map has negative
values, e.g. CAM); `ssim`: scikit-image's structural similarity of the 2-D maps (7 x 7 uniform window, data
range 1: the range of a normalised map); `hog`: Pearson's correlation of the two maps' histograms of oriented
gradients (scikit-image's `hog` with its default cells). A correlation with a constant map is undefined: NaN.
Efficient MPRT measures one map alone: `discrete_entropy`, the entropy of its histogram.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import stats
from skimage.feature import hog
from skimage.metrics import structural_similarity

from camexp.explain.maps import upsample
from camexp.stats import similarity as ranked

MEASURES = ("spearman", "spearman_abs", "ssim", "hog")
LABELS = {
    "spearman": "Spearman rank correlation",
    "spearman_abs": "Spearman rank correlation (absolute values)",
    "ssim": "SSIM",
    "hog": "HOG similarity (Pearson)",
}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of the values of two arrays of one shape; NaN when either is constant
    (camexp/stats/similarity.py: the one shared with the consistency across backbones)."""
    return ranked.spearman(ranked.rank(a), ranked.rank(b))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two 2-D maps in [0,1] (scikit-image defaults, data range 1)."""
    return float(structural_similarity(a, b, data_range=1.0))


def hog_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the HOG features of two 2-D maps; NaN when either map has no gradient."""
    ha, hb = hog(a), hog(b)
    return float("nan") if np.ptp(ha) == 0 or np.ptp(hb) == 0 else float(stats.pearsonr(ha, hb)[0])


PAIRWISE: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "spearman": spearman,
    "ssim": ssim,
    "hog": hog_similarity,
}


def similarities(
    maps: torch.Tensor,
    other: torch.Tensor,
    measures: tuple[str, ...] = MEASURES,
    raw: torch.Tensor | None = None,
    raw_other: torch.Tensor | None = None,
) -> dict[str, list[float]]:
    """Each of `measures` for each image of two (B,H,W) sets of normalised maps; `raw`, `raw_other`: the
    methods' raw (B,h,w) maps, which `spearman_abs` needs."""
    a, b = maps.double().cpu().numpy(), other.double().cpu().numpy()
    out = {m: [PAIRWISE[m](x, y) for x, y in zip(a, b)] for m in measures if m in PAIRWISE}
    if "spearman_abs" in measures:
        assert raw is not None and raw_other is not None, "spearman_abs compares the raw maps"
        size = (maps.shape[-2], maps.shape[-1])
        ua, ub = (upsample(r, size).abs().double().cpu().numpy() for r in (raw, raw_other))
        out["spearman_abs"] = [spearman(x, y) for x, y in zip(ua, ub)]
    return out


def discrete_entropy(maps: torch.Tensor, bins: int) -> list[float]:
    """The entropy (natural log) of each (H,W) map's histogram of `bins` equal-width bins between its own minimum
    and maximum (numpy's `histogram`), the complexity of Hedström et al.'s efficient MPRT (Quantus'
    `discrete_entropy`); a constant map has all its pixels in one bin: 0."""
    return [float(stats.entropy(np.histogram(a, bins=bins)[0])) for a in maps.double().cpu().numpy()]
