"""One metric entry owns its whole story: a plug-in per-batch metric with settings, named by import path,
gets its settings validated, its interval in summary_long.csv and its leaderboard rank with no edit anywhere
else in camexp; a setting that cannot work with the model's input stops the run before the first batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from plugins.my_metric import centre_shares
from typer.testing import CliRunner

from camexp.cli import app
from camexp.report.leaderboard import leaderboard

PLUGIN = "plugins.my_metric:centre_mass"


def _config(tmp_path: Path, photo_dir: Path, name: str, **extra: Any) -> Path:
    cfg = {
        "name": name,
        "dataset": {"kind": "folder", "root": str(photo_dir), "limit": 4},
        "model": {"name": "resnet18", "weights": "random"},
        "methods": ["gradcam", "random"],
        "metrics": ["avg_drop", PLUGIN],
        "stats": {"bootstrap": 200},
        "runtime": {"device": "cpu", "batch_size": 2},
        "output": {"dir": str(tmp_path / "runs" / name)},
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(path: Path) -> Any:
    return CliRunner().invoke(app, ["run", str(path), "--no-progress"])


def test_centre_shares_by_hand() -> None:
    maps = torch.zeros(2, 4, 4)
    maps[0, 1:3, 1:3] = 1.0  # all mass in the central 2x2 square
    maps[1, 0, 0], maps[1, 2, 2] = 3.0, 1.0  # a quarter of it there
    assert centre_shares(maps, 0.5).tolist() == [1.0, 0.25]
    assert centre_shares(torch.zeros(1, 4, 4), 0.5).tolist() == [0.0]


def test_plugin_metric_with_settings_gets_an_interval_and_a_rank(tmp_path: Path, photo_dir: Path) -> None:
    res = _run(_config(tmp_path, photo_dir, "centre", settings={"centre": {"fraction": 0.5}}))
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "centre"
    values = pd.read_csv(out / "per_image_metrics.csv")
    values = values[values["metric"] == "centre_mass"]
    assert len(values) == 8  # 4 images x 2 methods
    long = pd.read_csv(out / "summary_long.csv").set_index(["metric", "method"])
    for method in ("gradcam", "random"):
        row = long.loc[("centre_mass", method)]
        expected = 100 * values[values["method"] == method]["value"].mean()
        assert row.value == pytest.approx(expected, rel=1e-9) and row.n == 4 and row.lo <= row.value <= row.hi
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    shown = summary.loc["Centre mass % (higher is better)", "random"]
    assert shown == pytest.approx(long.loc[("centre_mass", "random")].value, abs=1e-4)  # summary.csv: 4 decimals
    _, frame, _ = leaderboard(tmp_path / "runs", "centre_mass")
    ranks = frame.set_index("method")["mean_rank"]
    best = long.loc["centre_mass"]["value"].idxmax()  # higher is better, as the entry's row says
    assert ranks[best] == 1.0 and ranks.sum() == 3.0
    # the setting reaches the metric: a square as large as the image holds all of a random map's mass
    res = _run(
        _config(
            tmp_path,
            photo_dir,
            "whole",
            methods=["random"],
            metrics=[PLUGIN],
            stats={"bootstrap": 0},
            settings={"centre": {"fraction": 1.0}},
        )
    )
    assert res.exit_code == 0, res.output
    whole = pd.read_csv(tmp_path / "runs" / "whole" / "per_image_metrics.csv")
    assert whole["value"].tolist() == pytest.approx([1.0] * 4)


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            {"settings": {"centre": {"fraction": 2}}},
            "settings.centre.fraction: Input should be less than or equal to 1",
        ),
        (
            {"settings": {"center": {"fraction": 0.5}}},
            "settings.center: no metric or analysis reads settings under 'center'",
        ),
        (
            {"perturbation": {"steps": 1_000_000}, "metrics": ["deletion"]},
            "perturbation.steps: 1000000 steps exceed the 50176 pixels",
        ),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, photo_dir: Path, extra: dict, message: str) -> None:
    res = _run(_config(tmp_path, photo_dir, "bad", **extra))
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
