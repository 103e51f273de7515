"""camexp.stats.bootstrap against independent implementations: scipy's binomial test, a plain-loop percentile
bootstrap drawn from the same generator, and coverage on synthetic data whose true mean is known."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binomtest
from scipy.stats import t as student_t

from camexp.metrics import faithfulness as F
from camexp.stats.bootstrap import (
    bootstrap_frames,
    interval_tables,
    percentile_interval,
    relperf_table,
    resample_means,
    sign_test,
    t_interval,
    wide_metrics,
    win_table,
)


def loop_bootstrap(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """The textbook bootstrap: one resample of the rows at a time, column means over the present values."""
    rng = np.random.default_rng(seed)
    return np.array([np.nanmean(x[rng.integers(0, len(x), len(x))], axis=0) for _ in range(n_boot)])


COUNTS = [
    (0, 0),
    (1, 0),
    (0, 1),
    (3, 3),
    (5, 2),
    (2, 5),
    (10, 0),
    (7, 20),
    (60, 40),
    (51, 49),
    (500, 460),
    (1000, 1100),
    (20000, 20500),
    (24800, 25200),
    (123, 4567),
]


@pytest.mark.parametrize("wins,losses", COUNTS)
def test_sign_test_equals_scipy_binomtest(wins: int, losses: int):
    p = float(sign_test(np.array([wins]), np.array([losses]))[0])
    if wins + losses == 0:
        assert p == 1.0  # every image tied: no evidence either way
        return
    expected = binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue
    assert p == pytest.approx(expected, rel=1e-12, abs=0)


def test_sign_test_is_vectorised_over_pairs():
    w, losses = np.array([c[0] for c in COUNTS[1:]]), np.array([c[1] for c in COUNTS[1:]])
    np.testing.assert_allclose(
        sign_test(w, losses), [binomtest(a, a + b).pvalue for a, b in zip(w, losses)], rtol=1e-12
    )


@pytest.mark.parametrize("n,max_cells", [(37, 37 * 7), (37, 1 << 21), (200, 1000)])
def test_bootstrap_equals_a_plain_loop_with_the_same_generator(n: int, max_cells: int):
    x = np.random.default_rng(5).lognormal(size=(n, 3))
    x[::4, 1] = np.nan  # a method without a value on some images
    ours = resample_means(x, 301, seed=11, max_cells=max_cells)  # chunks of 7 resamples do not divide 301
    ref = loop_bootstrap(x, 301, seed=11)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    lo, hi = percentile_interval(ours, 0.9)
    np.testing.assert_allclose(np.c_[lo, hi].T, np.percentile(ref, [5, 95], axis=0), rtol=1e-12)


def test_paired_difference_equals_a_plain_loop():
    x = np.random.default_rng(2).normal(size=(51, 3))
    wide = pd.DataFrame(x, index=[f"im{i:03d}" for i in range(51)], columns=["a", "b", "c"])
    per_method, pairs = interval_tables({"avg_drop": wide}, 400, 0.95, 3)
    ref = loop_bootstrap(x, 400, 3)
    for row in pairs.itertuples():
        ja, jb = "abc".index(row.method_a), "abc".index(row.method_b)
        lo, hi = np.percentile(ref[:, ja] - ref[:, jb], [2.5, 97.5])
        assert (row.value, row.lo, row.hi) == pytest.approx((x[:, ja].mean() - x[:, jb].mean(), lo, hi), rel=1e-10)
        assert row.n == 51
    lo, hi = np.percentile(ref, [2.5, 97.5], axis=0)
    np.testing.assert_allclose(per_method[["lo", "hi"]].to_numpy(), np.c_[lo, hi], rtol=1e-12)
    assert list(pairs[["method_a", "method_b"]].itertuples(index=False, name=None)) == list(combinations("abc", 2))


def coverage(draw, truth: float, reps: int, level: float = 0.95) -> float:
    hits = 0
    for r in range(reps):
        x = draw(np.random.default_rng(1000 + r))
        lo, hi = percentile_interval(resample_means(x[:, None], 1000, seed=r), level)
        hits += lo[0] <= truth <= hi[0]
    return hits / reps


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    # normal, sd 2: the interval of a mean of 80 draws should hold the true mean in ~95 % of repetitions;
    # 400 repetitions put the estimate within +-2.2 points (2 standard errors) of the truth
    cov = coverage(lambda g: g.normal(3.0, 2.0, 80), 3.0, reps=400)
    assert 0.92 <= cov <= 0.98, cov
    # a skewed per-image value, like a drop: exponential, mean 0.5, 200 images
    cov = coverage(lambda g: g.exponential(0.5, 200), 0.5, reps=400)
    assert 0.91 <= cov <= 0.98, cov


def test_paired_interval_is_narrower_than_the_marginal_ones_when_images_dominate():
    # per-image difficulty shared by both methods: the marginal intervals overlap, the paired one excludes 0
    g = np.random.default_rng(0)
    hard = g.normal(50, 20, 300)
    x = pd.DataFrame({"a": hard + g.normal(0, 2, 300), "b": hard + 1.0 + g.normal(0, 2, 300)})
    per_method, pairs = interval_tables({"avg_drop": x}, 1000, 0.95, 0)
    a, b = per_method.set_index("method").loc["a"], per_method.set_index("method").loc["b"]
    assert a.hi > b.lo  # marginal intervals overlap
    assert pairs.iloc[0].hi < 0  # but a - b is negative at 95 %


def test_t_interval_by_hand_and_its_coverage():
    v = np.array([0.2, -0.1, 0.4, 0.3, 0.0])
    mean, lo, hi = t_interval(v, 0.95)
    half = student_t.ppf(0.975, 4) * v.std(ddof=1) / np.sqrt(5)
    assert (mean, lo, hi) == pytest.approx((0.16, 0.16 - half, 0.16 + half))
    hits = 0
    for r in range(1000):
        m, lo, hi = t_interval(np.random.default_rng(r).normal(0.2, 0.6, 30), 0.95)
        hits += lo <= 0.2 <= hi
    assert 0.93 <= hits / 1000 <= 0.97  # exact for normal data: 0.95 +- 2 standard errors (1.4 points)


def test_win_table_matches_the_win_matrix_and_the_sign_test():
    o = torch.tensor(
        [[0.5, 0.6, 0.5], [0.4, 0.3, 0.9], [0.7, 0.7, 0.1], [0.2, 0.8, 0.3], [0.6, 0.1, 0.6]], dtype=torch.float64
    )
    frame = pd.DataFrame(o.numpy(), columns=["x", "y", "z"])
    table = win_table(frame, 200, 0.95, 0)
    w = F.win_matrix(o)
    for row in table.itertuples():
        a, b = "xyz".index(row.method_a), "xyz".index(row.method_b)
        assert row.value == pytest.approx(float(w[a, b]))
        diff = o[:, a] - o[:, b]
        wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
        assert row.n_untied == wins + losses and row.n == 5
        assert row.p_value == pytest.approx(binomtest(wins, wins + losses).pvalue, rel=1e-12)
        assert row.lo <= row.value <= row.hi


def test_relperf_table_matches_relative_performance_and_its_t_interval():
    g = np.random.default_rng(4)
    o = pd.DataFrame({"gradcam": g.uniform(0.05, 0.9, 40), "gradcam++": g.uniform(0.05, 0.9, 40)})
    table = relperf_table(o, 500, 0.95, 0).set_index("interval")
    r, mean, std = F.relative_performance(
        torch.tensor(o["gradcam"].to_numpy()), torch.tensor(o["gradcam++"].to_numpy())
    )
    assert table.loc["bootstrap", "value"] == pytest.approx(r) and table.loc["t", "value"] == pytest.approx(r)
    half = student_t.ppf(0.975, 39) * std / np.sqrt(40)
    assert (table.loc["t", "lo"], table.loc["t", "hi"]) == pytest.approx((np.exp(mean - half), np.exp(mean + half)))
    ref = loop_bootstrap(np.log(o.to_numpy()), 500, 0)
    lo, hi = np.exp(np.percentile(ref[:, 0] - ref[:, 1], [2.5, 97.5]))
    assert (table.loc["bootstrap", "lo"], table.loc["bootstrap", "hi"]) == pytest.approx((lo, hi), rel=1e-10)


def test_long_form_rows_become_wide_frames_whatever_their_order():
    long = pd.DataFrame(
        {
            "image_id": ["b", "a", "a", "b", "c"],
            "method": ["m1", "m2", "m1", "m2", "m1"],
            "metric": ["deletion"] * 4 + ["insertion"],
            "value": [0.2, 0.4, 0.1, 0.3, 0.9],
        }
    )
    wides = wide_metrics(long, ["m2", "m1"])
    assert list(wides["deletion"].columns) == ["m2", "m1"] and list(wides["deletion"].index) == ["a", "b"]
    assert wides["deletion"].loc["b", "m1"] == 0.2
    assert list(wides["insertion"].index) == ["c"] and list(wides["insertion"].columns) == ["m1"]
    shuffled = wide_metrics(long.iloc[::-1], ["m2", "m1"])
    pd.testing.assert_frame_equal(shuffled["deletion"], wides["deletion"])
    with pytest.raises(ValueError, match="two values for image 'a'"):
        wide_metrics(pd.concat([long, long.iloc[[1]]]))


def test_a_metrics_interval_does_not_depend_on_the_other_metrics():
    g = np.random.default_rng(9)
    ids = [f"{i:02d}" for i in range(30)]
    drop = pd.DataFrame(g.uniform(0, 100, (30, 2)), index=ids, columns=["a", "b"])
    other = pd.DataFrame(g.uniform(0, 1, (12, 2)), index=ids[:12], columns=["a", "b"])
    same = pd.DataFrame(g.uniform(0, 1, (30, 2)), index=ids, columns=["a", "b"])
    alone, alone_pairs = interval_tables({"avg_drop": drop}, 300, 0.95, 1)
    mixed, mixed_pairs = interval_tables({"x": other, "avg_drop": drop, "y": same}, 300, 0.95, 1)
    pd.testing.assert_frame_equal(mixed[mixed.metric == "avg_drop"].reset_index(drop=True), alone)
    pd.testing.assert_frame_equal(mixed_pairs[mixed_pairs.metric == "avg_drop"].reset_index(drop=True), alone_pairs)


def test_no_resamples_gives_no_interval_and_infinite_values_give_none():
    x = np.array([[1.0, np.inf], [2.0, 3.0], [4.0, 5.0]])
    assert resample_means(x, 0, 0).shape == (0, 2)
    lo, hi = percentile_interval(resample_means(x, 0, 0), 0.95)
    assert np.isnan(lo).all() and np.isnan(hi).all()
    lo, hi = percentile_interval(resample_means(x, 200, 0), 0.95)
    assert np.isfinite([lo[0], hi[0]]).all() and np.isnan([lo[1], hi[1]]).all()


def test_frames_over_the_same_images_share_resamples_without_changing_them():
    g = np.random.default_rng(12)
    ids = [f"{i:02d}" for i in range(25)]
    a = pd.DataFrame(g.normal(size=(25, 2)), index=ids)
    b = pd.DataFrame(g.normal(size=(25, 3)), index=ids)
    c = pd.DataFrame(g.normal(size=(9, 2)), index=ids[:9])
    joint = bootstrap_frames({"a": a, "c": c, "b": b}, 150, 7)
    for key, frame in (("a", a), ("b", b), ("c", c)):
        np.testing.assert_allclose(joint[key], loop_bootstrap(frame.to_numpy(), 150, 7), rtol=1e-12)


def test_weighted_means_resample_images_with_their_units():
    """mLoc-like values: an image's value is the mean over its w units; the statistic is the mean over all
    units, and the bootstrap resamples images (clusters of units), as a plain loop over units does."""
    g = np.random.default_rng(13)
    units = [g.uniform(0, 1, g.integers(0, 4)) for _ in range(40)]  # 0..3 (image, class) pairs per image
    w = np.array([len(u) for u in units], dtype=float)
    x = np.array([u.mean() if len(u) else np.nan for u in units])
    ours = resample_means(x[:, None], 300, seed=2, weights=w[:, None])
    rng = np.random.default_rng(2)
    ref = []
    for _ in range(300):
        drawn = [units[i] for i in rng.integers(0, 40, 40)]
        ref.append(np.concatenate(drawn).mean())
    np.testing.assert_allclose(ours[:, 0], ref, rtol=1e-12)
    long = pd.DataFrame(
        {"image_id": [f"{i:02d}" for i in range(40)], "method": "m", "metric": "mLoc δ=0", "value": x, "weight": w}
    ).dropna()
    wides = wide_metrics(long, ["m"])
    per_method, _ = interval_tables(wides, 300, 0.95, 2, weights=wide_metrics(long, ["m"], "weight"))
    assert per_method.value[0] == pytest.approx(np.concatenate(units).mean())
    assert per_method.n[0] == int((w > 0).sum())
    # from long form, a metric's images are those with a value: images without a pair are not resampled
    rng, kept = np.random.default_rng(2), [u for u in units if len(u)]
    ref = [np.concatenate([kept[i] for i in rng.integers(0, len(kept), len(kept))]).mean() for _ in range(300)]
    assert (per_method.lo[0], per_method.hi[0]) == pytest.approx(tuple(np.percentile(ref, [2.5, 97.5])), rel=1e-10)
