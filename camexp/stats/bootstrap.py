"""Uncertainty of per-image means: percentile bootstrap over images, paired differences, the exact sign test.

Every summary number of camexp is a mean over images of a per-image value (avg drop: 100·max(0, Y−O)/Y;
increase: 100·1[O > Y]; win % of A vs B: 50 + 50·sign(O_A − O_B); log R: log O_A − log O_B; ...). So one
engine serves them all: a metric is a wide matrix, images × methods (NaN where a method has no value for an
image), and the bootstrap resamples its rows, the images, so the methods of one image stay together and
every difference between two methods is paired. A value that averages several units of one image (mLoc:
its (image, class) pairs) carries their number as its weight, and its resamples keep the units together.

Resamples are drawn by numpy's `np.random.default_rng(seed)` (PCG64): resample b takes the row indices
`rng.integers(0, N, N)`, b = 0, 1, ..., which is the stream a plain Python loop draws too. They are
drawn in chunks of whole resamples and turned into count matrices (how often each image was drawn), so the
means of every column are one matrix product per chunk and memory stays bounded by `max_cells`.
Intervals are percentile intervals (numpy's default linear interpolation between order statistics).

Pure functions of numpy arrays and pandas frames: nothing here reads files or knows a run.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from itertools import combinations
from typing import Any, Literal, TypeVar

import krippendorff
import numpy as np
import pandas as pd
from scipy import stats as st
from threadpoolctl import threadpool_limits

K = TypeVar("K", bound=Hashable)
GENERATOR = "numpy.random.default_rng (PCG64)"
LONG_COLUMNS = ["image_id", "method", "metric", "value"]
MAX_CELLS = 1 << 21  # image draws per chunk: 2M int64 indices (16 MiB) and their counts


def resample_means(
    x: np.ndarray, n_boot: int, seed: int, weights: np.ndarray | None = None, max_cells: int = MAX_CELLS
) -> np.ndarray:
    """(n_boot, K) means of the K columns of `x` (N, K) over `n_boot` bootstrap resamples of its N rows.

    NaN marks a missing value: a column's mean is over the drawn rows where it is present (NaN when the
    resample drew none). `weights` (N, K): a row's weight in its column's mean, e.g. how many units (image,
    class pairs) the row's value averages, so the mean over units is resampled by image (Σ w·x / Σ w over
    the drawn rows). A column holding ±inf has no meaningful resample means: NaN throughout.
    """
    x = np.asarray(x, dtype=np.float64)
    n, k = x.shape
    out = np.full((n_boot, k), np.nan)
    if n == 0 or n_boot == 0:
        return out
    present = ~np.isnan(x)
    w = present.astype(np.float64) if weights is None else np.where(present, np.asarray(weights, np.float64), 0.0)
    finite = np.isfinite(np.where(present, x, 0.0)).all(0)
    values = np.where(present[:, finite], x[:, finite], 0.0) * w[:, finite]
    gaps = ~(w[:, finite] == 1.0).all(0)  # columns other than plain means need their own denominators
    weights = w[:, finite][:, gaps]
    # One BLAS thread: between the products the loop draws and counts in this thread, and a second BLAS
    # thread spinning meanwhile took 13-25 s instead of 1.8 s for 85 columns on 2 busy cores (measured).
    with threadpool_limits(limits=1, user_api="blas"):
        for start, counts in resample_counts(n, n_boot, seed, max_cells):
            m = len(counts)
            means = counts @ values
            means[:, ~gaps] /= n
            if gaps.any():
                with np.errstate(invalid="ignore", divide="ignore"):
                    means[:, gaps] /= counts @ weights
            out[start : start + m, finite] = means
    return out


def resample_counts(n: int, n_boot: int, seed: int, max_cells: int = MAX_CELLS) -> Iterator[tuple[int, np.ndarray]]:
    """The bootstrap's resamples of n images as (first resample number, (m, n) float64 counts: how often
    resample start + r drew image i), in chunks of whole resamples. Resample b draws `rng.integers(0, n, n)`
    from one `np.random.default_rng(seed)`, so every statistic computed from these counts, whatever it is,
    sees the same resamples as `resample_means`."""
    rng = np.random.default_rng(seed)
    chunk = max(1, max_cells // max(n, 1))
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(m, n))
        idx += (np.arange(m) * n)[:, None]
        yield start, np.bincount(idx.ravel(), minlength=m * n).reshape(m, n).astype(np.float64)


def krippendorff_alpha(
    level: Literal["nominal", "ordinal", "interval", "ratio"], value_counts: np.ndarray | None = None, **data: Any
) -> float:
    """Krippendorff's α at `level` (nominal, ordinal, ...) by the krippendorff package, from
    `reliability_data` (raters x units, NaN: missing) or `value_counts` (units x values: how many raters gave
    each value), with `value_domain` where given; NaN where α is undefined (no variation at all, or no unit
    with two values)."""
    try:
        with np.errstate(invalid="ignore", divide="ignore"):  # no variation at all: 0/0
            return float(krippendorff.alpha(value_counts=value_counts, level_of_measurement=level, **data))
    except (ValueError, ZeroDivisionError):
        return float("nan")


def percentile_interval(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per column of `boot` (n_boot, K): the (1 − level)/2 and (1 + level)/2 quantiles over the resamples
    where the statistic is defined; NaN for a column with none (or no resamples at all)."""
    boot = np.asarray(boot, dtype=np.float64)
    lo, hi = np.full(boot.shape[1], np.nan), np.full(boot.shape[1], np.nan)
    ok = ~np.isnan(boot).all(0)
    if ok.any():
        q = np.nanquantile(boot[:, ok], [(1 - level) / 2, (1 + level) / 2], axis=0)
        lo[ok], hi[ok] = q
    return lo, hi


def sign_test(wins: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """Exact two-sided sign test (ties left out): the binomial test of p = 1/2 on the w + l untied images,
    p = min(1, 2·P(X ≤ min(w, l))), X ~ Bin(w + l, 1/2); 1 where every image ties.

    For p = 1/2 the binomial distribution is symmetric, so doubling the smaller tail equals the sum over
    all outcomes no more likely than the observed one (scipy.stats.binomtest's definition), and this form
    is vectorised over all method pairs at once.
    """
    wins, losses = np.asarray(wins), np.asarray(losses)
    n = wins + losses
    p = np.minimum(1.0, 2.0 * st.binom.cdf(np.minimum(wins, losses), n, 0.5))
    return np.where(n > 0, p, 1.0)


def t_interval(values: np.ndarray, level: float) -> tuple[float, float, float]:
    """Mean of `values` and its Student t interval, mean ± t_{n−1} · sd / √n (sd with ddof = 1)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    mean = float(values.mean()) if n else float("nan")
    if n < 2 or not np.isfinite(values).all():
        return mean, float("nan"), float("nan")
    half = float(st.t.ppf((1 + level) / 2, n - 1) * values.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half


def wide_metrics(
    long: pd.DataFrame, methods: list[str] | None = None, column: str = "value"
) -> dict[str, pd.DataFrame]:
    """Long per-image values (image_id, method, metric, value[, weight]) as one wide frame of `column` per
    metric: images (sorted by image_id, so the result does not depend on row order) × methods (in
    `methods`' order when given). An image is in a metric's frame when any method has a value for it."""
    missing = set(LONG_COLUMNS) - set(long.columns)
    if missing:
        raise ValueError(f"per-image values need the columns {LONG_COLUMNS} (missing {sorted(missing)})")
    dup = long.duplicated(["image_id", "method", "metric"])
    if dup.any():
        first = long[dup].iloc[0]
        raise ValueError(
            f"two values for image {first['image_id']!r}, method {first['method']!r}, metric {first['metric']!r}"
        )
    out = {}
    for metric, rows in long.groupby("metric", sort=False):
        wide = rows.pivot(index="image_id", columns="method", values=column).astype(np.float64)
        order = [m for m in methods if m in wide.columns] if methods else list(dict.fromkeys(rows["method"]))
        keep = rows.pivot(index="image_id", columns="method", values="value").notna().any(axis=1)
        out[str(metric)] = wide.reindex(columns=order)[keep]
    return out


def bootstrap_frames(
    frames: Mapping[K, pd.DataFrame], n_boot: int, seed: int, weights: Mapping[K, pd.DataFrame] | None = None
) -> dict[K, np.ndarray]:
    """(n_boot, columns) resample means of each frame's columns (rows: images), weighted by the frame of
    the same key in `weights` where there is one. Every frame sees the resamples a fresh generator with
    `seed` draws over its own images, so a metric's interval does not depend on which other metrics are
    computed; frames over the same images (same index) share one pass, which draws those resamples once."""
    weights = weights or {}
    groups: list[tuple[pd.Index, list[K]]] = []
    for key, frame in frames.items():
        same = next((keys for index, keys in groups if index.equals(frame.index)), None)
        if same is None:
            groups.append((frame.index, [key]))
        else:
            same.append(key)
    out = {}
    for _, keys in groups:
        x = np.column_stack([frames[k].to_numpy(np.float64) for k in keys])
        w = np.column_stack(
            [weights[k].to_numpy(np.float64) if k in weights else np.ones(frames[k].shape) for k in keys]
        )
        boot = resample_means(x, n_boot, seed, w)
        for key, part in zip(keys, np.split(boot, np.cumsum([frames[k].shape[1] for k in keys])[:-1], axis=1)):
            out[key] = part
    return out


def interval_tables(
    wides: dict[str, pd.DataFrame],
    n_boot: int,
    level: float,
    seed: int,
    boots: Mapping[str, np.ndarray] | None = None,
    weights: Mapping[str, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per metric (wide frame: images × methods): each method's mean (weighted by `weights[metric]` where
    given) with its percentile bootstrap interval (metric, method, value, lo, hi, n: images) and, for every
    pair of methods, the paired bootstrap interval of the difference of their means (metric, method_a,
    method_b, value, lo, hi, n; value = a − b). `boots`: the resample means when `bootstrap_frames` drew them."""
    weights = weights or {}
    boots = bootstrap_frames(wides, n_boot, seed, weights) if boots is None else boots
    per_method, pairs = [], []
    for metric, wide in wides.items():
        x, boot = wide.to_numpy(np.float64), boots[metric]
        present = ~np.isnan(x)
        w = np.where(present, weights[metric].to_numpy(np.float64), 0.0) if metric in weights else present
        count = present.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            point = np.where(present, x * w, 0.0).sum(0) / w.sum(0)
        lo, hi = percentile_interval(boot, level)
        for j, m in enumerate(wide.columns):
            per_method.append(
                {"metric": metric, "method": m, "value": point[j], "lo": lo[j], "hi": hi[j], "n": int(count[j])}
            )
        for a, b in combinations(range(x.shape[1]), 2):
            d_lo, d_hi = percentile_interval(boot[:, [a]] - boot[:, [b]], level)
            both = ~np.isnan(x[:, a]) & ~np.isnan(x[:, b])
            pairs.append(
                {
                    "metric": metric,
                    "method_a": wide.columns[a],
                    "method_b": wide.columns[b],
                    "value": point[a] - point[b],
                    "lo": d_lo[0],
                    "hi": d_hi[0],
                    "n": int(both.sum()),
                }
            )
    return (
        pd.DataFrame(per_method, columns=["metric", "method", "value", "lo", "hi", "n"]),
        pd.DataFrame(pairs, columns=["metric", "method_a", "method_b", "value", "lo", "hi", "n"]),
    )


def win_values(o: pd.DataFrame) -> pd.DataFrame:
    """Per image (rows of `o`, images × methods: the confidence on each explanation image) and pair of
    methods (columns, in `combinations` order): 50 + 50·sign(O_A − O_B), whose mean is win % of A vs B."""
    x = o.to_numpy(dtype=np.float64)
    pairs = list(combinations(range(x.shape[1]), 2))
    sign = np.column_stack([np.sign(x[:, a] - x[:, b]) for a, b in pairs]) if pairs else np.empty((len(x), 0))
    return pd.DataFrame(50.0 + 50.0 * sign, index=o.index)


def win_table(o: pd.DataFrame, n_boot: int, level: float, seed: int, boot: np.ndarray | None = None) -> pd.DataFrame:
    """Win % of A vs B for every pair of methods (columns of `o`), ties counting half, its bootstrap interval,
    and the exact sign test's p-value on the images where O_A ≠ O_B (n_untied of n). `boot`: the resample
    means of `win_values(o)` when already drawn."""
    values = win_values(o)
    boot = bootstrap_frames({"pairs": values}, n_boot, seed)["pairs"] if boot is None else boot
    lo, hi = percentile_interval(boot, level)
    x = values.to_numpy()
    wins, losses = (x > 50).sum(0), (x < 50).sum(0)
    p = sign_test(wins, losses)
    point = x.mean(0)
    names = list(o.columns)
    return pd.DataFrame(
        [
            {
                "method_a": names[a],
                "method_b": names[b],
                "value": point[j],
                "lo": lo[j],
                "hi": hi[j],
                "p_value": p[j],
                "n": len(x),
                "n_untied": int(wins[j] + losses[j]),
            }
            for j, (a, b) in enumerate(combinations(range(len(names)), 2))
        ]
    )


def log_values(o: pd.DataFrame) -> pd.DataFrame:
    """log O per image and method (−inf where a confidence underflowed to 0)."""
    with np.errstate(divide="ignore"):
        return np.log(o.astype(np.float64))


def relperf_table(
    o: pd.DataFrame, n_boot: int, level: float, seed: int, boot: np.ndarray | None = None
) -> pd.DataFrame:
    """Relative performance R = exp(mean log(O_A/O_B)) for every pair (columns of `o`, the images that
    passed the true-class threshold): its paired bootstrap interval (interval = 'bootstrap', the exp of
    the interval of the mean log ratio) and the interval exp(mean ± t·sd/√n) from the mean and standard
    deviation of the per-image log ratio (interval = 't'). `boot`: resample means of `log_values(o)`."""
    log_o = log_values(o)
    _, diffs = interval_tables({"log_o": log_o}, n_boot, level, seed, None if boot is None else {"log_o": boot})
    rows = []
    for d in diffs.itertuples():
        _, t_lo, t_hi = t_interval((log_o[d.method_a] - log_o[d.method_b]).to_numpy(), level)
        for kind, lo, hi in (("bootstrap", d.lo, d.hi), ("t", t_lo, t_hi)):
            rows.append(
                {
                    "method_a": d.method_a,
                    "method_b": d.method_b,
                    "value": float(np.exp(d.value)),
                    "lo": float(np.exp(lo)),
                    "hi": float(np.exp(hi)),
                    "interval": kind,
                    "n": d.n,
                }
            )
    return pd.DataFrame(rows)
