"""configs/trust_smoke_lite0.yaml end to end (docs/guide/trustworthiness.md, "Are the methods and the metrics
trustworthy?"): one run of the sanity checks and the metrics on the shared ILSVRC2012 subset with Lite0's real weights,
then `camexp table --reliability` on its records. Skipped when ../shared/data is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from camexp.cli import app

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
RANKED = {"avg_drop", "increase", "best_share", "deletion", "insertion", "energy_pointing", "sparseness", "complexity"}


def test_trust_smoke_config_runs_end_to_end(tmp_path: Path, shared_data: Path) -> None:
    """The config as shipped (output redirected): every method gets the sanity rows, the controls hold (floors 1
    under randomisation and for another class, Eigen-CAM 1 for another class), the curve has the chosen depths,
    the figures are written, and the reliability table ranks every method under every metric and criterion."""
    raw = yaml.safe_load((REPO / "configs" / "trust_smoke_lite0.yaml").read_text())
    raw["dataset"]["root"] = str(shared_data / "ilsvrc2012-val-subset")
    runs = tmp_path / "runs"
    out = runs / raw["name"]
    raw["output"] = {"dir": str(out)}
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert res.exit_code == 0, res.output

    summary = pd.read_csv(out / "summary.csv", index_col=0)
    rows = [r for r in summary.index if r.startswith(("MPRT", "Random logit"))]
    # Eigen-CAM's map on the fully random Lite0 is constant on these images, so its correlations there are
    # undefined (NaN, docs/guide/trustworthiness.md "Sanity checks"; SSIM stays defined); every other cell has a value.
    assert len(rows) == 6 and summary.loc[rows].drop(columns="eigencam").notna().all().all(), summary.to_string()
    assert summary.loc[[r for r in rows if "SSIM" in r or "Random logit" in r], "eigencam"].notna().all()
    for m in ("random", "center"):
        assert np.allclose(summary.loc[rows, m], 1.0, atol=1e-9), m
    assert np.allclose(summary.loc[[r for r in rows if r.startswith("Random logit")], "eigencam"], 1.0, atol=1e-6)
    curve = pd.read_csv(out / "mprt_curve.csv")
    assert list(curve.drop_duplicates("depth")["block"]) == raw["sanity"]["mprt_blocks"]
    assert set(curve["method"]) == set(raw["methods"]) and not (curve["lo"] > curve["hi"]).any()
    assert all((out / f).is_file() for f in ("mprt.png", "mprt.pdf", "mprt_maps.png", "mprt_maps.pdf"))

    res = CliRunner().invoke(app, ["table", str(runs), "--reliability", "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(runs / "reliability.csv")
    alpha = frame[frame.quantity == "krippendorff_alpha_ordinal"].set_index("subject")
    n = raw["dataset"]["limit"]
    assert RANKED <= set(alpha.index) and (alpha.loc[sorted(RANKED - {"energy_pointing"})].n == n).all()
    assert 0 < alpha.n["energy_pointing"] <= n  # the images with exactly one box under half the image
    assert alpha.value.dropna().between(-1, 1).all()
    ranks = frame[frame.quantity == "rank_by_mean"]  # the real methods; the floors apart, with every method
    real = set(raw["methods"]) - {"random", "center"}
    assert set(ranks.other) == real and ranks.value.dropna().between(1, len(real)).all()
    assert set(frame[frame.quantity == "rank_by_mean_with_floors"].other) == set(raw["methods"])
    merged = frame[frame.quantity == "same_values_as"]  # a metric with the same numbers as another: counted once
    assert not set(merged.subject) & set(alpha.index) and set(merged.other) <= set(alpha.index)
    tau = frame[frame.quantity == "kendall_tau"]
    assert np.allclose(tau[tau.subject == tau.other].value.dropna(), 1.0)
    assert {"faithfulness", "localization", "complexity", "randomisation"} == set(
        frame[frame.quantity == "criterion_rank_by_mean"].subject
    )
    assert (runs / f"reliability_{raw['name']}_tau.png").is_file()
