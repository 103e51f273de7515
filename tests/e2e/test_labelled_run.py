"""A labelled run on the real ILSVRC2012 images (Kaggle CSV labels): true targets, the confident-image
subset and the relative-performance threshold, checked against an unfiltered run of the same images."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from camexp.experiment import load_experiment as load_config
from camexp.runner import run_experiment

pytestmark = pytest.mark.slow


def run(tmp_path: Path, shared_data: Path, name: str, **extra) -> Path:
    cfg = {
        "name": name,
        "dataset": {"kind": "imagenet_val", "root": str(shared_data / "ilsvrc2012-val-subset"), "limit": 8},
        "model": {"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"},
        "methods": ["gradcam", "gradcam++"],
        "metrics": ["avg_drop", "relperf"],
        "runtime": {"device": "cpu", "batch_size": 4},
        "output": {"dir": str(tmp_path / name)},
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_experiment(load_config(path), progress=False)
    return tmp_path / name


def test_true_target_subset_and_relperf_threshold(tmp_path: Path, shared_data: Path):
    full = pd.read_csv(run(tmp_path, shared_data, "full", target="true") / "per_image.csv", dtype={"image_id": str})
    assert (full["target"] == full["label"]).all()
    first = full.drop_duplicates("index").set_index("image_id")
    assert first.loc["ILSVRC2012_val_00000001", "label"] == 65  # sea snake, sorted-wnid index

    confident = set(first.index[first["p_true"] > 0.3])
    assert 0 < len(confident) < len(first)  # the threshold really selects
    out = run(
        tmp_path,
        shared_data,
        "subset",
        target="true",
        dataset={
            "kind": "imagenet_val",
            "root": str(shared_data / "ilsvrc2012-val-subset"),
            "limit": 8,
            "min_true_prob": 0.3,
        },
    )
    sub = pd.read_csv(out / "per_image.csv", dtype={"image_id": str})
    assert set(sub["image_id"]) == confident
    meta = json.loads((out / "run.json").read_text())
    assert meta["dataset"]["min_true_prob"] == {"threshold": 0.3, "passed": len(confident)}

    out = run(tmp_path, shared_data, "thresh", target="true", relperf_min_true_prob=0.3)
    relperf = pd.read_csv(out / "relperf.csv", index_col=0)
    assert relperf.loc["gradcam vs gradcam++", "images"] == len(confident)
    assert f"{len(confident)} of 8 images" in (out / "summary.md").read_text()
