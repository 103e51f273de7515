"""`camexp table --consistency` end to end: the smoke configs (EfficientNet-Lite0/1/2, real weights) on the shared
ILSVRC subset, compared; checked against the records (which pairs count), scipy (Spearman), a run compared with
a copy of itself (similarity 1), and the refusals."""

from __future__ import annotations

import json
import shutil
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import stats as st
from typer.testing import CliRunner

from camexp.cli import app
from camexp.consistency.similarity import FieldOfView, align, common_view
from camexp.data.transforms import InputSpec
from camexp.results import RECORDS, RUN_JSON, read_json, read_maps

pytestmark = pytest.mark.slow
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "consistency"
LIMIT = 24


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def smoke(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three smoke runs (first LIMIT images) in results/lite{0,1,2}; the shipped configs with the data's
    absolute path and a temporary output folder."""
    base = tmp_path_factory.mktemp("consistency")
    for n in range(3):
        cfg = yaml.safe_load((CONFIGS / f"smoke_lite{n}.yaml").read_text())
        assert cfg["output"]["maps"] is True and {"gradcam", "gradcam++"} <= set(cfg["methods"])
        cfg["dataset"]["root"] = str(shared_data / "ilsvrc2012-val-subset")
        cfg["output"]["dir"] = str(base / "results" / f"lite{n}")
        path = base / f"lite{n}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        result = invoke("run", path, "--limit", LIMIT, "--no-progress")
        assert result.exit_code == 0, result.output
    return base / "results"


def classes(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / RECORDS, dtype={"image_id": str}).drop_duplicates("image_id").set_index("image_id")


def test_smoke_set_compares_the_pairs_that_agree_on_the_true_class(smoke: Path, tmp_path: Path):
    result = invoke("table", smoke, "--consistency", "--bootstrap", 200, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "consistency.png").is_file() and (tmp_path / "consistency.md").is_file()
    pairs = pd.read_csv(tmp_path / "consistency_pairs.csv", dtype={"image_id": str})
    runs = {n: classes(smoke / f"lite{n}") for n in range(3)}
    expect = set()
    for a, b in combinations(range(3), 2):  # the filter, from the records
        ca, cb = runs[a], runs[b].loc[runs[a].index]
        ok = (ca["pred"] == cb["pred"]) & (ca["pred"] == ca["label"])
        expect |= {(i, f"lite{a}", f"lite{b}") for i in ca.index[ok]}
    assert set(zip(pairs["image_id"], pairs["run_a"], pairs["run_b"])) == expect
    assert f"{len(expect)} of {3 * LIMIT} (image, backbone pair)s counted" in result.output
    assert len(pairs) == 2 * len(expect)  # both methods on every counted pair
    assert pairs["spearman"].between(-1, 1).all() and pairs["top_iou"].between(0, 1).all()
    assert pairs["spearman"].mean() > 0.3  # three sizes of one family look at the same object
    table = pd.read_csv(tmp_path / "consistency.csv")
    for method, rows in pairs.groupby("method"):
        mean = table[(table["measure"] == "spearman") & (table["method_a"] == method) & table["method_b"].isna()]
        assert mean["value"].iloc[0] == pytest.approx(rows["spearman"].mean())
        assert mean["lo"].iloc[0] <= mean["value"].iloc[0] <= mean["hi"].iloc[0]
    # one pair recomputed: the maps read back, aligned, and scipy's Spearman
    row = pairs.iloc[0]
    maps = []
    for run in (row["run_a"], row["run_b"]):
        m = read_maps(smoke / run, [row["method"]], [row["image_id"]])
        assert m["target"].iloc[0] == row["class"]
        maps.append(m["map"].iloc[0])
    keeps = common_view(
        [FieldOfView.of_input(InputSpec.from_json(read_json(smoke / f"lite{n}" / RUN_JSON)["input"])) for n in range(3)]
    )
    assert keeps is not None
    index = {f"lite{n}": n for n in range(3)}
    aligned = [
        align(torch.as_tensor(m), keeps[index[r]], (260, 260)).numpy().ravel()
        for m, r in zip(maps, (row["run_a"], row["run_b"]))
    ]
    assert row["spearman"] == pytest.approx(st.spearmanr(*aligned).statistic, abs=1e-9)


def test_a_run_against_a_copy_of_itself_is_identical(smoke: Path, tmp_path: Path):
    for name in ("x", "y"):
        shutil.copytree(smoke / "lite1", tmp_path / "res" / name)
    result = invoke("table", tmp_path / "res", "--consistency", "--bootstrap", 0)
    assert result.exit_code == 0, result.output
    pairs = pd.read_csv(tmp_path / "res" / "consistency_pairs.csv", dtype={"image_id": str})
    right = classes(smoke / "lite1")
    assert set(pairs["image_id"]) == set(right.index[right["pred"] == right["label"]])
    assert np.allclose(pairs["spearman"], 1.0) and np.allclose(pairs["top_iou"], 1.0)


def test_refusals_are_one_line(smoke: Path, tmp_path: Path):
    shutil.copytree(smoke / "lite0", tmp_path / "one" / "lite0")
    result = invoke("report", "consistency", tmp_path / "one")
    assert result.exit_code == 2 and "needs two runs or more" in result.output
    assert len(result.output.strip().splitlines()) == 1
    shutil.copytree(smoke / "lite2", tmp_path / "one" / "squashed")
    meta = read_json(tmp_path / "one" / "squashed" / RUN_JSON)
    meta["input"]["crop_mode"] = "squash"
    (tmp_path / "one" / "squashed" / RUN_JSON).write_text(json.dumps(meta))
    result = invoke("report", "consistency", tmp_path / "one")
    assert result.exit_code == 2 and "differently shaped parts of each image" in " ".join(result.output.split())
    result = invoke("report", "consistency", smoke, "--top-q", 1.5)
    assert result.exit_code == 2 and "--top-q must be between 0 and 1" in result.output
