"""End to end through the CLI: files, sane numbers, determinism, resume, and clear errors."""

from __future__ import annotations

import copy
import csv
import errno
import io
import json
import os
import re
import socket
import subprocess
import sys
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
    cfg = {
        **copy.deepcopy(BASE),
        "dataset": {"kind": "folder", "root": str(root)},
        "output": {"dir": str(tmp_path / "out")},
    }
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
    assert res.exit_code == 2 and "different configuration (score: 'logit' -> 'softmax')" in res.output
    assert "--fresh" in res.output
    assert invoke("run", other, "--no-progress", "--fresh").exit_code == 0


@pytest.mark.parametrize(
    "extra, expected",
    [
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
    ],
)
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
    cfg = write_config(
        tmp_path, photo_dir, model__name="convnext_atto", model__weights="random", methods=["gradcam", "cam"]
    )
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
    from camexp.models import build_model, weights

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr(weights, "_timm_cached", lambda name: False)
    with pytest.raises(CamexpError, match="huggingface.co is unreachable.*local checkpoint file"):
        build_model(ModelConfig(name="resnet18.a1_in1k", weights="timm"))


# --- the run folder: one run at a time, clear failures, extension ------------------------------------------


def one_line(res) -> str:
    """The CLI's output as one line (rich may wrap a long message on a narrow terminal)."""
    assert len(res.output.strip().splitlines()) == 1 or "\n" not in res.output.strip(), res.output
    return " ".join(res.output.split())


def test_a_second_run_into_a_folder_in_use_is_refused_and_deletes_nothing(
    tmp_path: Path, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    """The audit's case: a `camexp run --fresh` started while a first run writes the folder deleted the
    first's records, and the first still ended `complete`. Here the second starts during the first's first
    batch and must be refused; the first then finishes with every image."""
    cfg_path = write_config(tmp_path, photo_dir)
    real_append = runner_mod.append_records
    second = []

    def append_then_start_a_second_run(path, rows):
        real_append(path, rows)
        if not second:
            second.append(invoke("run", cfg_path, "--fresh", "--no-progress"))

    monkeypatch.setattr(runner_mod, "append_records", append_then_start_a_second_run)
    run_experiment(load_config(cfg_path), progress=False)
    out = tmp_path / "out"
    assert second[0].exit_code == 2
    assert (
        f"error: {out}: another camexp run is writing this folder (pid {os.getpid()} on host "
        f"{socket.gethostname()}, started "
    ) in one_line(second[0])
    n = len(list(photo_dir.iterdir()))
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete" and meta["images_recorded"] == n
    records = pd.read_csv(out / "per_image.csv")
    assert sorted(records.groupby("index").size().items()) == [(i, 3) for i in range(n)]  # every image, once
    assert not (out / "camexp.lock").exists()


def test_a_stale_lock_is_taken_over_with_a_note_and_another_hosts_lock_is_explained(tmp_path: Path, photo_dir: Path):
    out = tmp_path / "out"
    cfg = write_config(tmp_path, photo_dir, dataset__limit=2)
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal; from pathlib import Path; "
            f"from camexp.lock import hold; held = hold(Path({str(out)!r})); held.__enter__(); "
            "os.kill(os.getpid(), signal.SIGKILL)",
        ],
        timeout=120,
    )
    assert killed.returncode == -9  # kill -9 while holding the folder: the lock stays behind
    dead = json.loads((out / "camexp.lock").read_text())["pid"]
    res = invoke("run", cfg, "--no-progress")
    assert res.exit_code == 0, res.output
    assert (
        f"note: {out}: removed the stale lock of a camexp run that is no longer running (pid {dead} on host "
        f"{socket.gethostname()}"
    ) in " ".join(res.output.split())
    assert not (out / "camexp.lock").exists()

    foreign = {"pid": 1, "host": "node-7", "started": "2026-01-01T00:00:00+00:00"}
    (out / "camexp.lock").write_text(json.dumps(foreign))
    res = invoke("run", cfg, "--no-progress")
    assert res.exit_code == 2
    assert (
        f"{out}: held by a camexp run on another host (pid 1 on host node-7, started 2026-01-01T00:00:00+00:00), "
        f"which cannot be checked from here; if it is no longer running, delete {out / 'camexp.lock'}"
    ) in one_line(res)
    assert json.loads((out / "camexp.lock").read_text()) == foreign


def test_an_output_folder_that_is_a_file_or_read_only_is_one_line(
    tmp_path: Path, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    afile = tmp_path / "afile"
    afile.write_text("")
    res = invoke("run", write_config(tmp_path, photo_dir, output__dir=str(afile)), "--no-progress")
    assert res.exit_code == 2
    assert f"{afile}: the run folder is a file, not a folder; choose another with --out" in one_line(res)

    # Root (as in CI) writes through permission bits, so the read-only mount is simulated where the run
    # first writes into its folder: creating the lock file.
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_open = os.open

    def open_on_a_read_only_mount(path, flags, *args, **kwargs):
        if str(path).startswith(str(read_only)) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_on_a_read_only_mount)
    res = invoke("run", write_config(tmp_path, photo_dir, output__dir=str(read_only)), "--no-progress")
    assert res.exit_code == 2
    assert f"{read_only}: cannot write to the run folder (read-only file system)" in one_line(res)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, whose writes fail with ENOSPC")
def test_a_full_disk_while_appending_records_says_what_was_kept_and_the_run_resumes(
    tmp_path: Path, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    """The second batch's records go to /dev/full: the kernel's own 'No space left on device'."""
    cfg = write_config(tmp_path, photo_dir)
    out = tmp_path / "out"
    real_append = runner_mod.append_records
    calls = []

    def second_batch_meets_a_full_disk(path, rows):
        calls.append(path)
        real_append(path if len(calls) == 1 else Path("/dev/full"), rows)

    monkeypatch.setattr(runner_mod, "append_records", second_batch_meets_a_full_disk)
    res = invoke("run", cfg, "--no-progress")
    assert res.exit_code == 2, res.output
    assert (
        f"{out}: no space left on the device while the run was writing; kept: 2 images recorded for every "
        f"method in {out / 'per_image.csv'}"
    ) in one_line(res)
    monkeypatch.setattr(runner_mod, "append_records", real_append)
    res = invoke("run", cfg, "--no-progress")
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "run.json").read_text())
    assert meta["images_resumed"] == 2 and meta["images_recorded"] == len(list(photo_dir.iterdir()))


def test_a_finished_run_grows_to_a_larger_limit_computing_only_the_new_images(tmp_path: Path, photo_dir: Path):
    ids = sorted(p.stem for p in photo_dir.iterdir())
    assert invoke("run", write_config(tmp_path, photo_dir, dataset__limit=2), "--no-progress").exit_code == 0
    res = invoke("run", write_config(tmp_path, photo_dir, "four.yaml", dataset__limit=4), "--no-progress")
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    meta = json.loads((out / "run.json").read_text())
    assert (meta["images_resumed"], meta["images_processed"], meta["images_recorded"]) == (2, 2, 4)
    assert meta["config"]["dataset"]["limit"] == 4
    fresh = write_config(tmp_path, photo_dir, "fresh.yaml", dataset__limit=4, output__dir=str(tmp_path / "fresh"))
    assert invoke("run", fresh, "--no-progress").exit_code == 0
    assert (out / "per_image.csv").read_text() == (tmp_path / "fresh" / "per_image.csv").read_text()

    renumbered = invoke(
        "run", write_config(tmp_path, photo_dir, "every.yaml", dataset__subset={"every": 2}), "--no-progress"
    )  # keeps images 0 and 2 of the 4: indices 1, 2, 3 would change meaning
    assert renumbered.exit_code == 2
    assert (
        f"{out}: 3 of its 4 recorded images are not where the data set now puts them (index 1 was {ids[1]}, "
        f"is now {ids[2]})"
    ) in one_line(renumbered)
    assert json.loads((out / "run.json").read_text())["config"]["dataset"]["limit"] == 4  # nothing was touched


def test_adding_an_analysis_after_images_were_recorded_is_refused_with_the_reason(tmp_path: Path, photo_dir: Path):
    """The audit's case: mloc added to a finished run resumed, computed nothing, and summarised 0 pairs."""
    assert invoke("run", write_config(tmp_path, photo_dir, dataset__limit=2), "--no-progress").exit_code == 0
    res = invoke(
        "run", write_config(tmp_path, photo_dir, "mloc.yaml", dataset__limit=2, analyses=["mloc"]), "--no-progress"
    )
    assert res.exit_code == 2
    assert (
        "analyses ['mloc'] were added after 2 images were recorded without them; their numbers would cover "
        "only the images explained from now on: pass --fresh"
    ) in one_line(res)
    drawn = invoke(
        "run", write_config(tmp_path, photo_dir, "dist.yaml", dataset__limit=2, analyses=["drop_dist"]), "--no-progress"
    )  # drawn from the records at the end: covers every image, so allowed
    assert drawn.exit_code == 0, drawn.output
    assert (tmp_path / "out" / "drop_dist.png").exists()
