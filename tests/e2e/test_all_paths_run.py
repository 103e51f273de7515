"""Issue 29 §1: the pixel-level and transformer methods go every path a CAM goes, with no special case. Real
ILSVRC2012 images: Lite0 (real weights) with every analysis, localization and complexity metrics and kept maps;
Lite1 beside it for `report consistency`; a tiny random ViT with the transformer methods; then every report
(`table`, `leaderboard`, `reliability`, `consistency`, `html`) over the three runs, and a study of two pixel
methods made and tallied. Skipped when ../shared/data is absent."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from camexp.analyses import ANALYSES
from camexp.cli import app
from camexp.results import read_maps

pytestmark = pytest.mark.slow
LIMIT = 3
SMOOTH = {"name": "smoothgrad", "method": "gradient", "smooth": {"n": 2}}
OCC = {"name": "occ", "method": "occlusion", "params": {"window": 112, "stride": 112}}
PIXEL: list[Any] = [
    "gradient",
    {"name": "ig", "method": "integrated_gradients", "params": {"steps": 2}},
    SMOOTH,
    OCC,
    {"name": "rise", "method": "rise", "params": {"n": 16}},
]
LITE0 = ["gradcam", "gradcam++", *PIXEL]  # gradcam++: alpha_stats reads its alphas
LITE1 = ["gradcam", "gradient", OCC]
VIT = ["gradcam", "gradient", "attention_rollout", "chefer_generic", "chefer"]
METRICS = ["avg_drop", "increase", "win", "deletion", "insertion", "energy_pointing", "sparseness", "complexity"]
SIZES = {"lite0": 224, "lite1": 240, "vit": 160}


def names(methods: list[Any]) -> list[str]:
    return [m if isinstance(m, str) else m["name"] for m in methods]


RUNS = {"lite0": names(LITE0), "lite1": names(LITE1), "vit": VIT}
PIXEL_NAMES = names(PIXEL)


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def config(shared: Path, out: Path, model: dict[str, str], methods: list[Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": out.name,
        "dataset": {"kind": "imagenet_val", "root": str(shared / "ilsvrc2012-val-subset"), "limit": LIMIT},
        "model": model,
        "methods": methods,
        "target": "true",
        "metrics": METRICS,
        "perturbation": {"steps": 4},
        "stats": {"bootstrap": 100},
        "runtime": {"device": "cpu", "batch_size": LIMIT},
        "output": {"dir": str(out), "maps": True},
        **extra,
    }


def run(cfg: dict[str, Any], tmp: Path) -> Path:
    path = tmp / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = invoke("run", path, "--no-progress")
    assert result.exit_code == 0, result.output
    return Path(cfg["output"]["dir"])


@pytest.fixture(scope="module")
def runs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/{lite0, lite1, vit}: Lite0 with every analysis; Lite1 and the ViT with the localization,
    complexity and faithfulness metrics."""
    tmp = tmp_path_factory.mktemp("allpaths")
    results = tmp / "results"
    analyses = [n for n, _ in ANALYSES.items() if ":" not in n]  # camexp's own (plug-ins resolved by other tests)
    lite0 = {"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"}
    run(
        config(
            shared_data,
            results / "lite0",
            lite0,
            LITE0,
            analyses=analyses,
            localization={"topk": 2},
            sanity={"mprt_blocks": ["classifier", "blocks.3"]},
        ),
        tmp,
    )
    lite1 = {"name": "tf_efficientnet_lite1", "weights": "efficientnet-lite1-package"}
    run(config(shared_data, results / "lite1", lite1, LITE1), tmp)
    run(config(shared_data, results / "vit", {"name": "test_vit", "weights": "random"}, VIT), tmp)
    return results


def test_every_analysis_and_the_kept_maps_take_the_pixel_methods(runs: Path) -> None:
    out = runs / "lite0"
    records = pd.read_csv(out / "per_image.csv")
    assert list(dict.fromkeys(records["method"])) == names(LITE0) and records["o"].between(0, 1).all()
    metrics = pd.read_csv(out / "per_image_metrics.csv")
    assert set(metrics["method"]) == set(names(LITE0))
    # complexity is an entropy over the 224 x 224 pixels: at most log(224²)
    for metric, top in (("deletion", 1), ("insertion", 1), ("sparseness", 1), ("complexity", np.log(224**2))):
        values = metrics.loc[metrics["metric"] == metric, "value"]
        assert len(values) == LIMIT * len(LITE0) and values.between(0, top + 1e-9).all(), metric
    assert metrics.loc[metrics["metric"] == "energy_pointing", "value"].dropna().between(0, 1).all()
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert list(summary.columns) == names(LITE0)
    for rows in (["MPRT"], ["Random logit"], ["mLoc"]):  # every analysis with rows has them for every method
        shown = summary.loc[[r for r in summary.index if r.startswith(tuple(rows))]]
        assert len(shown) and shown.notna().all().all(), rows
    mprt = pd.read_csv(out / "mprt.csv")
    assert set(mprt["method"]) == set(names(LITE0)) and mprt["depth"].nunique() == 3
    assert set(pd.read_csv(out / "random_logit.csv")["method"]) == set(names(LITE0))
    assert set(pd.read_csv(out / "mloc.csv")["method"]) == set(names(LITE0))
    area = pd.read_csv(out / "area_curve_per_image.csv")
    assert set(area["method"]) == set(names(LITE0)) and area["o"].between(0, 1).all()
    assert (out / "alpha_hist.csv").is_file() and (out / "drop_dist.png").is_file()
    for name, size in SIZES.items():
        kept = read_maps(runs / name).groupby("method")["map"].agg(lambda ms: {m.shape for m in ms}).to_dict()
        for method, shapes in kept.items():  # pixel methods at the input's resolution, the others at their grid
            assert (shapes == {(size, size)}) == (method in PIXEL_NAMES), (name, method, shapes)
        maps = np.concatenate([m.ravel() for m in read_maps(runs / name)["map"]])
        assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


def test_the_vit_run_records_the_transformer_methods(runs: Path) -> None:
    records = pd.read_csv(runs / "vit" / "per_image.csv")
    assert list(dict.fromkeys(records["method"])) == VIT and records["o"].between(0, 1).all()
    metrics = pd.read_csv(runs / "vit" / "per_image_metrics.csv")
    bounded = metrics[metrics["metric"] != "complexity"]["value"].dropna()  # complexity: an entropy, below
    assert set(metrics["method"]) == set(VIT) and bounded.between(0, 1).all()
    assert metrics[metrics["metric"] == "complexity"]["value"].between(0, np.log(SIZES["vit"] ** 2)).all()


def test_table_and_leaderboard_list_every_method(runs: Path, tmp_path: Path) -> None:
    result = invoke("report", "table", runs, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    report = pd.read_csv(tmp_path / "report.csv")
    for name, methods in RUNS.items():  # every row of every run has a finite value for every method
        part = report[report["run"] == name]
        assert set(part["method"]) == set(methods), name
        assert (part.groupby("metric")["method"].nunique() == len(methods)).all() and np.isfinite(part["value"]).all()
    assert {"lite0", "lite1", "vit"} == set(report["run"])
    result = invoke("report", "leaderboard", runs, "--metric", "deletion", "--out", tmp_path, "--format", "csv")
    assert result.exit_code == 0, result.output
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert set().union(*RUNS.values()) == set(board["method"]), board
    with warnings.catch_warnings():  # a metric only lite0 has: the other runs' columns blank, no pandas warning
        warnings.simplefilter("error")
        result = invoke("report", "leaderboard", runs, "--metric", "mprt_ssim", "--out", tmp_path)
    assert result.exit_code == 0, result.exception
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert set(board["method"]) == set(RUNS["lite0"]), board


def test_reliability_ranks_the_new_methods(runs: Path, tmp_path: Path) -> None:
    result = invoke("report", "reliability", runs, "--bootstrap", 100, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "reliability.csv")
    for name, methods in RUNS.items():
        ranks = frame[(frame["run"] == name) & (frame["quantity"] == "rank_by_mean")]
        assert set(ranks["other"]) == set(methods), name
        assert ranks["value"].dropna().between(1, len(methods)).all()
        alpha = frame[(frame["run"] == name) & (frame["quantity"] == "krippendorff_alpha_ordinal")]
        assert {"deletion", "insertion", "sparseness"} <= set(alpha["subject"]) and alpha["value"].dropna().between(
            -1, 1
        ).all()


def test_consistency_compares_the_pixel_maps_across_backbones(runs: Path, tmp_path: Path) -> None:
    """Lite0 (224) and Lite1 (240) agree on the true class of some images; the pixel maps (at each input's
    resolution) and the CAM (at each grid) are aligned alike. The random ViT never agrees with them."""
    result = invoke("report", "consistency", runs, "--bootstrap", 100, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    pairs = pd.read_csv(tmp_path / "consistency_pairs.csv", dtype={"image_id": str})
    assert set(pairs["method"]) == {"gradcam", "gradient"}  # the methods every run has
    assert len(pairs) and set(zip(pairs["run_a"], pairs["run_b"])) == {("lite0", "lite1")}
    assert pairs["spearman"].between(-1, 1).all() and pairs["top_iou"].between(0, 1).all()
    assert pairs.groupby("method").size().nunique() == 1  # both methods on every counted pair


def test_html_shows_every_run_and_a_gallery_of_each(runs: Path, tmp_path: Path) -> None:
    result = invoke("report", "html", runs, "--out", tmp_path / "site")
    assert result.exit_code == 0, result.output
    for name, methods in RUNS.items():
        folder = next((tmp_path / "site" / "runs").glob(f"*{name}*"))
        page = (folder / "index.html").read_text()
        assert all(f">{m}<" in page for m in methods), name
        data = (folder / "gallery-data.js").read_text()
        assert all(json.dumps(m) in data for m in methods), name
        # per image a thumbnail and a full-size picture of the photograph and of every method's map over it
        assert len(list((folder / "img").rglob("*.jpg"))) == 2 * LIMIT * (len(methods) + 1), name


def test_a_study_of_two_pixel_methods_is_made_and_tallied(shared_data: Path, tmp_path: Path) -> None:
    study = {
        "name": "pixel-study",
        "dataset": {"kind": "imagenet_val", "root": str(shared_data / "ilsvrc2012-val-subset"), "limit": LIMIT},
        "model": {"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"},
        "runtime": {"device": "cpu", "batch_size": LIMIT},
        "study": {"methods": [SMOOTH, OCC], "select": {"random": LIMIT}, "repeats": 1},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    out = tmp_path / "study"
    result = invoke("study", "make", path, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    key = json.loads((out / "key.json").read_text())
    assert key["methods"] == {"A": "smoothgrad", "B": "occ"} and len(key["images"]) == LIMIT
    page = " ".join(p.read_text() for p in (out / "page").glob("*.*"))
    assert "smoothgrad" not in page and "occlusion" not in page  # blind
    items = len(key["items"])
    files = []
    for rater, pick in (("r1", "A"), ("r2", "B")):  # r1 always picks smoothgrad, r2 always occlusion
        given = [
            {"item": it["item"], "choice": "left" if it["left"] == pick else "right", "ms": 2000} for it in key["items"]
        ]
        files.append(tmp_path / f"{rater}.json")
        files[-1].write_text(
            json.dumps(
                {
                    "format": "camexp-study-answers/1",
                    "study_id": key["study_id"],
                    "rater": rater,
                    "items": items,
                    "complete": True,
                    "answers": given,
                }
            )
        )
    result = invoke("study", "tally", out, *files, "--bootstrap", 100)
    assert result.exit_code == 0, result.output
    report = pd.read_csv(out / "study_report.csv")
    score = report[report["quantity"] == "score"].set_index("subject")["value"]
    assert score["A: smoothgrad"] == pytest.approx(LIMIT / 2) and score["B: occ"] == pytest.approx(LIMIT / 2)
