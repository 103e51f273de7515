"""The reliability measures of per-image metric values, with bootstrap intervals over images (pure numpy).

Input: `x` (N images, K metrics, M methods), oriented so that higher is better (a lower-is-better metric's
values are negated), NaN where a metric has no value for an image and method. Ranks are 1 = best, ties share
their mean rank (scipy.stats.rankdata); a method without any value for a metric is not ranked by it.

- Ranks per metric: the methods ranked by their mean (and by their median) over images.
- Mean rank per criterion: a method's mean rank over the metrics of the criterion. σ̂: the standard
  deviation (ddof 0) of a method's rank across all metrics (LATEC's spread).
- Kendall τ: per image, τ-b between two metrics' rankings of the methods (the methods both metrics rank;
  ties as τ-b counts them, so this is scipy.stats.kendalltau per image), averaged over the images where it is
  defined (neither ranking all tied).
- Krippendorff's α (ordinal) per metric: images are the raters, methods the units, the value an image gives a
  method is its rank there (krippendorff package).

Intervals: percentile bootstrap over images (camexp/stats/bootstrap.py): every statistic is recomputed on the
same resamples (`resample_counts`), α from the resample's value counts (how many drawn images gave each
method each rank), which is α of the resampled images with duplicates.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.stats import rankdata

from camexp.stats.bootstrap import krippendorff_alpha, percentile_interval, resample_counts, resample_means


def orient(x: np.ndarray, lower_is_better: Sequence[bool]) -> np.ndarray:
    """(N, K, M) values with each lower-is-better metric (K) negated: higher is better everywhere."""
    sign = np.where(np.asarray(lower_is_better, dtype=bool), -1.0, 1.0)
    return np.asarray(x, dtype=np.float64) * sign[None, :, None]


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, 1 = highest, ties sharing their mean rank, NaN where the value is NaN."""
    with np.errstate(invalid="ignore"):
        return rankdata(-np.asarray(values, dtype=np.float64), axis=-1, nan_policy="omit")


def criterion_ranks(rank: np.ndarray, criteria: Sequence[str | None]) -> dict[str, np.ndarray]:
    """(..., K, M) ranks -> criterion -> (..., M) mean rank over the criterion's metrics (NaN-aware)."""
    out = {}
    for c in dict.fromkeys(c for c in criteria if c is not None):
        pick = [k for k, ck in enumerate(criteria) if ck == c]
        with _quiet():
            out[c] = np.nanmean(rank[..., pick, :], axis=-2)
    return out


def spread(rank: np.ndarray) -> np.ndarray:
    """(..., K, M) ranks -> (..., M) σ̂: the standard deviation (ddof 0) of each method's rank across metrics."""
    with _quiet():
        return np.nanstd(rank, axis=-2)


def image_taus(x: np.ndarray) -> np.ndarray:
    """(N, K, M) oriented values -> (N, K, K) Kendall τ-b per image between every two metrics' rankings of the
    methods both rank: sum s_a s_b / sqrt(sum s_a^2 sum s_b^2) over the method pairs, s = sign of the pair's
    difference; NaN where a ranking is all tied."""
    pairs = list(combinations(range(x.shape[2]), 2))
    a, b = (np.array([p[i] for p in pairs], dtype=int) for i in (0, 1))
    diff = x[..., a] - x[..., b]  # (N, K, P)
    valid = ~np.isnan(diff)
    s = np.where(valid, np.sign(np.where(valid, diff, 0.0)), 0.0)
    v = valid.astype(np.float64)
    num = np.einsum("nkp,nlp->nkl", s, s)
    den = np.einsum("nkp,nlp->nkl", s * s, v)  # pairs untied in k among those both metrics rank
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / np.sqrt(den * np.swapaxes(den, 1, 2))


def alpha_counts(rank: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, M) one metric's per-image ranks -> (M, V) value counts (weighted by images' `weights` (N,): how
    often a resample drew them) and the ordered rank values V, the form `krippendorff.alpha` reads."""
    domain = np.unique(rank[~np.isnan(rank)])
    onehot = (rank[:, :, None] == domain[None, None, :]).astype(np.float64)  # (N, M, V)
    w = np.ones(len(rank)) if weights is None else weights
    return np.einsum("n,nmv->mv", w, onehot), domain


def ordinal_alpha(rank: np.ndarray) -> float:
    """Krippendorff's α (ordinal) of (N raters, M units) ranks; NaN where undefined."""
    counts, domain = alpha_counts(rank)
    return krippendorff_alpha("ordinal", value_counts=counts, value_domain=domain)


@dataclass
class Estimate:
    """A statistic's value and its percentile bootstrap interval (arrays of one shape)."""

    value: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


@dataclass
class Reliability:
    """Every reliability measure of one table of per-image values (see the module docstring); `n` images."""

    metrics: list[str]
    methods: list[str]
    criteria: list[str | None]
    n: int
    rank_mean: Estimate  # (K, M)
    rank_median: Estimate  # (K, M)
    criterion_mean: dict[str, Estimate]  # criterion -> (M,)
    criterion_median: dict[str, Estimate]
    sigma_mean: Estimate  # (M,)
    sigma_median: Estimate
    tau: Estimate  # (K, K)
    alpha: Estimate  # (K,)
    images: np.ndarray  # (K,) images with a value of the metric
    tau_images: np.ndarray  # (K, K) images where the two metrics' τ is defined


def _estimate(value: np.ndarray, boot: np.ndarray, level: float) -> Estimate:
    """`value` with the percentile interval of `boot` (B, *value.shape)."""
    lo, hi = percentile_interval(boot.reshape(len(boot), value.size), level)
    return Estimate(value, lo.reshape(value.shape), hi.reshape(value.shape))


def _weighted_median(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(N, C) values, (N,) counts -> (C,) NaN-aware median of the rows drawn `counts` times."""
    with _quiet():
        return np.nanmedian(np.repeat(x, counts.astype(int), axis=0), axis=0)


def reliability(
    x: np.ndarray,
    metrics: list[str],
    methods: list[str],
    criteria: Sequence[str | None],
    n_boot: int,
    level: float,
    seed: int,
) -> Reliability:
    """Every measure of `x` (N, K, M, oriented: higher is better) with intervals from `n_boot` resamples."""
    n, k, m = x.shape
    flat = x.reshape(n, k * m)
    criteria = list(criteria)
    with _quiet():
        mean, median = np.nanmean(x, axis=0), np.nanmedian(x, axis=0)
    rank_mean, rank_median = ranks(mean), ranks(median)
    per_image = ranks(x)  # (N, K, M)
    taus = image_taus(x)
    with _quiet():
        tau = np.nanmean(taus, axis=0)
    alpha = np.array([ordinal_alpha(per_image[:, j, :]) for j in range(k)])

    boot_mean = ranks(resample_means(flat, n_boot, seed).reshape(n_boot, k, m))
    boot_tau = resample_means(taus.reshape(n, k * k), n_boot, seed).reshape(n_boot, k, k)
    boot_median = np.full((n_boot, k, m), np.nan)
    boot_alpha = np.full((n_boot, k), np.nan)
    onehots = [alpha_counts(per_image[:, j, :]) for j in range(k)]
    for start, counts in resample_counts(n, n_boot, seed):
        for r, c in enumerate(counts):
            boot_median[start + r] = ranks(_weighted_median(flat, c).reshape(k, m))
            for j in range(k):
                value_counts = alpha_counts(per_image[:, j, :], c)[0]
                boot_alpha[start + r, j] = krippendorff_alpha(
                    "ordinal", value_counts=value_counts, value_domain=onehots[j][1]
                )

    def by_criterion(point: np.ndarray, boot: np.ndarray) -> dict[str, Estimate]:
        p, b = criterion_ranks(point, criteria), criterion_ranks(boot, criteria)
        return {c: _estimate(p[c], b[c], level) for c in p}

    return Reliability(
        metrics,
        methods,
        criteria,
        n,
        _estimate(rank_mean, boot_mean, level),
        _estimate(rank_median, boot_median, level),
        by_criterion(rank_mean, boot_mean),
        by_criterion(rank_median, boot_median),
        _estimate(spread(rank_mean), spread(boot_mean), level),
        _estimate(spread(rank_median), spread(boot_median), level),
        _estimate(tau, boot_tau, level),
        _estimate(alpha, boot_alpha, level),
        (~np.isnan(x)).any(2).sum(0),
        (~np.isnan(taus)).sum(0),
    )


@contextmanager
def _quiet() -> Iterator[None]:
    """NaN-aware reductions of all-NaN slices return NaN without a RuntimeWarning."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
