"""How many images and raters a human-trust study needs to tell its two methods apart: a simulation.

Model: image i has its own vote probabilities p_i ~ Dirichlet(concentration · shares) over {A, B, same}
(images differ in how clear the better map is; `shares` are the mean shares, by default the paper's §4.2
totals over 250 images: Grad-CAM 56.08, Grad-CAM++ 109.69, same 84.23), and each rater's vote on image i is
one draw from p_i. The smaller `concentration`, the more raters agree on an image (two raters' votes on one
image agree beyond chance with correlation 1 / (concentration + 1)). Each simulated study is tallied as a
real one is (camexp/study/tally.py): the two-level bootstrap over raters and images of the mean per-image
scores, and its percentile interval of A − B. Power: the share of simulated studies whose interval
excludes zero.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from camexp.stats.bootstrap import percentile_interval
from camexp.study.tally import PAPER, PAPER_IMAGES, two_level_means

PAPER_SHARES = (PAPER["gradcam"] / PAPER_IMAGES, PAPER["gradcam++"] / PAPER_IMAGES, PAPER["same"] / PAPER_IMAGES)


def simulate_votes(
    rng: np.random.Generator, images: int, raters: int, shares: tuple[float, float, float], concentration: float
) -> np.ndarray:
    """(raters × images) votes coded A = 0, B = 1, same = 2 under the model above."""
    p = rng.dirichlet(concentration * np.asarray(shares), size=images)  # images × 3
    u = rng.random((raters, images, 1))
    return (u > np.cumsum(p, axis=1)[None, :, :2]).sum(2).astype(np.float64)


def power(
    images: int,
    raters: int,
    *,
    shares: tuple[float, float, float] = PAPER_SHARES,
    concentration: float = 2.0,
    studies: int = 200,
    n_boot: int = 400,
    level: float = 0.95,
    seed: int = 0,
) -> float:
    """The share of `studies` simulated studies whose two-level `level` interval of A − B excludes zero."""
    rng = np.random.default_rng(seed)
    hits = 0
    for s in range(studies):
        votes = simulate_votes(rng, images, raters, shares, concentration)
        boot = two_level_means(votes, n_boot, seed + s)
        lo, hi = percentile_interval(boot[:, :1] - boot[:, 1:2], level)
        hits += bool(lo[0] > 0 or hi[0] < 0)
    return hits / studies


def power_table(
    images: list[int], raters: list[int], concentration: float, studies: int, n_boot: int, seed: int
) -> pd.DataFrame:
    """Power at the paper's shares for every (images, raters) pair: rows images, columns raters."""
    return pd.DataFrame(
        [
            [power(n, r, concentration=concentration, studies=studies, n_boot=n_boot, seed=seed) for r in raters]
            for n in images
        ],
        index=pd.Index(images, name="images"),
        columns=pd.Index(raters, name="raters"),
    )
