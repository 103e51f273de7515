"""Scale-out: two CPU processes under torchrun (gloo) record exactly what one process records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from camexp.distributed import Ranks
from camexp.experiment import load_experiment as load_config
from camexp.lock import LOCK
from camexp.results import RECORDS, RUN_JSON, merge_parts, part_path, parts
from camexp.runner import run_experiment

N = 15  # odd: the two shards differ in size and each ends in a partial batch


def test_shards_are_whole_batches_disjoint_and_covering():
    items = list(range(11))
    shards = [Ranks(rank=r, world=3).shard(items, batch_size=2) for r in range(3)]
    assert shards == [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 10]]
    assert Ranks().shard(items, batch_size=4) == items


def test_merge_parts_folds_rank_files_into_one(tmp_path):
    bad = tmp_path / "bad_images.txt"
    bad.write_text("a\nkilled-mid-li")
    part_path(bad, 0).write_text("b\n")
    part_path(bad, 1).write_text("c\nd-partial")
    merge_parts(bad)
    assert bad.read_text().split() == ["a", "b", "c"] and not parts(bad)


def _config(tmp_path: Path, images: Path) -> Path:
    path = tmp_path / "ilsvrc.yaml"
    path.write_text(f"""
name: dist
dataset: {{kind: folder, root: {images}, limit: {N}}}
model: {{name: tf_efficientnet_lite0, weights: efficientnet-lite0-package}}
methods: [gradcam, gradcam+, gradcam++]
metrics: [avg_drop, increase, win]
runtime: {{device: cpu, batch_size: 4}}
""")
    return path


@contextmanager
def one_thread() -> Iterator[None]:
    """As each rank runs: oneDNN picks kernels by thread count, which moves confidences by ~1e-6."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def torchrun_two_ranks(cfg_path: Path, out: Path, fresh: bool = True) -> None:
    """`torchrun --nproc_per_node=2 -m camexp run` on CPU (gloo), one thread per rank; `fresh=False` resumes."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "camexp",
            "run",
            str(cfg_path),
            "--fresh" if fresh else "--resume",
            "--no-progress",
            "--out",
            str(out),
        ],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _assert_same_records(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    for col in ("index", "image_id", "method", "target", "label", "pred", "constant_map"):
        assert a[col].tolist() == b[col].tolist(), col
    for col in ("y", "o", "p_true"):  # p_true is NaN without labels
        assert np.allclose(a[col], b[col], rtol=0, atol=1e-6, equal_nan=True), col


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process_and_resume(tmp_path: Path, ilsvrc_images: Path):
    cfg_path = _config(tmp_path, ilsvrc_images)
    dist_out, single_out = tmp_path / "dist", tmp_path / "single"
    torchrun_two_ranks(cfg_path, dist_out)
    merged = pd.read_csv(dist_out / RECORDS, dtype={"image_id": str})
    meta = json.loads((dist_out / RUN_JSON).read_text())
    assert meta["world_size"] == 2 and meta["backend"] == "gloo" and meta["status"] == "complete"
    assert meta["images_processed"] == N and meta["amp"] == "off"
    assert not parts(dist_out / RECORDS)
    assert not (dist_out / LOCK).exists()  # rank 0 held the folder for the job and released it
    assert sorted(merged.groupby("index").size().items()) == [(i, 3) for i in range(N)]  # every image once

    with one_thread():
        run_experiment(load_config(cfg_path, {"output.dir": str(single_out)}), fresh=True, progress=False)
    single = pd.read_csv(single_out / RECORDS, dtype={"image_id": str})
    _assert_same_records(merged, single)

    # A killed distributed run leaves per-rank files; a resume (here single-process) merges them and does
    # only the rest.
    rows = 3 * 5
    merged.iloc[:rows].to_csv(dist_out / RECORDS, index=False, float_format="%.17g")
    merged.iloc[rows : rows + 6].to_csv(part_path(dist_out / RECORDS, 1), index=False, float_format="%.17g")
    with one_thread():
        run_experiment(load_config(cfg_path, {"output.dir": str(dist_out)}), progress=False, distributed=False)
    meta = json.loads((dist_out / RUN_JSON).read_text())
    assert meta["images_resumed"] == 7 and meta["images_processed"] == N - 7
    _assert_same_records(pd.read_csv(dist_out / RECORDS, dtype={"image_id": str}), single)


def _all_config(tmp_path: Path, shared: Path) -> Path:
    """Every per-batch metric and every analysis with per-batch files, small settings (4 ILSVRC images with
    their boxes, batches of 2: one batch per rank)."""
    path = tmp_path / "all.yaml"
    root = shared / "ilsvrc2012-val-subset"
    path.write_text(f"""
name: dist_all
dataset: {{kind: imagenet_val, root: {root / "images"}, annotations: {root / "LOC_val_solution.csv"}, limit: 4}}
model: {{name: tf_efficientnet_lite0, weights: efficientnet-lite0-package}}
methods: [gradcam, gradcam++]
metrics: [avg_drop, insertion, deletion, avg_drop@keep, pointing_game, energy_pointing, road]
perturbation: {{steps: 3, curves: true}}
road: {{percentiles: [10, 30]}}
analyses: [mloc, area_curve, alpha_stats]
runtime: {{device: cpu, batch_size: 2}}
""")
    return path


def _sorted(path: Path, key: list[str]) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image_id": str}).sort_values(key, kind="stable").reset_index(drop=True)


@pytest.mark.slow
def test_torchrun_runs_per_batch_metrics_and_analyses_like_one_process(tmp_path: Path, shared_data: Path):
    cfg_path = _all_config(tmp_path, shared_data)
    dist_out, single_out = tmp_path / "dist", tmp_path / "single"
    torchrun_two_ranks(cfg_path, dist_out)
    with one_thread():
        single = run_experiment(load_config(cfg_path, {"output.dir": str(single_out)}), fresh=True, progress=False)
    assert not list(dist_out.glob("*.rank*"))
    metrics = [pd.read_csv(d / "per_image_metrics.csv", dtype={"image_id": str}) for d in (dist_out, single_out)]
    assert metrics[0][["index", "method", "metric", "class"]].equals(metrics[1][["index", "method", "metric", "class"]])
    assert set(metrics[0]["metric"]) >= {
        "insertion",
        "deletion",
        "avg_drop@keep",
        "pointing_game",
        "energy_pointing",
        "road",
        "road_morf",
        "road_lerf",
    }
    assert np.allclose(metrics[0]["value"], metrics[1]["value"], rtol=0, atol=1e-6, equal_nan=True)
    curves = [pd.read_csv(d / "per_image_curves.csv") for d in (dist_out, single_out)]
    assert curves[0][["index", "method", "metric"]].equals(curves[1][["index", "method", "metric"]])
    for name, key, values in (
        ("mloc.csv", ["index", "class", "method", "delta"], ["loc"]),
        ("area_curve_per_image.csv", ["index", "method", "theta"], ["kept", "y", "o"]),
    ):
        a, b = _sorted(dist_out / name, key), _sorted(single_out / name, key)
        assert a[key].equals(b[key]) and np.allclose(a[values], b[values], rtol=0, atol=1e-6), name
    alpha = [json.loads((d / "alpha_stats.json").read_text()) for d in (dist_out, single_out)]
    assert alpha[0]["images"] == alpha[1]["images"] == 4
    assert {k: alpha[0][k] for k in ("total", "nonzero")} == {k: alpha[1][k] for k in ("total", "nonzero")}
    for k in ("share_near_half", "median", "min", "max"):
        assert alpha[0][k] == pytest.approx(alpha[1][k], rel=1e-4), k
    from camexp.report.tables import summarize_run_dir

    merged = summarize_run_dir(dist_out).main
    assert merged.index.tolist() == single.main.index.tolist()
    assert np.allclose(merged.to_numpy(float), single.main.to_numpy(float), rtol=0, atol=1e-4, equal_nan=True)


@pytest.mark.slow
def test_torchrun_runs_the_sanity_checks_like_one_process(tmp_path: Path, shared_data: Path):
    """MPRT and the random-logit test under two gloo ranks (one batch of 2 images each) write exactly the rows
    one process writes with the same one thread per process. (Their Spearman on randomised models moves by
    ~2e-4 between 1 and 2 threads: near-tied map values change rank, so the thread count must match.)"""
    path = tmp_path / "sanity.yaml"
    path.write_text(f"""
name: dist_sanity
dataset: {{kind: imagenet_val, root: {shared_data / "ilsvrc2012-val-subset"}, limit: 4}}
model: {{name: tf_efficientnet_lite0, weights: efficientnet-lite0-package, layer: blocks.6}}
methods: [gradcam, gradcam++]
analyses: [mprt, random_logit]
sanity: {{seed: 0, mprt_blocks: [classifier, blocks.3]}}
runtime: {{device: cpu, batch_size: 2}}
""")
    dist_out, single_out = tmp_path / "dist", tmp_path / "single"
    torchrun_two_ranks(path, dist_out)
    with one_thread():
        run_experiment(load_config(path, {"output.dir": str(single_out)}), fresh=True, progress=False)
    assert not list(dist_out.glob("*.rank*"))
    for name, key in (("mprt.csv", ["index", "method", "depth"]), ("random_logit.csv", ["index", "method"])):
        a, b = _sorted(dist_out / name, key), _sorted(single_out / name, key)
        assert len(a) == len(b) > 0 and a["index"].nunique() == 4, name
        numbers = [c for c in a.columns if a[c].dtype.kind == "f"]
        assert a.drop(columns=numbers).equals(b.drop(columns=numbers)), name
        assert np.allclose(a[numbers], b[numbers], rtol=0, atol=1e-9, equal_nan=True), name
    curves = [pd.read_csv(d / "mprt_curve.csv") for d in (dist_out, single_out)]
    assert curves[0].equals(curves[1])  # the means and their bootstrap intervals
