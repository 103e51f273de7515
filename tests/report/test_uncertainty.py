"""Intervals of a run's numbers, summary_long.csv / pairwise.csv, and the cross-run leaderboard, on run
folders written here (records with known per-image values), checked against hand computations and a
plain-loop bootstrap in the test."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import binomtest
from typer.testing import CliRunner

from camexp.cli import app
from camexp.config import ExperimentConfig, StatsConfig
from camexp.lock import LOCK, Owner, hold
from camexp.metrics import MetricParams
from camexp.report.leaderboard import leaderboard
from camexp.report.tables import RunSummary, summarize_run_dir, to_markdown, write_summary
from camexp.report.tables import summarize as summarize_cfg
from camexp.report.uncertainty import NOT_DISTINGUISHABLE, cell, label_of
from camexp.results import COLUMNS, RECORDS, RUN_JSON, append_records
from camexp.results import METRIC_RECORDS as PER_IMAGE_METRICS

METHODS = ["gradcam", "gradcam++", "cam"]


def records(y: np.ndarray, o: np.ndarray, methods: list[str] = METHODS, ids: list[str] | None = None) -> pd.DataFrame:
    """Long records of N images x M methods with full-image confidence y (N,) and o (N, M)."""
    n = len(y)
    ids = ids or [f"img{i:03d}" for i in range(n)]
    return pd.DataFrame(
        {
            "index": np.repeat(np.arange(n), len(methods)),
            "image_id": np.repeat(ids, len(methods)),
            "method": methods * n,
            "target": 1,
            "label": -1,
            "pred": 1,
            "y": np.repeat(y, len(methods)),
            "o": o.ravel(),
            "p_true": np.repeat(y, len(methods)),
            "constant_map": 0,
        }
    )


def synthetic(seed: int, n: int = 30, shift: tuple[float, ...] = (0.6, 0.75, 0.9)) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    y = g.uniform(0.4, 1.0, n)
    return y, y[:, None] * g.uniform(0.2, 1.2, (n, len(shift))) * np.array(shift)


def summarize(
    name: str,
    paper: str | None,
    rec: pd.DataFrame,
    methods: list[str],
    metrics: list[str],
    params: MetricParams,
    stats: StatsConfig,
) -> RunSummary:
    """The summary of records under a config with these methods and metrics (no run folder)."""
    cfg = ExperimentConfig(
        name=name,
        paper=paper,
        dataset={"root": "."},
        model={"name": "resnet18"},
        methods=methods,
        metrics=metrics,
        relperf_min_true_prob=params.relperf_min_true_prob,
    )
    return summarize_cfg(cfg, rec, None, stats)


def loop_interval(values: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n_boot)]
    return tuple(np.percentile(means, [50 * (1 - level), 50 * (1 + level)]))


def test_drop_interval_is_the_bootstrap_of_the_per_image_drops():
    y, o = synthetic(0)
    s = summarize(
        "r",
        None,
        records(y, o),
        METHODS,
        ["avg_drop", "increase", "win"],
        MetricParams(),
        stats=StatsConfig(bootstrap=500, seed=4),
    )
    per = s.stats.per_method.set_index(["metric", "method"])
    for j, m in enumerate(METHODS):
        drop = 100 * np.maximum(0, y - o[:, j]) / y  # docs/definitions.md D4, per image
        assert per.loc[("avg_drop", m), "value"] == pytest.approx(drop.mean())
        assert per.loc[("avg_drop", m), "value"] == pytest.approx(s.main.at["Average drop % (lower is better)", m])
        assert (per.loc[("avg_drop", m), "lo"], per.loc[("avg_drop", m), "hi"]) == pytest.approx(
            loop_interval(drop, 500, 4), rel=1e-10
        )
        inc = 100.0 * (o[:, j] > y)
        assert (per.loc[("increase", m), "lo"], per.loc[("increase", m), "hi"]) == pytest.approx(
            loop_interval(inc, 500, 4), rel=1e-10
        )
    assert (per["n"] == 30).all()


def test_intervals_do_not_depend_on_the_order_of_the_records():
    y, o = synthetic(1)
    rec = records(y, o)
    params, cfg = MetricParams(), StatsConfig(bootstrap=200)
    a = summarize("r", None, rec, METHODS, ["avg_drop", "win", "relperf"], params, stats=cfg).stats
    shuffled = rec.sample(frac=1.0, random_state=0)
    shuffled["index"] = shuffled["index"].map(dict(zip(range(30), np.random.default_rng(0).permutation(30))))
    b = summarize("r", None, shuffled, METHODS, ["avg_drop", "win", "relperf"], params, stats=cfg).stats
    pd.testing.assert_frame_equal(a.per_method, b.per_method)
    pd.testing.assert_frame_equal(a.pairwise, b.pairwise)


def test_two_methods_get_the_papers_win_row_with_complementary_intervals():
    y, o = synthetic(2, shift=(0.6, 0.9))
    s = summarize(
        "r", None, records(y, o, METHODS[:2]), METHODS[:2], ["win"], MetricParams(), stats=StatsConfig(bootstrap=300)
    )
    win = s.stats.per_method[s.stats.per_method.metric == "win"].set_index("method")
    assert win.value.sum() == pytest.approx(100)
    assert win.at["gradcam", "lo"] == pytest.approx(100 - win.at["gradcam++", "hi"])
    assert win.at["gradcam", "value"] == pytest.approx(s.main.at["Win % (higher is better)", "gradcam"])
    pair = s.stats.pairwise[s.stats.pairwise.metric == "win"].iloc[0]
    assert pair.value == pytest.approx(win.at["gradcam", "value"]) and pair.n_untied == 30


def test_markdown_shows_intervals_marks_and_the_paired_table(tmp_path: Path):
    y = np.full(40, 0.8)
    g = np.random.default_rng(3)
    base = g.uniform(0.1, 0.7, 40)
    # gradcam++ a little better than gradcam on every image (paired: distinguishable), cam far worse,
    # gradcam+ = gradcam++ but on one image (a third of the resamples miss it: the difference's interval is [0, x])
    plus = base + 0.01
    plus[7] *= 0.5
    o = np.c_[base, base + 0.01, base * 0.3, plus]
    methods = [*METHODS, "gradcam+"]
    s = summarize(
        "r", None, records(y, o, methods), methods, ["avg_drop", "increase", "win"], MetricParams(), stats=StatsConfig()
    )
    md = to_markdown(s)
    row = next(line for line in md.splitlines() if line.startswith("| Average drop"))
    drop = s.stats.per_method.set_index(["metric", "method"]).loc["avg_drop"]
    assert f"**{drop.at['gradcam++', 'value']:.2f}** [" in row  # best, bold
    gradcam = cell(*drop.loc["gradcam", ["value", "lo", "hi"]])
    assert gradcam in row and f"{gradcam} {NOT_DISTINGUISHABLE}" not in row  # distinguishable: no mark
    assert drop.at["gradcam", "hi"] > drop.at["gradcam++", "lo"]  # although the marginal intervals overlap
    assert f"{cell(*drop.loc['gradcam+', ['value', 'lo', 'hi']])} {NOT_DISTINGUISHABLE}" in row
    assert f"{cell(*drop.loc['cam', ['value', 'lo', 'hi']])} {NOT_DISTINGUISHABLE}" not in row
    inc_row = next(line for line in md.splitlines() if line.startswith("| % increase"))
    assert inc_row.count("**") == 8  # nobody's o exceeds y: a four-way tie for best
    assert "1000 resamples, seed 0" in md and "gradcam vs gradcam++" in md and "sign test p" in md
    write_summary(tmp_path, s)
    long = pd.read_csv(tmp_path / "summary_long.csv")
    assert list(long.columns) == ["metric", "method", "value", "lo", "hi", "n"]
    pw = pd.read_csv(tmp_path / "pairwise.csv")
    assert list(pw.columns[:8]) == ["metric", "method_a", "method_b", "value", "lo", "hi", "interval", "p_value"]
    win = pw[(pw.metric == "win") & (pw.method_a == "gradcam")].set_index("method_b")
    assert win.at["gradcam++", "p_value"] == pytest.approx(2 * 0.5**40)  # 0 of 40 untied images won


def test_cell_format():
    assert cell(36.8412, 35.93, 37.71) == "36.84 [35.9, 37.8]"  # bounds rounded outward
    assert cell(1.2412, 1.1812, 1.3131, 3) == "1.241 [1.18, 1.32]"
    assert cell(0.5, 0.3, 0.7) == "0.50 [0.3, 0.7]"  # decimal bounds stay as they are (0.7 * 10 > 7 in binary)
    assert cell(-0.01, -0.04, -0.001) == "-0.01 [-0.1, 0.0]"
    assert cell(36.84, float("nan"), float("nan")) == "36.84"
    assert cell(float("nan"), 1, 2) == "—"


@pytest.mark.parametrize("digits", [1, 2, 3])
def test_a_value_inside_its_interval_is_printed_inside_it(digits: int):
    """The audit's case: a rank of 7.5 with interval [7.5, 7.5] was printed '7.5 [8, 8]'. On random values
    (round and half-way ones included), whenever lo <= value <= hi the printed numbers keep that order and the
    printed interval holds the true one."""
    assert cell(7.5, 7.5, 7.5, 1) == "7.5 [7, 8]"
    rng = np.random.default_rng(0)
    grid = np.round(rng.uniform(-20, 20, size=(3000, 3)) * 4) / 4  # many exact halves and quarters
    for a, b, c in np.vstack([grid, rng.uniform(-20, 20, size=(3000, 3))]):
        lo, value, hi = sorted((float(a), float(b), float(c)))
        head, _, rest = cell(value, lo, hi, digits).partition(" [")
        plo, phi = map(float, rest.rstrip("]").split(", "))
        assert plo <= lo and hi <= phi
        assert plo <= float(head) <= phi, (value, lo, hi, digits)


# --- run folders, camexp table and the leaderboard -------------------------------------------------------------


def write_run(
    root: Path,
    name: str,
    model: str,
    y: np.ndarray,
    o: np.ndarray,
    status: str = "complete",
    methods: list[str] = METHODS,
    **config,
) -> Path:
    """A run folder as camexp run leaves it: run.json (resolved config, status) and per_image.csv."""
    cfg = ExperimentConfig(
        name=name,
        dataset={"kind": "folder", "root": f"/data/{config.pop('data', 'photos')}"},
        model={"name": model},
        methods=methods,
        **config,
    )
    run = root / name
    run.mkdir(parents=True)
    (run / RUN_JSON).write_text(json.dumps({"config": cfg.model_dump(mode="json"), "status": status}))
    append_records(run / RECORDS, records(y, o, methods), COLUMNS)
    return run


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_leaderboard_ranks_complete_runs_and_marks_incomplete_ones(tmp_path: Path):
    y, o = synthetic(5)
    write_run(tmp_path, "a", "resnet18", y, o)  # drop order: cam < gradcam++ < gradcam (shift 0.6, 0.75, 0.9)
    write_run(tmp_path, "b", "vgg16", y, o[:, [1, 0, 2]])  # gradcam and gradcam++ swap places
    write_run(tmp_path, "c", "vgg16", y, o[:, ::-1], data="other")
    write_run(tmp_path, "d", "vgg16", y[:10], o[:10, ::-1], status="running")  # would reverse the order
    res = invoke("table", tmp_path, "--leaderboard", "--bootstrap", 200)
    assert res.exit_code == 0, res.output
    board = pd.read_csv(tmp_path / "leaderboard.csv").set_index("method")
    drops = {run: summarize_run_dir(tmp_path / run).main.loc["Average drop % (lower is better)"] for run in "abcd"}
    expected_rank = pd.concat([drops[r].rank() for r in "abc"], axis=1).mean(axis=1)
    pd.testing.assert_series_equal(board["mean_rank"], expected_rank.loc[board.index], check_names=False, atol=1e-4)
    assert list(board.index) == list(expected_rank.sort_values().index)
    assert (board["runs_ranked"] == 3).all()
    incomplete = "vgg16 × photos (d) (incomplete: stopped before the end, 10 images)"  # 'running', but no lock
    assert board[incomplete].to_dict() == pytest.approx(drops["d"].to_dict())
    assert f"{incomplete} rank" not in board.columns and "resnet18 × photos rank" in board.columns
    assert "vgg16 × other" in board.columns and "vgg16 × photos (b)" in board.columns
    md = (tmp_path / "leaderboard.md").read_text()
    assert "avg_drop (lower is better)" in md and "incomplete: stopped" in md and "200 resamples" in md
    assert not (tmp_path / "a" / "summary_long.csv").exists()  # a report never writes into run folders


def test_leaderboard_tells_a_killed_run_from_a_running_one_by_its_lock(tmp_path: Path):
    """kill -9 leaves run.json saying 'running' and a lock whose process is gone: the leaderboard says it
    stopped and how to resume it, as `camexp table` does; a run holding its lock is running now."""
    y, o = synthetic(5)
    write_run(tmp_path, "a", "resnet18", y, o)
    killed = write_run(tmp_path, "killed", "vgg16", y[:10], o[:10], status="running")
    meta = json.loads((killed / RUN_JSON).read_text())
    (killed / RUN_JSON).write_text(json.dumps({**meta, "config_path": "configs/killed.yaml"}))
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid whose process has exited (and a start time no later process with that pid has)
    dead = Owner(gone.pid, socket.gethostname(), "2026-01-01T00:00:00+00:00", process_start="0")
    (killed / LOCK).write_text(json.dumps(asdict(dead)))
    live = write_run(tmp_path, "live", "vit", y[:10], o[:10], status="running")
    with hold(live):
        md, frame, _ = leaderboard(tmp_path, stats={"bootstrap": 100})
        table = summarize_run_dir(killed).status
    killed_col = "vgg16 × photos (incomplete: stopped before the end, 10 images)"
    live_col = "vit × photos (incomplete: running now, 10 images)"
    assert {killed_col, live_col} <= set(frame.columns)
    assert "incomplete: running," not in md  # the state a killed run's run.json still claims
    assert table.startswith("Incomplete run (stopped before the end; resume it with `camexp run configs/killed.yaml`)")
    assert f"- {killed_col}: {table}" in md  # the same words as `camexp table`
    assert f"- {live_col}: Incomplete run (running now: pid {os.getpid()} on host " in md


def test_leaderboard_of_another_metric_and_its_errors(tmp_path: Path):
    y, o = synthetic(6)
    write_run(tmp_path, "a", "resnet18", y, o)
    res = invoke("table", tmp_path, "--leaderboard", "--metric", "best_share", "--format", "csv")
    assert res.exit_code == 0, res.output
    assert "mean_rank" in res.stdout
    # a plug-in's per-image values: camexp cannot know their direction (deletion, a built-in one, it knows)
    long = pd.DataFrame(
        {"image_id": ["img000", "img001"], "method": ["cam", "cam"], "metric": "my_score", "value": [0.1, 0.2]}
    )
    long.to_csv(tmp_path / "a" / PER_IMAGE_METRICS, index=False)
    res = invoke("table", tmp_path, "--leaderboard", "--metric", "my_score")
    assert res.exit_code == 2 and "lower or higher is better" in res.output
    res = invoke("table", tmp_path, "--leaderboard", "--metric", "nope")
    assert res.exit_code == 2 and "available" in res.output and "avg_drop" in res.output
    res = invoke("table", tmp_path, "--bootstrap", 10)
    assert res.exit_code == 2 and "at least 100 resamples" in res.output
    res = invoke("table", tmp_path, "--level", 1.5)
    assert res.exit_code == 2 and "stats.level" in res.output


def test_the_leaderboard_ranks_the_runs_first_rankable_metric_by_default(tmp_path: Path):
    y, o = synthetic(6)
    write_run(tmp_path, "a", "resnet18", y, o, metrics=["increase", "avg_drop"])
    md, frame, _ = leaderboard(tmp_path, stats={"bootstrap": 100})
    increase = summarize_run_dir(tmp_path / "a").main.loc["% increase in confidence (higher is better)"]
    assert "increase (higher is better)" in md
    assert frame.set_index("method")["resnet18 × photos"].to_dict() == pytest.approx(increase.to_dict())


def test_per_image_metrics_file_adds_rows_not_code(tmp_path: Path):
    """A further metric's per-image values in long form get the main-table row, the interval and the paired
    comparisons of any other metric."""
    y, o = synthetic(7)
    run = write_run(tmp_path, "a", "resnet18", y, o)
    g = np.random.default_rng(0)
    values = g.uniform(0, 1, (30, 3)) + np.array([0.0, 0.1, 0.3])
    ids = [f"img{i:03d}" for i in range(30)]
    long = pd.DataFrame(
        {"image_id": np.repeat(ids, 3), "method": METHODS * 30, "metric": "my_auc", "value": values.ravel()}
    )
    long.iloc[::-1].to_csv(run / PER_IMAGE_METRICS, index=False)
    s = summarize_run_dir(run, {"bootstrap": 300})
    per = s.stats.per_method.set_index(["metric", "method"]).loc["my_auc"]
    for j, m in enumerate(METHODS):
        assert per.at[m, "value"] == pytest.approx(values[:, j].mean())
        assert (per.at[m, "lo"], per.at[m, "hi"]) == pytest.approx(loop_interval(values[:, j], 300, 0), rel=1e-10)
    assert s.main.loc["my_auc"].to_numpy() == pytest.approx(values.mean(0))
    diff = s.stats.pairwise[(s.stats.pairwise.metric == "my_auc") & (s.stats.pairwise.method_a == "gradcam")]
    assert diff.set_index("method_b").at["cam", "value"] == pytest.approx(values[:, 0].mean() - values[:, 2].mean())
    res = invoke("table", tmp_path, "--format", "csv", "--bootstrap", 300)
    assert res.exit_code == 0, res.output
    report = pd.read_csv(tmp_path / "report.csv")
    row = report[(report.metric == "my_auc") & (report.method == "cam")].iloc[0]
    assert (row.lo, row.hi) == pytest.approx((per.at["cam", "lo"], per.at["cam", "hi"]), abs=1e-4)
    pd.concat([long, long.iloc[:1]]).to_csv(run / PER_IMAGE_METRICS, index=False)
    res = invoke("table", tmp_path)
    # a folder that cannot be reported is skipped with the reason, the rest reported (issue "Nothing silently wrong")
    assert res.exit_code == 0 and "skipped" in res.output
    assert PER_IMAGE_METRICS in res.output and "two values for image" in res.output


def test_a_run_with_a_named_method_setting_is_summarised_by_its_record_name(tmp_path: Path):
    y, o = synthetic(10)
    run = write_run(tmp_path, "spec", "resnet18", y, o, methods=["gradcam", "gradcam++", "cam"])
    meta = json.loads((run / RUN_JSON).read_text())
    meta["config"]["methods"][2] = {"name": "cam", "method": "cam", "params": {}}  # as run.json stores a spec
    (run / RUN_JSON).write_text(json.dumps(meta))
    s = summarize_run_dir(run, {"bootstrap": 100})
    assert list(s.main.columns) == METHODS and set(s.stats.per_method.method) == set(METHODS)


def test_bootstrap_zero_turns_intervals_off_but_keeps_the_sign_test():
    y, o = synthetic(8)
    s = summarize(
        "r", None, records(y, o), METHODS, ["avg_drop", "win"], MetricParams(), stats=StatsConfig(bootstrap=0)
    )
    assert s.stats.per_method[["lo", "hi"]].isna().all(axis=None)
    assert s.stats.pairwise[s.stats.pairwise.metric == "win"].p_value.notna().all()
    assert "Intervals are off" in to_markdown(s)


def test_stats_settings_are_not_part_of_the_fingerprint():
    base = dict(name="x", dataset={"root": "/d"}, model={"name": "resnet18"})
    assert (
        ExperimentConfig(**base).fingerprint()
        == ExperimentConfig(**base, stats={"bootstrap": 200, "level": 0.9, "seed": 3}).fingerprint()
    )


@pytest.mark.slow
def test_real_runs_write_intervals_and_make_a_leaderboard(tmp_path: Path, photo_dir: Path):
    """Two real backbones (Lite0 with ImageNet weights, ResNet-18 with random ones) on two photographs."""
    for name, model, weights in (
        ("lite0", "tf_efficientnet_lite0", "efficientnet-lite0-package"),
        ("rn18", "resnet18", "random"),
    ):
        cfg = {
            "name": name,
            "dataset": {"kind": "folder", "root": str(photo_dir), "limit": 2},
            "model": {"name": model, "weights": weights},
            "methods": ["gradcam", "gradcam++", "cam"],
            "runtime": {"device": "cpu", "batch_size": 2},
            "output": {"dir": str(tmp_path / "res" / name)},
            "stats": {"bootstrap": 200, "seed": 1},
        }
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        res = invoke("run", tmp_path / f"{name}.yaml", "--no-progress")
        assert res.exit_code == 0, res.output
        assert "[" in res.output  # the printed table carries intervals
    run = tmp_path / "res" / "lite0"
    assert json.loads((run / RUN_JSON).read_text())["config"]["stats"] == {"bootstrap": 200, "level": 0.95, "seed": 1}
    summary = pd.read_csv(run / "summary.csv", index_col=0)
    long = pd.read_csv(run / "summary_long.csv").set_index(["metric", "method"])
    for m in ("gradcam", "gradcam++", "cam"):
        assert long.at[("avg_drop", m), "value"] == pytest.approx(
            summary.at["Average drop % (lower is better)", m], abs=1e-4
        )
        assert long.at[("avg_drop", m), "n"] == 2
    rec = pd.read_csv(run / RECORDS).pivot(index="index", columns="method", values="o")
    pw = pd.read_csv(run / "pairwise.csv")
    win = pw[(pw.metric == "win") & (pw.method_a == "gradcam") & (pw.method_b == "cam")].iloc[0]
    wins, losses = int((rec.gradcam > rec.cam).sum()), int((rec.gradcam < rec.cam).sum())
    assert win.n_untied == wins + losses
    if wins + losses:
        assert win.p_value == pytest.approx(binomtest(wins, wins + losses).pvalue, rel=1e-12)
    res = invoke("table", tmp_path / "res", "--leaderboard")
    assert res.exit_code == 0, res.output
    board = pd.read_csv(tmp_path / "res" / "leaderboard.csv").set_index("method")
    lite0, rn18 = f"tf_efficientnet_lite0 × {photo_dir.name}", f"resnet18 × {photo_dir.name}"
    assert {lite0, rn18, f"{lite0} rank", f"{rn18} rank"} <= set(board.columns)
    assert board[lite0].to_dict() == pytest.approx(long.xs("avg_drop")["value"].to_dict(), abs=1e-4)
    assert (board["runs_ranked"] == 2).all() and board["mean_rank"].is_monotonic_increasing


def test_mloc_rows_get_cluster_bootstrap_intervals(tmp_path: Path):
    """mLoc is a mean over (image, class) pairs: its interval resamples images with all their pairs."""
    from camexp.analyses.localization import COLUMNS as MLOC_COLUMNS
    from camexp.analyses.localization import MLOC_CSV

    y, o = synthetic(9, n=12)
    run = write_run(tmp_path, "voc", "vgg16", y, o, analyses=["mloc"])
    g = np.random.default_rng(1)
    rows = [
        {"index": i, "image_id": f"img{i:03d}", "class": c, "rank": c, "method": m, "delta": d, "loc": g.uniform(0, 1)}
        for i in range(12)
        for c in range(i % 3)
        for m in METHODS
        for d in (0.0, 0.5)
    ]  # 0, 1 or 2 pairs
    pd.DataFrame(rows, columns=MLOC_COLUMNS).to_csv(run / MLOC_CSV, index=False)
    s = summarize_run_dir(run, {"bootstrap": 250})
    per = s.stats.per_method.set_index(["metric", "method"])
    loc = pd.DataFrame(rows)
    for d in (0.0, 0.5):
        sub = loc[(loc.method == "gradcam++") & (loc.delta == d)]
        key = ("mLoc δ=0" if d == 0 else "mLoc δ=0.5", "gradcam++")
        assert per.at[key, "value"] == pytest.approx(sub["loc"].mean())
        assert per.at[key, "value"] == pytest.approx(s.main.at[key[0], "gradcam++"])  # = the analysis' own row
        assert per.at[key, "n"] == 8  # images with at least one pair
        groups = [grp["loc"].to_numpy() for _, grp in sorted(sub.groupby("image_id"))]
        rng = np.random.default_rng(0)
        ref = [np.concatenate([groups[i] for i in rng.integers(0, 8, 8)]).mean() for _ in range(250)]
        assert (per.at[key, "lo"], per.at[key, "hi"]) == pytest.approx(
            tuple(np.percentile(ref, [2.5, 97.5])), rel=1e-10
        )
    assert "**" in next(line for line in to_markdown(s).splitlines() if line.startswith("| mLoc δ=0 "))


def test_the_field_metrics_get_intervals_from_per_image_metrics(tmp_path: Path, photo_dir: Path):
    """insertion / deletion / kept-fraction drop (issue 11) written per image get the same bootstrap as the
    record metrics: the interval of each row brackets the row's own value, computed from the same file."""
    from camexp.experiment import load_experiment
    from camexp.runner import run_experiment

    cfg = {
        "name": "field",
        "dataset": {"kind": "folder", "root": str(photo_dir), "limit": 4},
        "model": {"name": "resnet18", "weights": "random"},
        "methods": ["gradcam", "gradcam++"],
        "metrics": ["avg_drop", "insertion", "deletion", "avg_drop@keep"],
        "perturbation": {"steps": 4},
        "stats": {"bootstrap": 200},
        "runtime": {"device": "cpu"},
        "output": {"dir": str(tmp_path / "out")},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    summary = run_experiment(load_experiment(path), progress=False)
    long = pd.read_csv(tmp_path / "out" / "summary_long.csv").set_index(["metric", "method"])
    for key in ("insertion", "deletion", "avg_drop@keep"):
        label = label_of(key)
        for m in ("gradcam", "gradcam++"):
            row = long.loc[(key, m)]
            assert row.value == pytest.approx(summary.main.at[label, m], rel=1e-9) and row.n == 4
            assert row.lo <= row.value <= row.hi
    assert "insertion" not in summary.main.index  # one row per metric: the labelled one carries the interval
    pairs = pd.read_csv(tmp_path / "out" / "pairwise.csv")
    assert {"insertion", "deletion"} <= set(pairs.metric)
