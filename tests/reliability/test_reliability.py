"""Metric reliability (docs/guide/trustworthiness.md, "Metric reliability"): Krippendorff's α (ordinal) on a published
example and against a hand-written α, Kendall τ against scipy, ranks and σ̂ by hand on a tiny records table (a
lower-is-better metric ranks inversely), intervals against a plain-loop bootstrap, and the command."""

from __future__ import annotations

from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau

from camexp.config import StatsConfig
from camexp.reliability.measures import Estimate, alpha_counts, image_taus, ordinal_alpha, orient, ranks, reliability
from camexp.reliability.report import (
    OUTSIDE,
    Table,
    _cells,
    frames,
    measure,
    rank_table,
    reliability_report,
    run_table,
    section,
)
from tests.report.test_uncertainty import invoke, write_run

NAN = np.nan


def test_ordinal_alpha_published_example() -> None:
    """Krippendorff (2011), 'Computing Krippendorff's alpha-reliability', section C: 4 observers, 12 units,
    values 1..5 with missing ones; published α: ordinal 0.815, interval 0.849."""
    data = np.array(
        [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
            [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
        ]
    )
    assert ordinal_alpha(data) == pytest.approx(0.815, abs=5e-4)
    counts, domain = alpha_counts(data)
    assert domain.tolist() == [1, 2, 3, 4, 5] and counts.sum() == np.isfinite(data).sum()
    assert krippendorff.alpha(data, level_of_measurement="interval") == pytest.approx(0.849, abs=5e-4)


def hand_ordinal_alpha(data: np.ndarray) -> float:
    """Ordinal α written out (Krippendorff 2011): coincidences o_ck over units with two or more values,
    δ²_ck = (sum_{g=c..k} n_g - (n_c + n_k)/2)², α = 1 - (n - 1) Σ o δ² / Σ n_c n_k δ²."""
    domain = np.unique(data[~np.isnan(data)])
    v = len(domain)
    o = np.zeros((v, v))
    for unit in data.T:
        vals = unit[~np.isnan(unit)]
        if len(vals) < 2:
            continue
        idx = np.searchsorted(domain, vals)
        for i in range(len(vals)):
            for j in range(len(vals)):
                if i != j:
                    o[idx[i], idx[j]] += 1 / (len(vals) - 1)
    n_c = o.sum(1)
    n = n_c.sum()
    delta = np.zeros((v, v))
    for c in range(v):
        for k in range(v):
            lo, hi = min(c, k), max(c, k)
            delta[c, k] = (n_c[lo : hi + 1].sum() - (n_c[c] + n_c[k]) / 2) ** 2
    return float(1 - (n - 1) * (o * delta).sum() / (np.outer(n_c, n_c) * delta).sum())


def _rank_data(seed: int, n: int = 14, m: int = 5) -> np.ndarray:
    """(n images, m methods) per-image ranks of tied, partly missing values."""
    g = np.random.default_rng(seed)
    x = g.integers(0, 4, (n, m)).astype(float) + g.normal(0, 1, m)[None] * (g.random((n, 1)) < 0.7)
    x[g.random((n, m)) < 0.1] = NAN
    return ranks(x)


def test_alpha_against_a_hand_written_alpha_and_of_a_resample() -> None:
    """α of per-image ranks equals the hand-written ordinal α; α from a resample's value counts (images
    drawn with repetition) equals α of the resampled images themselves."""
    r = _rank_data(3)
    assert ordinal_alpha(r) == pytest.approx(hand_ordinal_alpha(r), abs=1e-12)
    idx = np.random.default_rng(7).integers(0, len(r), len(r))
    counts, domain = alpha_counts(r, np.bincount(idx, minlength=len(r)).astype(float))
    from_counts = krippendorff.alpha(value_counts=counts, value_domain=domain, level_of_measurement="ordinal")
    assert from_counts == pytest.approx(hand_ordinal_alpha(r[idx]), abs=1e-12)
    assert from_counts == pytest.approx(krippendorff.alpha(r[idx], level_of_measurement="ordinal"), abs=1e-12)


def test_kendall_tau_per_image_is_scipys() -> None:
    """τ-b of every two metrics' values per image, ties and missing values included, is scipy's kendalltau
    (variant b, NaN positions of either left out); NaN where a ranking is all tied."""
    g = np.random.default_rng(0)
    x = g.integers(0, 3, (8, 3, 6)).astype(float)
    x[g.random(x.shape) < 0.15] = NAN
    x[0, 1] = 2.0  # all tied: undefined
    taus = image_taus(x)
    for n in range(len(x)):
        for a in range(3):
            for b in range(3):
                expected = kendalltau(x[n, a], x[n, b], nan_policy="omit").statistic
                assert taus[n, a, b] == pytest.approx(expected, abs=1e-12, nan_ok=True), (n, a, b)
    assert np.isnan(taus[0, 1]).all()


# CONF: O per image (rows) and method (gradcam, gradcam++, cam), Y = 1: avg drop % = 100 max(0, 1 - CONF) (lower is
# better), increase % = 100 [CONF > 1] (higher is better)
CONF = np.array([[0.875, 0.5, 1.25], [0.75, 0.625, 0.625], [0.625, 0.875, 1.125], [1.25, 0.375, 0.5]])  # exact


def test_ranks_and_sigma_by_hand_on_a_tiny_records_table(tmp_path: Path) -> None:
    """avg drop: gradcam [12.5, 25, 37.5, 0] (mean 18.75, median 18.75), gradcam++ [50, 37.5, 12.5, 62.5]
    (40.625, 43.75), cam [0, 37.5, 0, 50] (21.875, 18.75): by mean 1, 3, 2 (lower is better: the smallest
    mean ranks first), by median 1.5, 3, 1.5. increase: [0, 0, 0, 100] (mean 25, median 0), [0, 0, 0, 0]
    (0, 0), [100, 0, 100, 0] (50, 50): by mean 2, 3, 1, by median 2.5, 2.5, 1. Both faithfulness: mean rank
    by mean 1.5, 3, 1.5, σ̂ (ddof 0) 0.5, 0, 0.5; by median σ̂ 0.5, 0.25, 0.25."""
    run = write_run(tmp_path, "tiny", "resnet18", np.ones(4), CONF, metrics=["avg_drop", "increase"])
    rel = measure(run_table(run, {"bootstrap": 0})).rel
    assert rel.metrics == ["avg_drop", "increase"] and rel.criteria == ["faithfulness", "faithfulness"]
    np.testing.assert_array_equal(rel.rank_mean.value, [[1, 3, 2], [2, 3, 1]])
    np.testing.assert_array_equal(rel.rank_median.value, [[1.5, 3, 1.5], [2.5, 2.5, 1]])
    np.testing.assert_array_equal(rel.criterion_mean["faithfulness"].value, [1.5, 3, 1.5])
    np.testing.assert_array_equal(rel.sigma_mean.value, [0.5, 0, 0.5])
    np.testing.assert_array_equal(rel.sigma_median.value, [0.5, 0.25, 0.25])
    # per image, avg drop's ranking is the reverse of its values', then compared with increase's
    drop, inc = -100 * np.maximum(0, 1 - CONF), 100.0 * (CONF > 1)
    expected = np.nanmean([kendalltau(drop[i], inc[i]).statistic for i in range(4)])
    assert rel.tau.value[0, 1] == pytest.approx(expected, abs=1e-12)
    # increase ties every method on image 1 (no method raises the confidence): τ is defined on 3 images
    assert rel.images.tolist() == [4, 4] and rel.tau_images[0, 1] == 3 and rel.tau_images[0, 0] == 4


def test_a_lower_is_better_metric_ranks_inversely() -> None:
    """The same values rank the other way round when their metric's lower values are the better ones."""
    values = np.array([[[3.0, 1.0, 2.0], [3.0, 1.0, 2.0]]])  # one image, two metrics, three methods
    r = ranks(orient(values, [False, True])[0])
    np.testing.assert_array_equal(r, [[1, 3, 2], [3, 1, 2]])


def test_intervals_are_the_plain_loop_bootstrap() -> None:
    """Resample b draws rng.integers(0, N, N) of one default_rng(seed); on those images the ranks by mean
    and by median, τ and α recomputed in a plain loop give the same percentile intervals."""
    g = np.random.default_rng(5)
    x = g.normal(0, 1, (20, 3, 4)) + np.array([0.0, 0.3, 0.6, 0.9])
    x[g.random(x.shape) < 0.05] = NAN
    n_boot, seed = 200, 11
    rel = reliability(x, ["a", "b", "c"], ["m1", "m2", "m3", "m4"], ["faithfulness"] * 3, n_boot, 0.9, seed)
    rng = np.random.default_rng(seed)
    per_image = ranks(x)
    means, medians, taus, alphas = [], [], [], []
    with np.errstate(invalid="ignore"):
        for _ in range(n_boot):
            idx = rng.integers(0, len(x), len(x))
            means.append(ranks(np.nanmean(x[idx], 0)))
            medians.append(ranks(np.nanmedian(x[idx], 0)))
            taus.append(np.nanmean(image_taus(x[idx]), 0))
            alphas.append([krippendorff.alpha(per_image[idx, k], level_of_measurement="ordinal") for k in range(3)])
    for est, boot in ((rel.rank_mean, means), (rel.rank_median, medians), (rel.tau, taus), (rel.alpha, alphas)):
        lo, hi = np.nanquantile(np.array(boot), [0.05, 0.95], axis=0)
        np.testing.assert_allclose(est.lo, lo, atol=1e-12)
        np.testing.assert_allclose(est.hi, hi, atol=1e-12)
    sigma = np.nanquantile(np.nanstd(np.array(means), axis=1), [0.05, 0.95], axis=0)
    np.testing.assert_allclose([rel.sigma_mean.lo, rel.sigma_mean.hi], sigma, atol=1e-12)


def test_the_command_writes_tables_figures_and_pools_runs(tmp_path: Path) -> None:
    g = np.random.default_rng(1)
    for name in ("one", "two"):
        y = g.uniform(0.5, 1.0, 12)
        write_run(
            tmp_path / "runs",
            name,
            "resnet18",
            y,
            y[:, None] * g.uniform(0.3, 1.2, (12, 3)),
            metrics=["avg_drop", "increase", "win"],
        )
    res = invoke("table", tmp_path / "runs", "--reliability", "--bootstrap", "100", "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    md = (tmp_path / "out" / "reliability.md").read_text()
    assert "## one" in md and "## two" in md and "## all runs pooled" in md and "24 images" in md
    frame = pd.read_csv(tmp_path / "out" / "reliability.csv")
    assert set(frame.quantity) >= {"rank_by_mean", "rank_by_median", "kendall_tau", "krippendorff_alpha_ordinal"}
    assert set(frame.subject[frame.quantity == "krippendorff_alpha_ordinal"]) == {"avg_drop", "increase", "best_share"}
    for stem in ("reliability_one_tau", "reliability_all_runs_pooled_ranks"):
        assert (tmp_path / "out" / f"{stem}.png").is_file() and (tmp_path / "out" / f"{stem}.pdf").is_file()
    res = invoke("table", tmp_path / "runs", "--reliability", "--leaderboard")
    assert res.exit_code == 2 and "one at a time" in res.output
    lone = write_run(
        tmp_path / "lone", "lone", "resnet18", np.ones(3), np.ones((3, 1)), methods=["gradcam"], metrics=["avg_drop"]
    )
    res = invoke("table", lone.parent, "--reliability")
    assert res.exit_code == 2 and "needs two methods" in res.output and "Traceback" not in res.output


def test_an_unwritable_out_is_one_line_figures_included(tmp_path: Path) -> None:
    """The figures were saved into --out before the tables, outside the writer's error handling: a file in the
    way was a FileExistsError traceback (exit 1). They are now written with the tables, in one place."""
    y = np.linspace(0.5, 1.0, 12)
    write_run(tmp_path / "runs", "one", "resnet18", y, y[:, None] * np.linspace(0.3, 1.2, 3), metrics=["avg_drop"])
    (tmp_path / "afile").write_text("in the way")
    res = invoke("table", tmp_path / "runs", "--reliability", "--bootstrap", "100", "--out", tmp_path / "afile")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"{tmp_path / 'afile'}: cannot write reliability.md and reliability.csv" in " ".join(res.output.split())


def test_a_tied_rank_is_printed_inside_its_interval() -> None:
    """The audit's case: two methods tied last on every image have rank 7.5 in every resample, and the rank
    table printed it as '7.5 [8, 8]'; its bounds are now rounded outward ('7.5 [7, 8]'), the CSV keeps 7.5."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 2, 8))
    x[:, :, 6:] = -10.0  # the last two methods: tied, worst, on both metrics
    methods = [f"m{i}" for i in range(8)]
    rel = reliability(x, ["a", "b"], methods, [None, None], 50, 0.95, 0)
    assert rel.rank_mean.value[0, 6] == rel.rank_mean.lo[0, 6] == rel.rank_mean.hi[0, 6] == 7.5
    table = rank_table(rel, "mean")
    assert table.at["m6", "a"] == table.at["m7", "b"] == "7.5 [7, 8]"


def _confidences(seed: int, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Y = 1 and O for gradcam, gradcam++, cam (unrelated across images), random (always the lowest: the
    largest drop) and center (always the highest, above Y: the only increase)."""
    g = np.random.default_rng(seed)
    real = g.uniform(0.3, 0.9, (n, 3))
    return np.ones(n), np.concatenate([real, np.full((n, 1), 0.1), np.full((n, 1), 1.5)], 1)


def test_the_floors_are_measured_apart(tmp_path: Path) -> None:
    """The issue's case: the floors sit at both ends of every image's ranking, so with them the images agree
    (α high) although they do not agree about the real methods. α and σ̂ are now taken over the real methods
    (α checked against the ranks of the real columns alone), and again with the floors, on a line apart."""
    y, o = _confidences(2)
    methods = ["gradcam", "gradcam++", "cam", "random", "center"]
    write_run(tmp_path / "runs", "floors", "resnet18", y, o, methods=methods, metrics=["avg_drop", "increase"])
    table = run_table(tmp_path / "runs" / "floors", {"bootstrap": 100})
    assert table.floors == ["random", "center"]
    measured = measure(table)
    assert measured.rel.methods == ["gradcam", "gradcam++", "cam"] and measured.floors == ["random", "center"]
    assert measured.with_floors is not None and measured.with_floors.methods == methods
    drop = -100 * np.maximum(0, 1 - o)  # oriented: higher is better
    alone = ordinal_alpha(ranks(drop[:, :3]))
    assert measured.rel.alpha.value[0] == pytest.approx(alone, abs=1e-12)
    assert measured.with_floors.alpha.value[0] == pytest.approx(ordinal_alpha(ranks(drop)), abs=1e-12)
    assert measured.with_floors.alpha.value[0] > 0.5 > measured.rel.alpha.value[0]
    report = reliability_report(tmp_path / "runs", {"bootstrap": 100})
    assert "### With the floors (random, center), apart" in report.markdown
    quantities = set(report.frame.quantity)
    assert {"krippendorff_alpha_ordinal", "krippendorff_alpha_ordinal_with_floors", "sigma_by_mean_with_floors"} <= (
        quantities
    )
    real_alpha = report.frame[report.frame.quantity == "krippendorff_alpha_ordinal"]
    assert real_alpha.value.iloc[0] == pytest.approx(alone, abs=1e-12)  # the CSV keeps every digit


def _table(values: dict[str, np.ndarray], methods: list[str], floors: list[str] | None = None) -> Table:
    ids = [f"i{k}" for k in range(len(next(iter(values.values()))))]
    frames = {k: pd.DataFrame(v, index=ids, columns=methods) for k, v in values.items()}
    return Table("t", frames, methods, StatsConfig(bootstrap=100), floors=floors or [])


def test_the_same_numbers_are_counted_once() -> None:
    """MPRT's Spearman and |Spearman| of maps without a negative value are the same numbers (up to float
    rounding of the ranks): counted once, under the first, and said; σ̂ is then that of two metrics (by hand:
    a method ranked 1 and 3 has σ̂ 1). With one negative map the two differ and both count."""
    methods = ["a", "b", "c"]
    spearman = np.array([[0.1, 0.5, 0.9], [0.2, 0.4, 0.8], [0.3, 0.6, 0.7]])  # lower is better: a, b, c
    deletion = np.array([[0.9, 0.5, 0.1], [0.8, 0.4, 0.2], [0.7, 0.6, 0.3]])  # lower is better: c, b, a
    values = {"mprt_spearman": spearman, "mprt_spearman_abs": spearman + 1e-12, "deletion": deletion}
    measured = measure(_table(values, methods))
    assert measured.merged == {"mprt_spearman_abs": "mprt_spearman"}
    assert measured.rel.metrics == ["deletion", "mprt_spearman"]
    np.testing.assert_array_equal(measured.rel.sigma_mean.value, [1.0, 0.0, 1.0])
    signed = dict(values, mprt_spearman_abs=np.abs(spearman - [[0.5, 0, 0], [0, 0, 0], [0, 0, 0]]))
    assert measure(_table(signed, methods)).merged == {}


def test_the_merge_is_said_in_the_report() -> None:
    """The Markdown names the merged metric and the CSV has a `same_values_as` row for it."""
    values = {"mprt_spearman": np.eye(3) + 0.1, "mprt_spearman_abs": np.eye(3) + 0.1, "deletion": np.eye(3)}
    table = _table(values, ["a", "b", "c"])
    measured = measure(table)
    text = "\n".join(section(measured, table, "s"))
    assert "Counted once: mprt_spearman_abs (the same values as mprt_spearman, to 1e-09)." in text
    rows = frames(measured, "t")
    merged = rows[rows.quantity == "same_values_as"]
    assert merged[["subject", "other"]].values.tolist() == [["mprt_spearman_abs", "mprt_spearman"]]
    assert "mprt_spearman_abs" not in set(rows.subject[rows.quantity == "krippendorff_alpha_ordinal"])


def test_a_value_is_never_printed_outside_its_interval() -> None:
    """Bounds are rounded outward, so a value inside its interval is printed inside it, at any digits (checked
    on 2,000 random triples against the printed numbers); a value outside its own percentile interval (σ̂ of
    ranks is biased upward by resampling: 0 when every metric agrees, above 0 on most resamples) is marked,
    never hidden by rounding."""
    g = np.random.default_rng(0)
    for _ in range(2000):
        lo, value, hi = np.sort(g.normal(0, 10.0 ** g.integers(-3, 2), 3))
        digits = int(g.integers(1, 4))
        text = _cells(Estimate(np.array([value]), np.array([lo]), np.array([hi])), ["x"], digits=digits)[0]["x"]
        shown, bounds = text.replace("−", "-").split(" [")
        low, high = (float(b) for b in bounds.rstrip("]").split(", "))
        assert low <= float(shown) <= high and not text.endswith(OUTSIDE), text
    outside = _cells(Estimate(np.array([0.0, 0.5]), np.array([0.3, 0.3]), np.array([0.9, 0.9])), ["a", "b"])[0]
    assert outside.tolist() == ["0.00 [0.3, 0.9]" + OUTSIDE, "0.50 [0.3, 0.9]"]
