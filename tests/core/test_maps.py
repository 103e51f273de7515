"""Maps as a run product (`output: {maps: true}`): written per batch, read back with `read_maps`, without camexp
(safetensors + numpy), across a kill, a resume and an extension; a run without maps is a clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file
from scipy.stats import spearmanr
from typer.testing import CliRunner

import camexp.report.kept_maps as kept_maps
import camexp.results as results_mod
import camexp.runner as runner_mod
from camexp.cli import app
from camexp.config import ExperimentConfig
from camexp.errors import CamexpError
from camexp.explain.core import Explainer, Explanation
from camexp.explain.gallery import ModelRow
from camexp.explain.maps import upsample_normalize
from camexp.results import MAPS_DIR, MAPS_INDEX, RECORDS, read_maps
from camexp.runner import run_experiment
from tests.core.test_distributed import one_thread, torchrun_two_ranks

METHODS = ["gradcam", "gradcam++", "random"]
F16_EPS = 2.0**-11  # float16's relative spacing: a value in [0,1] is stored within half of it, times 2**0


def config(photo_dir: Path, out: Path, **kw: Any) -> ExperimentConfig:
    """A small random-weights convnet on the four scikit-image photographs, batches of 3 (a partial last batch)."""
    base: dict[str, Any] = {
        "name": "maps",
        "dataset": {"kind": "folder", "root": str(photo_dir)},
        "model": {"name": "test_convnext", "weights": "random"},
        "methods": METHODS,
        "runtime": {"device": "cpu", "batch_size": 3},
        "output": {"dir": str(out), "maps": True},
    }
    return ExperimentConfig.model_validate({**base, **kw})


def spied_run(
    photo_dir: Path, out: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any
) -> list[tuple[list[str], Explanation]]:
    """Run `config` (with `kw`) into `out` and return every (image ids, Explanation) the run's explainer returned."""
    seen: list[tuple[list[str], Explanation]] = []
    real = Explainer.explain

    def explain(self: Explainer, x: torch.Tensor, targets: Any = None, image_ids: Any = None) -> Explanation:
        ex = real(self, x, targets, image_ids)
        seen.append((list(image_ids or []), ex))
        return ex

    with monkeypatch.context() as patch:
        patch.setattr(Explainer, "explain", explain)
        run_experiment(config(photo_dir, out, **kw), progress=False)
    return seen


@pytest.fixture(scope="module")
def finished(
    tmp_path_factory: pytest.TempPathFactory, photo_dir: Path
) -> tuple[Path, list[tuple[list[str], Explanation]]]:
    """One finished run with maps on the four photographs, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("finished") / "out"
    with pytest.MonkeyPatch.context() as patch:
        return out, spied_run(photo_dir, out, patch)


def minmax(a: np.ndarray) -> np.ndarray:
    """Min-max normalisation of one map, written here in numpy (a constant map becomes zeros)."""
    span = a.max() - a.min()
    return np.zeros_like(a) if span == 0 else (a - a.min()) / span


REAL = {  # Lite0's real weights on four ILSVRC2012 images, six methods: what float16 keeps of real maps
    "model": {"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"},
    "methods": ["gradcam", "gradcam+", "gradcam++", "cam", "xgradcam", "layercam"],
}


@pytest.mark.parametrize(
    ("images", "settings"),
    [("photo_dir", {}), pytest.param("ilsvrc_images", REAL, marks=pytest.mark.slow, id="lite0-ilsvrc")],
)
def test_the_maps_read_back_are_the_explainers_to_float16_precision(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    record_property: Any,
    images: str,
    settings: dict[str, Any],
) -> None:
    if images == "photo_dir":
        out, seen = request.getfixturevalue("finished")
    else:
        out, root = tmp_path / "out", request.getfixturevalue(images)
        seen = spied_run(root, out, monkeypatch, dataset={"kind": "folder", "root": str(root), "limit": 4}, **settings)
    methods = settings.get("methods", METHODS)
    maps = read_maps(out)
    records = pd.read_csv(out / RECORDS, dtype={"image_id": str})
    assert maps[["index", "image_id", "method", "target"]].equals(
        records[["index", "image_id", "method", "target"]].reset_index(drop=True)
    )  # one row per record, in the records' order (index, then the run's method order)
    assert maps["index"].dtype == np.int64 and maps["target"].dtype == np.int64
    by_key = maps.set_index(["image_id", "method"])["map"]
    rel_err, rho = [], []
    for ids, ex in seen:
        for m in methods:
            for i, image_id in enumerate(ids):
                exact = minmax(ex.layer_maps[m][i].detach().double().numpy())
                kept = by_key[(image_id, m)]
                assert kept.dtype == np.float32 and kept.shape == exact.shape  # the layer's resolution
                assert np.abs(kept - exact).max() <= F16_EPS / 2 + 1e-7
                big = exact >= 1e-3  # above float16's subnormals, where its relative spacing holds
                rel_err.append(np.max(np.abs(kept - exact)[big] / exact[big], initial=0.0))
                # upsampled to the input and normalised again: the map the run scored (docs/definitions.md, D2)
                up = F.interpolate(torch.tensor(kept)[None, None], size=ex.maps[m].shape[-2:], mode="bilinear")
                scored = ex.maps[m][i].numpy()
                assert np.abs(minmax(up[0, 0].numpy()) - scored).max() < 4 * F16_EPS
                rho.append(spearmanr(up.flatten().numpy(), scored.ravel()).statistic)
    assert len(rho) == len(maps) == 4 * len(methods)
    assert max(rel_err) <= 1.25 * F16_EPS and min(rho) > 0.9999  # float16 spacing (+ float32 noise); ranks kept
    record_property("float16_max_rel_error_where_map_ge_1e-3", float(max(rel_err)))
    record_property("float16_min_spearman_upsampled", float(min(rho)))


def test_center_is_kept_at_its_small_grid_and_scores_the_same_when_read_back(
    tmp_path: Path, photo_dir: Path, monkeypatch: pytest.MonkeyPatch, record_property: Any
) -> None:
    """The audit's case: the `center` floor's map was kept at the input size (100 KB an image, where README.md,
    'Maps' documents the layer's resolution). Now it is kept at the layer's grid, each even side one cell more
    (D2), like every map a few hundred bytes; upsampled and normalised again it is the map the run scored, and
    the model's confidence on its explanation image is the run's `o` for it."""
    seen = spied_run(photo_dir, tmp_path / "out", monkeypatch, methods=["gradcam", "center"])
    kept = read_maps(tmp_path / "out").set_index(["image_id", "method"])["map"]
    records = pd.read_csv(tmp_path / "out" / RECORDS, dtype={"image_id": str}).set_index(["image_id", "method"])
    gaps = []
    for ids, ex in seen:
        h, w = ex.inputs.A.shape[-2:]
        size = tuple(ex.maps["center"].shape[-2:])
        grid = (h + 1 - h % 2, w + 1 - w % 2)
        assert all(kept[(i, "gradcam")].shape == (h, w) for i in ids)  # the layer's resolution
        assert all(kept[(i, "center")].shape == grid for i in ids) and grid[0] * grid[1] * 16 < size[0] * size[1]
        up = upsample_normalize(torch.tensor(np.stack([kept[(i, "center")] for i in ids])), size)[0]
        assert (up - ex.maps["center"]).abs().max() < 4 * F16_EPS
        assert ex.inputs.x is not None and ex.inputs.scorer is not None
        o = ex.inputs.scorer.explanations(ex.inputs.x, {"center": up}, ex.targets)[:, 0].numpy()
        gaps += list(np.abs(o - records.loc[[(i, "center") for i in ids], "o"].to_numpy()))
    assert len(gaps) == 4 and max(gaps) < 1e-4
    record_property("center_read_back_max_abs_o_difference", float(max(gaps)))


def test_the_shards_are_readable_with_safetensors_and_numpy_alone(finished: tuple[Path, Any]) -> None:
    """What docs/guide/run-folder.md, 'Maps' tells a user without camexp: index.csv names the shard and row of
    every map."""
    out = finished[0]
    index = pd.read_csv(out / MAPS_DIR / MAPS_INDEX, dtype={"image_id": str})
    expected = read_maps(out)
    assert index[["index", "image_id", "method", "target"]].equals(expected[["index", "image_id", "method", "target"]])
    for entry, want in zip(index.itertuples(index=False), expected["map"]):
        tensors = load_file(out / MAPS_DIR / entry.shard)
        assert tensors[f"map/{entry.method}"].dtype == np.float16
        assert np.array_equal(tensors[f"map/{entry.method}"][entry.row].astype(np.float32), want)
        assert (tensors["index"][entry.row], tensors["target"][entry.row]) == (entry.index, entry.target)
        with safe_open(out / MAPS_DIR / entry.shard, "numpy") as f:
            assert json.loads(f.metadata()["image_ids"])[entry.row] == entry.image_id
    assert sorted(p.name for p in (out / MAPS_DIR).iterdir()) == [
        "a0001-b000001.safetensors",
        "a0001-b000002.safetensors",
        MAPS_INDEX,
    ]  # 4 images in batches of 3: two shards


def test_read_maps_selects_methods_and_images_and_names_unknown_ones(finished: tuple[Path, Any]) -> None:
    out = finished[0]
    some = read_maps(out, methods=["gradcam++"], images=["coffee", "camera"])
    assert some[["image_id", "method"]].values.tolist() == [["camera", "gradcam++"], ["coffee", "gradcam++"]]
    with pytest.raises(CamexpError, match=r"no method\(s\) \['scorecam'\] in this run; it has \['gradcam'"):
        read_maps(out, methods=["scorecam"])
    with pytest.raises(CamexpError, match=r"image id\(s\) \['dog'\] not among the run's 4 recorded images"):
        read_maps(out, images=["camera", "dog"])


def test_a_run_without_maps_is_a_clear_error_naming_the_fix(tmp_path: Path, photo_dir: Path) -> None:
    out = tmp_path / "out"
    run_experiment(
        config(
            photo_dir, out, dataset={"kind": "folder", "root": str(photo_dir), "limit": 1}, output={"dir": str(out)}
        ),
        progress=False,
    )
    assert not (out / MAPS_DIR).exists()
    with pytest.raises(CamexpError, match=rf"{out}: the run kept no maps; run it with `output: {{maps: true}}`"):
        read_maps(out)


def assert_same_maps(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert a[["index", "image_id", "method", "target"]].equals(b[["index", "image_id", "method", "target"]])
    assert all(np.array_equal(x, y) for x, y in zip(a["map"], b["map"]))


@pytest.mark.parametrize("kill", ["while writing a shard", "after a shard, before the records"])
def test_a_killed_run_leaves_no_shard_a_reader_accepts_and_resumes_to_the_same_maps(
    tmp_path: Path, photo_dir: Path, monkeypatch: pytest.MonkeyPatch, kill: str
) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_experiment(config(photo_dir, whole), progress=False)
    calls: list[str] = []
    if kill == "while writing a shard":
        real_save = results_mod.save_file

        def save_then_die(tensors: dict, path: str, metadata: dict) -> None:
            calls.append(path)
            real_save(tensors, path, metadata=metadata)
            if len(calls) == 2:  # the second batch's shard: half its bytes are on disk, then the process dies
                Path(path).write_bytes(Path(path).read_bytes()[:100])
                raise KeyboardInterrupt

        monkeypatch.setattr(results_mod, "save_file", save_then_die)
    else:
        real_append = runner_mod.append_records

        def append_then_die(path: Path, rows: pd.DataFrame) -> None:
            calls.append(str(path))
            if len(calls) == 2:  # the second batch's maps are written, its records never will be
                raise KeyboardInterrupt
            real_append(path, rows)

        monkeypatch.setattr(runner_mod, "append_records", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config(photo_dir, killed), progress=False)
    monkeypatch.undo()
    left = sorted(p.name for p in (killed / MAPS_DIR).iterdir())
    assert left == (
        ["a0001-b000001.safetensors", "a0001-b000002.tmp"]
        if kill == "while writing a shard"
        else ["a0001-b000001.safetensors", "a0001-b000002.safetensors"]
    )
    assert read_maps(killed)["index"].unique().tolist() == [0, 1, 2]  # the recorded batch only
    run_experiment(config(photo_dir, killed), progress=False)
    assert_same_maps(read_maps(killed), read_maps(whole))
    assert sorted(p.name for p in (killed / MAPS_DIR).iterdir()) == [
        "a0001-b000001.safetensors",
        "a0002-b000001.safetensors",  # the second invocation's first batch: the fourth image
        MAPS_INDEX,
    ]  # the superseded shard and the torn write are gone


def test_a_corrupt_shard_deleted_as_advised_is_explained_again_on_resume(
    tmp_path: Path, photo_dir: Path, monkeypatch: pytest.MonkeyPatch, finished: tuple[Path, Any]
) -> None:
    out = tmp_path / "out"
    run_experiment(config(photo_dir, out), progress=False)
    shard = out / MAPS_DIR / "a0001-b000001.safetensors"  # the first batch: images 0, 1, 2
    shard.write_bytes(shard.read_bytes()[:100])  # a disk error, a bad copy
    advice = f"{shard}: not a camexp maps shard (.*); delete it and resume the run$"
    with pytest.raises(CamexpError, match=advice):
        read_maps(out)
    with pytest.raises(CamexpError, match=advice):  # resumed before deleting it: the same advice, nothing run
        run_experiment(config(photo_dir, out), progress=False)
    shard.unlink()
    with pytest.raises(CamexpError, match="either a shard holding them was deleted .run the same `camexp run`"):
        read_maps(out)
    explained = spied_run(photo_dir, out, monkeypatch)  # the same command: a resume
    assert [ids for ids, _ in explained] == [["camera", "chelsea", "coffee"]]  # the deleted shard's images only
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    assert_same_maps(read_maps(out), read_maps(finished[0]))  # every image's map, as an uninterrupted run's


def test_an_extension_keeps_the_first_maps_and_adds_the_new_images(tmp_path: Path, photo_dir: Path) -> None:
    grown, fresh = tmp_path / "grown", tmp_path / "fresh"
    limit = {"kind": "folder", "root": str(photo_dir), "limit": 2}
    run_experiment(config(photo_dir, grown, dataset=limit), progress=False)
    first = (grown / MAPS_DIR / "a0001-b000001.safetensors").read_bytes()
    run_experiment(config(photo_dir, grown), progress=False)  # no limit: all four
    run_experiment(config(photo_dir, fresh), progress=False)
    assert (grown / MAPS_DIR / "a0001-b000001.safetensors").read_bytes() == first  # not explained again
    maps = read_maps(grown)
    assert maps["index"].unique().tolist() == [0, 1, 2, 3]
    shared = {"index", "image_id", "method", "target"}
    assert maps[list(shared)].equals(read_maps(fresh)[list(shared)])
    # batches differ ([0,1],[2,3] against [0,1,2],[3]): equal up to float noise, which float16 mostly absorbs
    assert max(np.abs(a - b).max() for a, b in zip(maps["map"], read_maps(fresh)["map"])) <= F16_EPS


def test_turning_maps_on_after_records_is_refused_and_off_leaves_a_gap_read_maps_names(
    tmp_path: Path, photo_dir: Path
) -> None:
    out = tmp_path / "out"
    two = {"kind": "folder", "root": str(photo_dir), "limit": 2}
    run_experiment(config(photo_dir, out, dataset=two, output={"dir": str(out)}), progress=False)
    with pytest.raises(CamexpError, match=r"`output: \{maps: true\}` was turned on after 2 images were recorded"):
        run_experiment(config(photo_dir, out, dataset=two), progress=False)
    run_experiment(config(photo_dir, out, dataset=two), fresh=True, progress=False)
    run_experiment(config(photo_dir, out, output={"dir": str(out)}), progress=False)  # two more, without maps
    with pytest.raises(CamexpError, match=r"6 of the 12 recorded \(image, method\) pairs have no map \(first: image"):
        read_maps(out)


def test_fresh_removes_the_maps_of_the_run_it_replaces(tmp_path: Path, photo_dir: Path) -> None:
    out = tmp_path / "out"
    run_experiment(config(photo_dir, out), progress=False)
    run_experiment(config(photo_dir, out, output={"dir": str(out)}), fresh=True, progress=False)
    assert not (out / MAPS_DIR).exists()


def test_camexp_plot_draws_the_runs_images_maps_and_confidences_without_the_model(
    finished: tuple[Path, list[tuple[list[str], Explanation]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, seen = finished
    rows: list[ModelRow] = []
    real_draw = kept_maps.draw_explain_grid
    monkeypatch.setattr(kept_maps, "draw_explain_grid", lambda r: rows.extend(r) or real_draw(r))

    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("camexp plot built a model")

    monkeypatch.setattr(timm, "create_model", no_model)
    res = CliRunner().invoke(app, ["plot", str(out), "--images", "coffee,camera", "--methods", "random,gradcam"])
    assert res.exit_code == 0, res.output
    figures = out / "plots"
    assert sorted(p.name for p in figures.iterdir()) == [
        f"maps_{i}.{e}" for i in ("camera", "coffee") for e in ("pdf", "png")
    ]
    assert Image.open(figures / "maps_coffee.png").size[0] > 500
    records = pd.read_csv(out / RECORDS, dtype={"image_id": str}).set_index(["image_id", "method"])
    explained = {image_id: (ex, i) for ids, ex in seen for i, image_id in enumerate(ids)}
    assert [r.model for r in rows] == ["test_convnext"] * 2
    for row, image_id in zip(rows, ["camera", "coffee"]):  # in the run's order
        ex, i = explained[image_id]
        assert torch.equal(row.image, ex.inputs.x[i])  # the image as the run's transform made it
        assert row.target == int(ex.targets[i]) and row.confidence == records.loc[(image_id, "gradcam"), "y"]
        assert [p.method for p in row.panels] == ["gradcam", "random"]  # the run's method order
        for p in row.panels:
            assert (p.cam - ex.maps[p.method][i]).abs().max() < 4 * F16_EPS
            assert torch.equal(p.explanation, p.cam * row.image)
            assert p.confidence == records.loc[(image_id, p.method), "o"]


def test_camexp_plot_errors_are_one_line(tmp_path: Path, photo_dir: Path) -> None:
    out = tmp_path / "out"
    run_experiment(
        config(photo_dir, out, dataset={"kind": "folder", "root": str(photo_dir), "limit": 1}), progress=False
    )
    res = CliRunner().invoke(app, ["plot", str(out), "--images", "nope"])
    assert res.exit_code == 2 and "image id(s) ['nope'] not among the run's 1 recorded images" in res.output
    res = CliRunner().invoke(app, ["plot", str(out), "--methods", "gradcam"])
    assert res.exit_code == 2 and "--methods and --out draw kept maps: give --images ID[,ID...] too" in res.output
    forged = out / MAPS_DIR / "a0009-b000001.safetensors"  # not written by camexp (its name passes)
    forged.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    res = CliRunner().invoke(app, ["plot", str(out), "--images", "camera"])
    assert res.exit_code == 2 and f"{forged}: not a camexp maps shard (" in res.output
    assert "delete it and resume the run" in res.output
    (out / MAPS_DIR / MAPS_INDEX).unlink()
    for shard in (out / MAPS_DIR).iterdir():
        shard.unlink()
    res = CliRunner().invoke(app, ["plot", str(out), "--images", "camera"])
    assert res.exit_code == 2 and "the run kept no maps; run it with `output: {maps: true}`" in res.output


@pytest.mark.slow
def test_torchrun_ranks_write_their_own_shards_and_rank_0_indexes_them(
    tmp_path: Path, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two CPU ranks (gloo), batches of 1: each rank its own shards, read back as one process's maps."""
    cfg = config(photo_dir, tmp_path / "single", runtime={"device": "cpu", "batch_size": 1})
    path = tmp_path / "maps.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"output": {"dir"}})))
    torchrun_two_ranks(path, tmp_path / "dist")
    with one_thread():
        run_experiment(cfg, progress=False)
    dist, single = read_maps(tmp_path / "dist"), read_maps(tmp_path / "single")
    assert dist[["index", "image_id", "method", "target"]].equals(single[["index", "image_id", "method", "target"]])
    assert max(np.abs(a - b).max() for a, b in zip(dist["map"], single["map"])) <= F16_EPS
    assert sorted(p.name for p in (tmp_path / "dist" / MAPS_DIR).iterdir()) == [
        "a0001-b000001.rank0.safetensors",  # images 0 and 2 on rank 0, 1 and 3 on rank 1 (whole batches, round robin)
        "a0001-b000001.rank1.safetensors",
        "a0001-b000002.rank0.safetensors",
        "a0001-b000002.rank1.safetensors",
        MAPS_INDEX,
    ]
    index = pd.read_csv(tmp_path / "dist" / MAPS_DIR / MAPS_INDEX)
    assert index.drop_duplicates("index")["shard"].tolist() == [
        "a0001-b000001.rank0.safetensors",
        "a0001-b000001.rank1.safetensors",
        "a0001-b000002.rank0.safetensors",
        "a0001-b000002.rank1.safetensors",
    ]
    (tmp_path / "dist" / MAPS_DIR / "a0001-b000001.rank1.safetensors").unlink()  # image 1's maps, as advised
    torchrun_two_ranks(path, tmp_path / "dist", fresh=False)  # the ranks agree on what to explain again
    assert sorted(p.name for p in (tmp_path / "dist" / MAPS_DIR).iterdir()) == [
        "a0001-b000001.rank0.safetensors",
        "a0001-b000002.rank0.safetensors",
        "a0001-b000002.rank1.safetensors",
        "a0002-b000001.rank0.safetensors",  # image 1 again, alone: the first whole batch goes to rank 0
        MAPS_INDEX,
    ]
    assert_same_maps(read_maps(tmp_path / "dist"), dist)


def test_camexp_plot_finds_a_relative_data_set_from_any_folder(
    finished: tuple[Path, list[tuple[list[str], Explanation]]],
    photo_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run whose config names its images relatively (`root: photos`) is drawn from its resolved folder, not
    from `photos` under wherever `camexp plot` is started (which here holds other images of the same names)."""
    out, seen = finished
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("plots", "camexp.lock"))
    meta = json.loads((copy / "run.json").read_text())
    assert meta["dataset"]["root_resolved"] == str(photo_dir.resolve())
    meta["config"]["dataset"]["root"] = photo_dir.name  # as a config written beside the photographs says it
    (copy / "run.json").write_text(json.dumps(meta))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / photo_dir.name).mkdir(parents=True)
    for photo in photo_dir.iterdir():  # the same names, other pictures
        Image.new("RGB", (40, 30), (9, 9, 9)).save(elsewhere / photo_dir.name / photo.name)
    rows: list[ModelRow] = []
    real_draw = kept_maps.draw_explain_grid
    monkeypatch.setattr(kept_maps, "draw_explain_grid", lambda r: rows.extend(r) or real_draw(r))
    monkeypatch.chdir(elsewhere)
    res = CliRunner().invoke(app, ["plot", str(copy), "--images", "coffee", "--methods", "gradcam"])
    assert res.exit_code == 0, res.output
    ex, i = next((ex, ids.index("coffee")) for ids, ex in seen if "coffee" in ids)
    assert torch.equal(rows[0].image, ex.inputs.x[i])  # the run's own photograph, not the stand-in
