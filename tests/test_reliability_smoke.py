"""The reliability smoke config end to end on the shared ILSVRC2012 subset with Lite0's real weights (first
8 of its images): `camexp run`, then `camexp table --reliability`. Skipped when ../shared/data is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from camexp.cli import app

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
RANKED = {"avg_drop", "increase", "best_share", "deletion", "insertion", "energy_pointing", "sparseness", "complexity"}


def test_smoke_config_runs_and_its_reliability_table(shared_data: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "configs" / "reliability_smoke_lite0.yaml").read_text())
    cfg["dataset"]["root"] = str(shared_data / "ilsvrc2012-val-subset")
    cfg["output"] = {"dir": str(tmp_path / "runs" / cfg["name"])}
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["run", str(path), "--limit", "8", "--no-progress"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["table", str(tmp_path / "runs"), "--reliability", "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(tmp_path / "runs" / "reliability.csv")
    alpha = frame[frame.quantity == "krippendorff_alpha_ordinal"].set_index("subject")
    assert set(alpha.index) == RANKED and (alpha.drop("energy_pointing").n == 8).all()
    assert 0 < alpha.n["energy_pointing"] <= 8  # the images with exactly one box under half the image
    assert alpha.value.dropna().between(-1, 1).all()
    ranks = frame[frame.quantity == "rank_by_mean"]
    assert set(ranks.other) == set(cfg["methods"]) and ranks.value.between(1, len(cfg["methods"])).all()
    tau = frame[frame.quantity == "kendall_tau"]
    diagonal = tau[tau.subject == tau.other].value.dropna()
    assert np.allclose(diagonal, 1.0)
    assert {"faithfulness", "localization", "complexity"} == set(
        frame[frame.quantity == "criterion_rank_by_mean"].subject
    )
    assert (tmp_path / "runs" / f"reliability_{cfg['name']}_tau.png").is_file()
