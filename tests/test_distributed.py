"""Scale-out: two CPU processes under torchrun (gloo) record exactly what one process records."""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from camexp.experiment import load_experiment as load_config
from camexp.distributed import Ranks
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
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    "-m", "camexp", "run", str(cfg_path), "--fresh", "--no-progress", "--out", str(dist_out)],
                   check=True, env=env, capture_output=True, text=True, timeout=300)
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
    merged.iloc[rows:rows + 6].to_csv(part_path(dist_out / RECORDS, 1), index=False, float_format="%.17g")
    with one_thread():
        run_experiment(load_config(cfg_path, {"output.dir": str(dist_out)}), progress=False, distributed=False)
    meta = json.loads((dist_out / RUN_JSON).read_text())
    assert meta["images_resumed"] == 7 and meta["images_processed"] == N - 7
    _assert_same_records(pd.read_csv(dist_out / RECORDS, dtype={"image_id": str}), single)
