"""End to end through the CLI: files, sane numbers, determinism, resume, and clear errors."""
from __future__ import annotations

import copy
import csv
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import camexp.runner as runner_mod
from camexp.cli import app
from camexp.experiment import load_experiment as load_config
from camexp.runner import run_experiment

pytestmark = pytest.mark.slow
cli = CliRunner()

BASE = {
    "name": "e2e",
    "model": {"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"},
    "methods": ["gradcam", "gradcam++", "cam"],
    "runtime": {"device": "cpu", "batch_size": 2},
}


def write_config(tmp_path: Path, root: Path, name: str = "cfg.yaml", **extra) -> Path:
    cfg = {**copy.deepcopy(BASE), "dataset": {"kind": "folder", "root": str(root)}, "output": {"dir": str(tmp_path / "out")}}
    for key, value in extra.items():
        node = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def invoke(*args: str):
    return cli.invoke(app, [str(a) for a in args])


def test_run_writes_a_complete_run_folder(tmp_path: Path, photo_dir: Path):
    cfg = write_config(tmp_path, photo_dir)
    res = invoke("run", cfg, "--no-progress")
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    rec = pd.read_csv(out / "per_image.csv")
    n = len(list(photo_dir.iterdir()))
    assert len(rec) == 3 * n and set(rec["method"]) == {"gradcam", "gradcam++", "cam"}
    assert rec["y"].between(0, 1).all() and rec["o"].between(0, 1).all() and (rec["y"] > 0).all()
    assert (rec.groupby("index")["y"].nunique() == 1).all()  # Y is per image, shared by the methods
    assert (rec["target"] == rec["pred"]).all()  # target: predicted
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert list(summary.columns) == ["gradcam", "gradcam++", "cam"]
    drop = summary.loc["Average drop % (lower is better)"]
    assert ((drop >= 0) & (drop <= 100)).all()
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete" and meta["images_recorded"] == n and meta["layer"] == "bn2"
    assert meta["versions"]["torch"] and meta["images_per_s"] > 0
    assert "Average drop" in (out / "summary.md").read_text()
    assert "Average drop" in res.output


def test_identical_runs_give_identical_records(tmp_path: Path, photo_dir: Path):
    a = write_config(tmp_path, photo_dir, "a.yaml", output__dir=str(tmp_path / "a"))
    b = write_config(tmp_path, photo_dir, "b.yaml", output__dir=str(tmp_path / "b"), runtime__batch_size=3)
    assert invoke("run", a, "--no-progress").exit_code == 0
    assert invoke("run", b, "--no-progress").exit_code == 0
    ra = pd.read_csv(tmp_path / "a" / "per_image.csv")
    rb = pd.read_csv(tmp_path / "b" / "per_image.csv")
    pd.testing.assert_frame_equal(ra.drop(columns=["y", "o"]), rb.drop(columns=["y", "o"]))  # p_true: no labels
    for col in ("y", "o"):  # batch size 2 vs 3: same values up to float noise
        assert (ra[col] - rb[col]).abs().max() < 1e-5


def test_killed_run_resumes_to_the_same_records(tmp_path: Path, photo_dir: Path, monkeypatch: pytest.MonkeyPatch):
    whole = write_config(tmp_path, photo_dir, "whole.yaml", output__dir=str(tmp_path / "whole"))
    assert invoke("run", whole, "--no-progress").exit_code == 0

    cfg_path = write_config(tmp_path, photo_dir, "killed.yaml", output__dir=str(tmp_path / "killed"))
    real_append = runner_mod.append_records
    calls = []

    def append_then_die(path, rows):
        real_append(path, rows)
        calls.append(1)
        with open(path, "a") as f:  # a torn write of the next batch
            f.write("7,half-written,grad")
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_mod, "append_records", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(load_config(cfg_path), progress=False)
    monkeypatch.setattr(runner_mod, "append_records", real_append)

    res = invoke("run", cfg_path, "--no-progress")
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "killed" / "run.json").read_text())
    assert meta["images_resumed"] == 2 and meta["images_processed"] == len(list(photo_dir.iterdir())) - 2
    assert (tmp_path / "killed" / "per_image.csv").read_text() == (tmp_path / "whole" / "per_image.csv").read_text()


def test_resume_refuses_a_different_config(tmp_path: Path, photo_dir: Path):
    cfg = write_config(tmp_path, photo_dir, dataset__limit=2)
    assert invoke("run", cfg, "--no-progress").exit_code == 0
    other = write_config(tmp_path, photo_dir, "other.yaml", dataset__limit=2, score="softmax")
    res = invoke("run", other, "--no-progress")
    assert res.exit_code == 2 and "different configuration" in res.output and "--fresh" in res.output
    assert invoke("run", other, "--no-progress", "--fresh").exit_code == 0


@pytest.mark.parametrize("extra, expected", [
    ({"dataset__rooot": "x"}, "dataset.rooot: unknown key"),
    ({"runtime__batch_size": "many"}, "runtime.batch_size"),
    ({"methods": ["gradcam", "gradcam+++"]}, "methods: Value error, unknown methods ['gradcam+++']"),
    ({"metrics": ["avg_drop", "accuracy"]}, "metrics: Value error, unknown metrics ['accuracy']"),
    ({"score": "probability"}, "score"),
    ({"dataset__root": "/no/such/folder"}, "/no/such/folder: dataset root is not a folder"),
    ({"model__name": "not_a_model"}, "'not_a_model' is not a timm model"),
    ({"model__weights": "/no/ckpt.pt"}, "/no/ckpt.pt not found"),
    ({"model__layer": "blocks.99"}, "model.layer 'blocks.99' does not exist"),
    ({"model__layer": "classifier"}, "outputs (1, 1000), not a feature map"),
    ({"target": "true"}, "need(s) a true label"),
    ({"metrics": ["relperf"]}, "need(s) a true label"),
    ({"methods": ["gradcam"], "metrics": ["win"]}, "at least two methods"),
])
def test_bad_configs_are_one_clear_line(tmp_path: Path, photo_dir: Path, extra: dict, expected: str):
    cfg = write_config(tmp_path, photo_dir, **extra)
    res = invoke("run", cfg, "--no-progress")
    assert res.exit_code == 2, res.output
    assert expected in res.output
    assert "Traceback" not in res.output


def test_config_errors_name_the_file(tmp_path: Path, photo_dir: Path):
    cfg = write_config(tmp_path, photo_dir, dataset__rooot="x")
    assert str(cfg) in invoke("run", cfg).output
    missing = invoke("run", tmp_path / "nope.yaml")
    assert missing.exit_code == 2 and "nope.yaml: config file not found" in missing.output
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert "top level must be a mapping" in invoke("run", tmp_path / "list.yaml").output


def test_cam_on_a_head_without_gap_linear_is_a_config_error(tmp_path: Path, photo_dir: Path):
    cfg = write_config(tmp_path, photo_dir, model__name="convnext_atto", model__weights="random",
                       methods=["gradcam", "cam"])
    res = invoke("run", cfg, "--no-progress")
    assert res.exit_code == 2 and "method 'cam' is not defined for convnext_atto" in res.output


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path: Path, photo_dir: Path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in sorted(photo_dir.iterdir())[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    Image.new("L", (50, 40), 128).save(folder / "gray.png")  # grayscale: converted, not an error
    cfg = write_config(tmp_path, folder)
    res = invoke("run", cfg, "--no-progress")
    assert res.exit_code == 2 and "broken.jpg: cannot read image" in res.output
    workers = write_config(tmp_path, folder, "workers.yaml", runtime__workers=1)  # decoded in a worker process
    res = invoke("run", workers, "--no-progress")
    assert res.exit_code == 2 and "broken.jpg: cannot read image" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "worker" not in res.output

    cfg = write_config(tmp_path, folder, "skip.yaml", dataset__skip_bad_images=True, output__dir=str(tmp_path / "s"))
    res = invoke("run", cfg, "--no-progress")
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "s" / "run.json").read_text())
    assert meta["images_bad"] == 1 and meta["images_recorded"] == 3
    assert (tmp_path / "s" / "bad_images.txt").read_text().split() == ["broken"]
    assert "1 unreadable image(s) skipped" in (tmp_path / "s" / "summary.md").read_text()


def test_table_gathers_runs_and_compares_with_the_paper(tmp_path: Path, photo_dir: Path):
    cfg = write_config(tmp_path, photo_dir, dataset__limit=2, paper="table1", output__dir=str(tmp_path / "res" / "t1"))
    assert invoke("run", cfg, "--no-progress").exit_code == 0
    res = invoke("table", tmp_path / "res", "--compare-paper", "--format", "csv")
    assert res.exit_code == 0, res.output
    report = pd.read_csv(tmp_path / "res" / "report.csv")
    pp = report[(report.method == "gradcam++") & report.metric.str.startswith("Average drop")]
    assert pp["paper"].tolist() == [36.84]
    ours = pd.read_csv(tmp_path / "res" / "t1" / "summary.csv", index_col=0)
    assert pp["value"].iloc[0] == pytest.approx(ours.loc["Average drop % (lower is better)", "gradcam++"], abs=1e-4)
    md = (tmp_path / "res" / "report.md").read_text()
    assert "/ 36.84" in md
    assert not re.search(r"\d\.\d{5,}", md.split("### Win")[0])  # every cell of the main table is formatted
    empty = invoke("table", tmp_path / "photos-none")
    assert empty.exit_code == 2


def test_methods_lists_every_method():
    """Each registered method is one CSV row whose first cell is exactly its name."""
    from camexp.explain.methods import METHODS

    res = invoke("methods", "--format", "csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.reader(io.StringIO(res.output)))
    assert rows[0][0] == "method"
    assert [r[0] for r in rows[1:]] == METHODS.names()
    assert {"cam", "gradcam", "gradcam+", "gradcam++", "gradcam++all", "gradcam++orig"} <= {r[0] for r in rows[1:]}


def test_unreachable_uncached_weights_fail_fast_with_the_fix(monkeypatch: pytest.MonkeyPatch):
    from camexp.config import ModelConfig
    from camexp.errors import CamexpError
    from camexp.models import build_model
    from camexp.models import weights

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr(weights, "_timm_cached", lambda name: False)
    with pytest.raises(CamexpError, match="huggingface.co is unreachable.*local checkpoint file"):
        build_model(ModelConfig(name="resnet18.a1_in1k", weights="timm"))
