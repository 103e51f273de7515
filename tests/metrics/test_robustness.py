"""Robustness metrics (max/avg sensitivity, local Lipschitz, RIS): by hand on a tiny explainer, batched
re-explanation, seeded copies, settings errors, and equal to Quantus 0.6 given the same perturbed copies
and the same real EfficientNet-Lite0 maps (docs/guide/field-metrics.md, "Robustness")."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from camexp.cli import app
from camexp.config import ExperimentConfig
from camexp.data import build_dataset, collate
from camexp.explain.core import Explainer
from camexp.explain.scoring import Scorer
from camexp.metrics import METRICS, validate_settings
from camexp.metrics.batch import BatchContext
from camexp.metrics.robustness import perturbed
from tests.metrics.test_metric_contract import _config, _run

NAMES = ("max_sensitivity", "avg_sensitivity", "local_lipschitz", "relative_input_stability")


class SquareExplainer:
    """A fake explainer: the map of image x is x[0]**2 (channel 0), the logits [x.sum(), 0]; it records
    every call so a test can count them and see the copies."""

    def __init__(self) -> None:
        self.calls: list[torch.Tensor] = []

    def explain(self, x: torch.Tensor, targets: torch.Tensor, ids: list[str] | None = None) -> Any:
        self.calls.append(x.clone())
        logits = torch.stack([x.sum((1, 2, 3)), torch.zeros(len(x))], 1)
        return SimpleNamespace(maps={"sq": x[:, 0] ** 2}, logits=logits, targets=targets)


def tiny_batch(explainer: Any, x: torch.Tensor, **robustness: Any) -> BatchContext:
    cfg = ExperimentConfig(
        name="r",
        dataset={"root": "."},
        model={"name": "toy"},
        methods=["m"],
        metrics=list(NAMES),
        settings={"robustness": robustness},
    )
    ex = explainer.explain(x, torch.zeros(len(x), dtype=torch.long))
    explainer.calls.clear()
    ids = [f"img{i}" for i in range(len(x))]
    return BatchContext(cfg, explainer, x, ex, {"image_id": ids}, validate_settings(cfg))


def values(batch: BatchContext) -> dict[str, list[float]]:
    out = {}
    for name in NAMES:
        (v,) = METRICS.get(name).compute(batch)
        out[name] = v.value.tolist()
    return out


def test_by_hand_on_a_tiny_explainer() -> None:
    """Two 2x2 images, 3 copies each re-explained in one call; every value recomputed from the copies the
    explainer received with numpy: ||e' - e|| / ||e||, ||e' - e|| / ||x' - x||, and RIS's element-wise
    relative changes (a zero of x or e counts as eps_min)."""
    x = torch.tensor([[[[0.5, 0.2], [0.0, 0.9]]] * 3, [[[0.3, 0.3], [0.6, 0.1]]] * 3], dtype=torch.float32)
    explainer = SquareExplainer()
    batch = tiny_batch(explainer, x, samples=3, radius=0.05)
    got = values(batch)
    assert len(explainer.calls) == 1 and explainer.calls[0].shape == (6, 3, 2, 2)  # all copies, one call
    copies = explainer.calls[0].double().numpy().reshape(3, 2, 3, 2, 2)  # sample-major
    x0 = x.double().numpy()
    assert np.abs(copies - x0).max() <= 0.05 + 1e-7 and np.abs(copies - x0).max() > 0.03
    e0 = x0[:, 0] ** 2
    e1 = copies[:, :, 0] ** 2
    d = np.sqrt(((e1 - e0) ** 2).sum((2, 3)))  # (S, B)
    sens = d / np.sqrt((e0**2).sum((1, 2)))
    dx = np.sqrt(((copies - x0) ** 2).sum((2, 3, 4)))
    eps = 1e-6
    rel_e = np.sqrt((((e0 - e1) / np.where(e0 == 0, eps, e0)) ** 2).sum((2, 3)))
    rel_x = np.sqrt((((x0 - copies) / np.where(x0 == 0, eps, x0)) ** 2).sum((2, 3, 4)))
    same = (copies.sum((2, 3, 4)) > 0) == (x0.sum((1, 2, 3)) > 0)  # the fake's top-1 is class 0 iff the sum > 0
    assert same.all()
    np.testing.assert_allclose(got["max_sensitivity"], sens.max(0), rtol=1e-5)
    np.testing.assert_allclose(got["avg_sensitivity"], sens.mean(0), rtol=1e-5)
    np.testing.assert_allclose(got["local_lipschitz"], (d / dx).max(0), rtol=1e-5)
    np.testing.assert_allclose(got["relative_input_stability"], (rel_e / np.maximum(rel_x, eps)).max(0), rtol=1e-5)


def test_linf_norm_and_a_copy_that_changes_the_prediction() -> None:
    """With norm linf the sensitivities use max |.|; RIS skips a copy whose top-1 changes and is NaN when all
    do (a sum near 0 flips the fake's prediction); a map of zeros has no relative change: NaN."""
    x = torch.tensor([[[[0.5, 0.2], [0.1, 0.9]]] * 3, [[[0.0, 0.0], [0.0, 0.0]]] * 3])
    explainer = SquareExplainer()
    got = values(tiny_batch(explainer, x, samples=4, radius=0.1, norm="linf"))
    copies = explainer.calls[0].double().numpy().reshape(4, 2, 3, 2, 2)
    e0, e1 = x.double().numpy()[0, 0] ** 2, copies[:, 0, 0] ** 2
    assert got["max_sensitivity"][0] == pytest.approx(np.abs(e1 - e0).max((1, 2)).max() / np.abs(e0).max(), rel=1e-5)
    flips = copies[:, 1].sum((1, 2, 3)) > 0  # image 1 (zeros) was class 1 (sum 0 is not > 0)
    assert np.isnan(got["max_sensitivity"][1]) and np.isnan(got["relative_input_stability"][1])
    assert flips.any()  # so RIS of image 1 would be NaN by the prediction rule too


def test_copies_are_seeded_per_image_not_per_batch() -> None:
    """Image i's copies depend on (seed, image key) alone: the same alone or beside another image."""
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    together = perturbed(x, ["a", "b", "c"], 0, 5, 0.1)
    alone = perturbed(x[1:2], ["b"], 0, 5, 0.1)
    assert torch.equal(together[:, 1:2], alone)
    assert not torch.equal(perturbed(x[1:2], ["b"], 1, 5, 0.1), alone)
    assert (together - x[None]).abs().max() <= 0.1 + 1e-7


@pytest.mark.parametrize(
    ("shape", "samples", "layout", "dtype"),
    [
        ((3, 5, 5), 1, torch.contiguous_format, torch.float32),  # 75 values: odd, half of the last draw
        ((3, 6, 8), 4, torch.channels_last, torch.float32),  # a run's layout, x + u added on the host threads
        ((3, 7, 9), 3, torch.contiguous_format, torch.float64),  # not float32: noise cast, then added by torch
    ],
)
def test_copies_are_the_documented_draws(shape: tuple, samples: int, layout: torch.memory_format, dtype: Any) -> None:
    """Copy s of image i is x_i + u, u = (2v - 1) * r rounded once to float32, v the float32 draws of
    numpy.random.default_rng(seed_of(seed, key, "robustness")): recomputed here in float64 (exact: v has 24
    bits and r as float32 24 more) and rounded once, whatever the layout, dtype or parity of the count."""
    from camexp.explain.model_methods import seed_of

    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(3)).to(dtype).contiguous(memory_format=layout)
    r = 0.05
    got = perturbed(x, ["a", "b"], 7, samples, r)
    assert got.shape == (samples, 2, *shape) and got.dtype == dtype
    assert torch.equal(perturbed(x, ["a", "b"], 7, samples, r, parallel=True), got)  # an accelerator's way
    for i, key in enumerate("ab"):
        v = np.random.default_rng(seed_of(7, key, "robustness")).random((samples, *shape), dtype=np.float32)
        u = torch.from_numpy((v.astype(np.float64) * 2 - 1) * float(np.float32(r))).float()
        assert torch.equal(got[:, i], x[i] + u.to(dtype))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_copies_on_a_gpu_are_the_cpu_copies() -> None:
    """The raw draws are the host's; their integer passes and one rounding run on the GPU (on the host threads'
    draws, the default there) and give the CPU's copies, bit for bit."""
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    cpu = perturbed(x, ["a", "b", "c"], 2, 4, 0.03)
    assert torch.equal(perturbed(x.cuda(), ["a", "b", "c"], 2, 4, 0.03).cpu(), cpu)


def test_the_four_metrics_share_one_re_explanation_per_batch() -> None:
    x = torch.rand(2, 3, 2, 2, generator=torch.Generator().manual_seed(0)) + 0.1
    explainer = SquareExplainer()
    values(tiny_batch(explainer, x, samples=7))
    assert len(explainer.calls) == 1 and len(explainer.calls[0]) == 14


def test_camexp_metrics_lists_the_cost() -> None:
    from camexp.report.listings import metric_listing

    listing = metric_listing()
    for name in NAMES:
        assert "robustness.samples re-explanations" in listing.entry(name)["cost per image"]
    assert "one re-explanation per method" in listing.entry("adcc")["cost per image"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"samples": 0}, "settings.robustness.samples: Input should be greater than or equal to 1"),
        ({"radius": -0.1}, "settings.robustness.radius: Input should be greater than 0"),
        ({"norm": "l1"}, "settings.robustness.norm: Input should be 'l2' or 'linf'"),
        ({"nsamples": 3}, "settings.robustness.nsamples: unknown key"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, photo_dir: Path, settings: dict, message: str) -> None:
    res = _run(_config(tmp_path, photo_dir, "bad", metrics=["max_sensitivity"], settings={"robustness": settings}))
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_run_writes_every_value_with_direction_and_criterion(tmp_path: Path, photo_dir: Path) -> None:
    """Through the runner (random ResNet-18, 4 photographs, with ADCC beside): one value per image, method and
    metric, lower is better in the summary, intervals from the bootstrap in summary_long.csv, and the
    reliability table ranks methods per criterion, robustness and composite included, with no special case."""
    metrics = [*NAMES, "adcc"]
    cfg = _config(
        tmp_path,
        photo_dir,
        "rob",
        methods=["gradcam", "center"],
        metrics=metrics,
        settings={"robustness": {"samples": 2}},
    )
    res = _run(cfg)
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "rob"
    per = pd.read_csv(out / "per_image_metrics.csv")
    rows = [*NAMES, "adcc", "adcc_coherency", "adcc_complexity", "adcc_avg_drop"]
    assert per.groupby("metric").size().to_dict() == {n: 8 for n in rows}
    centre = per[(per.method == "center") & (per.metric == "max_sensitivity")].value
    assert (centre == 0).all()  # the centre floor ignores the input: its map never changes
    long = pd.read_csv(out / "summary_long.csv").set_index(["metric", "method"])
    for name in rows:
        row = long.loc[(name, "gradcam")]
        assert row.lo <= row.value <= row.hi and row.n == 4
    assert "Max-sensitivity (lower is better)" in pd.read_csv(out / "summary.csv", index_col=0).index
    res = CliRunner().invoke(app, ["table", str(tmp_path / "runs"), "--reliability", "--out", str(tmp_path / "rel")])
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(tmp_path / "rel" / "reliability.csv")
    assert {"robustness", "composite"} <= set(frame.subject)


@pytest.mark.slow
def test_equal_to_quantus_given_the_same_copies(photo_dir: Path, lite0, record_property: pytest.RecordProperty) -> None:
    """Quantus 0.6's MaxSensitivity, AvgSensitivity, LocalLipschitzEstimate and RelativeInputStability on
    the same real Lite0 maps (Grad-CAM, Grad-CAM++; camexp's normalised maps, Quantus told not to normalise),
    its perturb_func handing out camexp's own copies step by step: equal to 1e-5."""
    quantus = pytest.importorskip("quantus")
    cfg = ExperimentConfig(
        name="q",
        dataset={"root": str(photo_dir), "limit": 2},
        model={"name": "tf_efficientnet_lite0"},
        methods=["gradcam", "gradcam++"],
        metrics=list(NAMES),
        settings={"robustness": {"samples": 3, "radius": 0.02}},
    )
    ds = build_dataset(cfg.dataset, lite0.spec)
    x = collate([ds[i] for i in range(len(ds))])["image"]
    ids = [ds.items[i].image_id for i in range(len(ds))]
    explainer = Explainer(lite0, cfg.method_names, scorer=Scorer(lite0.model))
    ex = explainer.explain(x, None, ids)
    batch = BatchContext(cfg, explainer, x, ex, {"image_id": ids}, validate_settings(cfg))
    ours = {name: {v.method: v.value.numpy() for v in METRICS.get(name).compute(batch)} for name in NAMES}
    copies = perturbed(x, ids, cfg.runtime.seed, 3, 0.02).numpy()
    xb, yb = x.numpy(), ex.targets.numpy()
    model = copy.deepcopy(lite0.model).eval()  # Quantus predicts (RIS) with a model in eval mode
    deviations = {}
    done = [0]  # perturb_func calls so far: each metric asks for the 3 copies in order, once per call

    def perturb(arr: np.ndarray, **kw: Any) -> np.ndarray:
        done[0] += 1
        return copies[(done[0] - 1) % 3].reshape(arr.shape)

    for method in cfg.method_names:

        def explain(model: Any, inputs: np.ndarray, targets: np.ndarray, method: str = method, **kw: Any) -> np.ndarray:
            t = torch.from_numpy(np.asarray(targets))
            return explainer.explain(torch.from_numpy(inputs), t).maps[method][:, None].numpy()

        common = dict(nr_samples=3, perturb_func=perturb, normalise=False, abs=False, disable_warnings=True)
        peers = {
            "max_sensitivity": quantus.MaxSensitivity(**common),
            "avg_sensitivity": quantus.AvgSensitivity(**common),
            "local_lipschitz": quantus.LocalLipschitzEstimate(**common),
            "relative_input_stability": quantus.RelativeInputStability(
                **common, return_nan_when_prediction_changes=True
            ),
        }
        a = ex.maps[method][:, None].numpy()
        for name, peer in peers.items():
            theirs = np.asarray(
                peer(model=model, x_batch=xb, y_batch=yb, a_batch=a.copy(), explain_func=explain, device="cpu"),
                dtype=np.float64,
            )
            assert np.isfinite(theirs).any(), f"{name} {method}: no image to compare"
            deviations[f"{name}/{method}"] = float(np.nanmax(np.abs(ours[name][method] - theirs) / np.abs(theirs)))
            np.testing.assert_allclose(ours[name][method], theirs, rtol=1e-5, err_msg=f"{name} {method}")
    for key, dev in deviations.items():
        record_property(f"quantus_rel_dev_{key}", dev)
