"""Insertion / deletion on real photographs and real EfficientNet-Lite0 weights: the run's per-image values
against an independent plain loop (numpy ranking, scipy blur, one image per forward), resume after a kill,
and torchcam's DeletionInsertionMetric on the same maps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy.signal import convolve2d

import camexp.runner as runner
from camexp.config import ExperimentConfig
from camexp.data import build_dataset, collate
from camexp.experiment import load_experiment
from camexp.explain.core import Explainer
from camexp.explain.scoring import Scorer
from camexp.metrics import METRICS, validate_settings
from camexp.metrics.batch import BatchContext
from camexp.metrics.perturbation import rise_kernel
from camexp.models import LoadedModel
from camexp.report.tables import summarize_run_dir
from camexp.results import METRIC_RECORDS, RECORDS, RUN_JSON, read_records
from camexp.runner import run_experiment

pytestmark = pytest.mark.slow
METHODS = ["gradcam", "gradcam++"]
STEPS = 4
BATCH = 2


def _config(tmp: Path, images: Path, metrics: list[str], out: str = "out") -> Path:
    path = tmp / f"{out}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "perturb",
                "dataset": {"kind": "folder", "root": str(images)},
                "model": {"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"},
                "methods": METHODS,
                "metrics": metrics,
                "perturbation": {"steps": STEPS, "curves": True},
                "runtime": {"device": "cpu", "batch_size": BATCH},
                "output": {"dir": str(tmp / out)},
            }
        )
    )
    return path


@contextmanager
def shared_model(lite0: LoadedModel) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "build_model", lambda cfg, device: lite0)
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, photo_dir: Path, lite0: LoadedModel) -> Path:
    tmp = tmp_path_factory.mktemp("perturb")
    with shared_model(lite0):
        run_experiment(
            load_experiment(_config(tmp, photo_dir, ["avg_drop", "insertion", "deletion"])), fresh=True, progress=False
        )
    return tmp / "out"


def plain_auc(
    net: torch.nn.Module, start: np.ndarray, end: np.ndarray, ranking_map: np.ndarray, target: int, steps: int
) -> float:
    """RISE's procedure written out: numpy's stable argsort, a fresh copy per step, one image per forward."""
    order = np.argsort(-ranking_map.ravel(), kind="stable")
    pixels = order.size
    n = -(-pixels // steps)
    scores = []
    for s in range(steps + 1):
        img = start.reshape(3, -1).copy()
        changed = order[: min(s * n, pixels)]
        img[:, changed] = end.reshape(3, -1)[:, changed]
        with torch.no_grad():
            logits = net(torch.from_numpy(img.reshape(start.shape))[None])
        scores.append(float(logits.double().softmax(1)[0, target]))
    return float(np.trapezoid(scores, dx=1.0 / steps))


def scipy_blur(xn: np.ndarray) -> np.ndarray:
    k = rise_kernel().numpy()
    return np.stack(
        [convolve2d(c.astype(np.float64), k, mode="same", boundary="fill", fillvalue=0.0) for c in xn]
    ).astype(np.float32)


def test_insertion_deletion_equal_a_plain_loop(run_dir: Path, lite0: LoadedModel) -> None:
    cfg = ExperimentConfig.model_validate(json.loads((run_dir / RUN_JSON).read_text())["config"])
    ds = build_dataset(cfg.dataset, lite0.spec)
    rows = read_records(run_dir / METRIC_RECORDS, ["value"])
    records = read_records(run_dir / RECORDS)
    assert sorted(rows["metric"].unique()) == ["deletion", "insertion"] and len(rows) == 2 * len(METHODS) * len(ds)
    explainer = Explainer(lite0, METHODS)
    worst = 0.0
    for lo in range(0, len(ds), BATCH):  # the run's batches, so that the maps are the run's
        x = collate([ds[i] for i in range(lo, min(lo + BATCH, len(ds)))])["image"]
        ex = explainer.explain(x)
        xn = lite0.model.normalize(x).numpy()
        for b in range(len(x)):
            index = lo + b
            target = int(records.loc[records["index"] == index, "target"].iloc[0])
            assert target == int(ex.targets[b])
            for m in METHODS:
                rank_map = ex.maps[m][b].numpy()
                ref = {
                    "deletion": plain_auc(lite0.model.net, xn[b], np.zeros_like(xn[b]), rank_map, target, STEPS),
                    "insertion": plain_auc(lite0.model.net, scipy_blur(xn[b]), xn[b], rank_map, target, STEPS),
                }
                for metric, expected in ref.items():
                    got = rows.loc[
                        (rows["index"] == index) & (rows["method"] == m) & (rows["metric"] == metric), "value"
                    ]
                    assert len(got) == 1
                    worst = max(worst, abs(float(got.iloc[0]) - expected))
    assert worst < 1e-6, worst


def test_summary_is_recomputed_from_the_file(run_dir: Path) -> None:
    rows = read_records(run_dir / METRIC_RECORDS, ["value"])
    again = summarize_run_dir(run_dir)
    for label, metric in (
        ("Insertion AUC (higher is better)", "insertion"),
        ("Deletion AUC (lower is better)", "deletion"),
    ):
        for m in METHODS:
            expected = rows.loc[(rows["metric"] == metric) & (rows["method"] == m), "value"].mean()
            assert again.main.at[label, m] == pytest.approx(expected, abs=1e-12)
    curves = pd.read_csv(run_dir / "per_image_curves.csv")
    assert len(curves) == len(rows) and all(len(p.split()) == STEPS + 1 for p in curves["points"])
    table = pd.read_csv(run_dir / "perturbation_curves.csv")  # the figure's numbers: the mean curve per method
    for (metric, method), part in curves.groupby(["metric", "method"]):
        points = np.array([[float(v) for v in p.split()] for p in part["points"]])
        got = table[(table["metric"] == metric) & (table["method"] == method)]
        assert np.allclose(got["mean"], points.mean(0), atol=1e-6) and got["x"].tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert (run_dir / "perturbation_curves.png").is_file() and "perturbation_curves.png" in (
        run_dir / "summary.md"
    ).read_text()


def test_a_killed_run_resumes_only_the_missing_images(
    run_dir: Path, photo_dir: Path, lite0: LoadedModel, tmp_path: Path
) -> None:
    whole = read_records(run_dir / METRIC_RECORDS, ["value"])
    out = tmp_path / "out"
    out.mkdir()
    for name in (RECORDS, RUN_JSON, METRIC_RECORDS):
        (out / name).write_bytes((run_dir / name).read_bytes())
    meta = json.loads((out / RUN_JSON).read_text())
    meta["config"]["output"]["dir"] = str(out)
    (out / RUN_JSON).write_text(json.dumps(meta))
    # killed after the second batch's metric rows (with a torn last line) but before its records
    records = read_records(out / RECORDS)
    records[records["index"] < BATCH].to_csv(out / RECORDS, index=False, float_format="%.17g")
    text = whole[whole["index"] < 2 * BATCH].to_csv(index=False, float_format="%.17g")
    (out / METRIC_RECORDS).write_text(text + "3,torn,gradc")
    with shared_model(lite0):
        run_experiment(
            load_experiment(_config(tmp_path, photo_dir, ["avg_drop", "insertion", "deletion"])), progress=False
        )
    meta = json.loads((out / RUN_JSON).read_text())
    assert meta["images_resumed"] == BATCH and meta["images_processed"] == len(whole["index"].unique()) - BATCH
    resumed = read_records(out / METRIC_RECORDS, ["value"])
    assert resumed[["index", "method", "metric"]].equals(whole[["index", "method", "metric"]])
    assert np.allclose(resumed["value"], whole["value"], rtol=0, atol=1e-9)

    # a per-batch metric added to a recorded run: the images lacking its rows are redone
    with shared_model(lite0):
        run_experiment(
            load_experiment(_config(tmp_path, photo_dir, ["insertion", "deletion", "avg_drop@keep"])), progress=False
        )
    meta = json.loads((out / RUN_JSON).read_text())
    assert meta["images_processed"] == len(whole["index"].unique())
    assert set(read_records(out / METRIC_RECORDS, ["value"])["metric"]) == {"insertion", "deletion", "avg_drop@keep"}


class GivenMaps:
    """A torchcam CAM extractor that returns maps computed elsewhere (ours), so only the metric differs."""

    def __init__(self, model: torch.nn.Module, maps: torch.Tensor):
        self.model, self.maps = model, maps

    def __call__(self, class_idx, scores, normalized=True, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    @contextmanager
    def _hooks_off(self) -> Iterator[None]:
        yield


def test_torchcam_deletion_insertion_on_the_same_maps(photo_dir: Path, lite0: LoadedModel) -> None:
    """torchcam 0.5 implements RISE's definition with the substrate 0 in the normalised tensor for both
    curves, and integrates over the actually changed fraction; with S dividing H*W those agree with ours."""
    from torchcam.metrics import DeletionInsertionMetric

    steps = 8
    assert (224 * 224) % steps == 0
    cfg = ExperimentConfig(
        name="tc",
        dataset={"root": str(photo_dir)},
        model={"name": "tf_efficientnet_lite0"},
        methods=["gradcam++"],
        metrics=["insertion", "deletion"],
        perturbation={"steps": steps, "insertion_substrate": "zero"},
    )
    ds = build_dataset(cfg.dataset, lite0.spec)
    x = collate([ds[i] for i in range(len(ds))])["image"]
    explainer = Explainer(lite0, ["gradcam++"], scorer=Scorer(lite0.model, chunk=8))
    ex = explainer.explain(x)
    batch = BatchContext(cfg, explainer, x, ex, {}, validate_settings(cfg))
    ours = {k: float(METRICS.get(k).compute(batch)[0].value.mean()) for k in ("deletion", "insertion")}
    metric = DeletionInsertionMetric(
        GivenMaps(lite0.model.net, ex.maps["gradcam++"]), lambda z: z.softmax(-1), steps=steps, batch_size=8
    )
    metric.update(lite0.model.normalize(x), class_idx=ex.targets.tolist())
    theirs = metric.summary()
    deviation = max(abs(ours["deletion"] - theirs["deletion_auc"]), abs(ours["insertion"] - theirs["insertion_auc"]))
    print(f"torchcam vs camexp, {len(x)} photos, S={steps}: {ours} vs {theirs}; max deviation {deviation:.2e}")
    assert deviation < 1e-5
