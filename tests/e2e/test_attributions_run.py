"""The reference attributions through `camexp run` and `camexp report table` on real ILSVRC2012 images with Lite0:
every per-batch metric, kept maps and the report read them as any map, with no special case."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from camexp.cli import app
from camexp.metrics import METRICS
from camexp.results import read_maps

pytestmark = pytest.mark.slow
cli = CliRunner()

METHODS = [
    "gradcam",
    "gradient",
    "gradient_x_input",
    {"name": "ig", "method": "integrated_gradients", "params": {"steps": 2, "baseline": "blur"}},
    {"name": "eg", "method": "expected_gradients", "params": {"samples": 2}},
    {"name": "occ", "method": "occlusion", "params": {"window": 112, "stride": 112}},
    "guided_backprop",
    "deconvnet",
    {"name": "smoothgrad", "method": "gradient", "smooth": {"n": 2}},
    {"name": "vargrad-gradcam", "method": "gradcam", "smooth": {"n": 2, "kind": "var"}},
]
NAMES = [m if isinstance(m, str) else m["name"] for m in METHODS]


def test_attributions_run_with_every_batch_metric_kept_maps_and_the_report(tmp_path: Path, shared_data: Path):
    # camexp's own: in one pytest process the registry also holds the plug-ins other tests resolved
    batch_metrics = [name for name, entry in METRICS.items() if entry.source == "batch" and ":" not in name]
    cfg = {
        "name": "attributions",
        "dataset": {"kind": "imagenet_val", "root": str(shared_data / "ilsvrc2012-val-subset"), "limit": 2},
        "model": {"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"},
        "methods": METHODS,
        "target": "true",
        "metrics": ["avg_drop", "increase", "win", *batch_metrics],
        "perturbation": {"steps": 4},
        "road": {"percentiles": [50]},
        "runtime": {"device": "cpu", "batch_size": 2},
        "output": {"dir": str(tmp_path / "runs" / "attributions"), "maps": True},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = cli.invoke(app, ["run", str(path), "--no-progress"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "attributions"
    rec = pd.read_csv(out / "per_image.csv")
    assert list(dict.fromkeys(rec["method"])) == NAMES and rec["o"].between(0, 1).all()
    metrics = pd.read_csv(out / "per_image_metrics.csv")
    assert set(metrics["method"]) == set(NAMES)
    assert metrics.groupby("method")["metric"].nunique().min() == metrics["metric"].nunique()  # every metric, each
    kept = read_maps(out).groupby("method")["map"].agg(lambda ms: {m.shape for m in ms}).to_dict()
    pixel = set(NAMES) - {"gradcam", "vargrad-gradcam"}
    assert all(kept[n] == {(224, 224)} for n in pixel) and kept["gradcam"] == kept["vargrad-gradcam"] != {(224, 224)}
    meta = json.loads((out / "run.json").read_text())
    assert meta["methods"]["gradient"]["params"] == {"reduce": "max_abs", "smoothing": 0.0}
    assert meta["methods"]["smoothgrad"]["params"]["smooth"] == {"n": 2, "sigma": 0.15, "kind": "mean", "seed": 0}
    assert meta["method_counts"]["ig"] == {"forwards": 4, "backwards": 4}

    res = cli.invoke(app, ["report", "table", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    report = (tmp_path / "runs" / "report.md").read_text()
    assert all(name in report for name in NAMES)
