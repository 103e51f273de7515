"""The issue-30 metrics through `camexp run`: a bad setting is one line and exit 2 before the first image; a run
writes one value per image and method for each and a summary row with its direction."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.metrics.test_metric_contract import _config, _run

NEW = ["avg_gain", "faithfulness_correlation", "irof", "infidelity", "effective_complexity", "mufidelity"]


@pytest.mark.parametrize(
    ("metric", "settings", "message"),
    [
        ("faithfulness_correlation", {"subsets": 1}, "settings.faithfulness_correlation.subsets: Input should be"),
        ("faithfulness_correlation", {"subset_size": 50176}, "settings.faithfulness_correlation.subset_size: 50176"),
        ("faithfulness_correlation", {"baseline": [2, 0, 0]}, "settings.faithfulness_correlation.baseline"),
        ("irof", {"segments": 1}, "settings.irof.segments: Input should be greater than or equal to 2"),
        ("infidelity", {"noise": 0}, "settings.infidelity.noise: Input should be greater than 0"),
        ("effective_complexity", {"eps": 1.5}, "settings.effective_complexity.eps: Input should be less than 1"),
        ("irof", {"segmnets": 10}, "settings.irof.segmnets: unknown key"),
        ("mufidelity", {"subset_percent": 1.0}, "settings.mufidelity.subset_percent: Input should be less than 1"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(
    tmp_path: Path, photo_dir: Path, metric: str, settings: dict, message: str
) -> None:
    res = _run(_config(tmp_path, photo_dir, "bad", metrics=[metric], settings={metric: settings}))
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output and not (tmp_path / "runs" / "bad" / "per_image.csv").exists()


@pytest.mark.slow
def test_a_run_writes_every_new_metric(tmp_path: Path, photo_dir: Path) -> None:
    settings = {
        "faithfulness_correlation": {"subsets": 4, "subset_size": 500},
        "irof": {"segments": 4},
        "infidelity": {"samples": 3},
        "mufidelity": {"samples": 4},
    }
    res = _run(_config(tmp_path, photo_dir, "new", metrics=["avg_drop", *NEW], settings=settings))
    assert res.exit_code == 0, res.output
    values = pd.read_csv(tmp_path / "runs" / "new" / "per_image_metrics.csv")
    counts = values.groupby("metric").size()
    assert all(counts[m] == 4 * 2 for m in NEW if m != "avg_gain"), counts
    summary = pd.read_csv(tmp_path / "runs" / "new" / "summary.csv", index_col=0)
    for label in (
        "Average gain % (higher is better)",
        "Faithfulness correlation (Pearson) (higher is better)",
        "IROF (area over the curve) (higher is better)",
        "Infidelity (lower is better)",
        "Effective complexity (pixels above ε) (lower is better)",
        "MuFidelity (Spearman) (higher is better)",
    ):
        assert summary.loc[label].notna().all(), label


def test_camexp_metrics_lists_each_new_metrics_cost() -> None:
    """`camexp metrics --format csv` has a cost-per-image column; the new metrics say their forwards."""
    import csv
    import io

    from typer.testing import CliRunner

    from camexp.cli import app

    rows = list(csv.reader(io.StringIO(CliRunner().invoke(app, ["metrics", "--format", "csv"]).output)))
    cost = {r[0]: r[rows[0].index("cost per image")] for r in rows[1:]}
    assert cost["faithfulness_correlation"].startswith("settings.faithfulness_correlation.subsets forwards")
    assert cost["irof"].startswith("M x L forwards") and cost["infidelity"].startswith("settings.infidelity.samples")
    assert cost["mufidelity"].startswith("settings.mufidelity.samples forwards")
    assert cost["avg_gain"] == "none (the records)" and cost["effective_complexity"] == "none (the maps)"
