"""`sanity.mprt_mode`: the fingerprint of a cascading config is the one it had before the modes existed, the
settings are refused before the first image, and on a two-block toy model whose maps are computed by hand the
independent mode differs from the cascading one exactly where it must; a run writes each mode's rows under names
of its own. The modes beside Quantus 0.6 are in test_sanity_peers.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from timm.models import register_model
from torch import nn

from camexp.analyses.base import ANALYSES
from camexp.analyses.sanity import (
    EFFICIENT_COLUMNS,
    EFFICIENT_CSV,
    MODES,
    MPRT_COLUMNS,
    Mprt,
    SanitySettings,
    mprt_per_image,
    mprt_result,
)
from camexp.analyses.similarity import discrete_entropy
from camexp.config import ExperimentConfig, ModelConfig
from camexp.errors import CamexpError
from camexp.explain.core import Explainer
from camexp.metrics import settings_fingerprint, validate_settings
from camexp.metrics.batch import BatchContext
from camexp.models import LoadedModel, build_model
from camexp.results import COLUMNS, RECORDS, read_records

SIDE = 32  # the toy's input and map: 32 x 32 pixels (HOG needs 24 at least)


class TwoBlocks(nn.Module):
    """`features` (a 1x1 convolution, 3 channels -> 1, no bias), global average pooling, `fc` (1 -> 2, no bias).
    Its constructor's weights, what `mprt` resets a block to, are fixed: features (-2, 0, 0), fc (-3, 5)."""

    def __init__(self, num_classes: int = 2, **kwargs: Any):
        super().__init__()
        self.features = nn.Conv2d(3, 1, 1, bias=False)
        self.fc = nn.Linear(1, num_classes, bias=False)
        self.pretrained_cfg = {
            "input_size": (3, SIDE, SIDE),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": (0.0, 0.0, 0.0),
            "std": (1.0, 1.0, 1.0),
            "num_classes": num_classes,
            "classifier": "fc",
        }
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([-2.0, 0.0, 0.0]).view(1, 3, 1, 1))
            self.fc.weight.copy_(torch.tensor([[-3.0], [5.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


@register_model
def camexp_test_two_blocks(pretrained: bool = False, **kwargs: Any) -> TwoBlocks:
    return TwoBlocks(**{k: v for k, v in kwargs.items() if k == "num_classes"})


TOY = {"name": "camexp_test_two_blocks", "weights": "random", "layer": "features"}


def config(tmp_path: Path, model: dict, methods: list[str], **sanity: object) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {"name": "m", "dataset": {"root": str(tmp_path)}, "model": model, "methods": methods, "sanity": sanity}
    )


def run_mprt(cfg: ExperimentConfig, loaded: LoadedModel, x: torch.Tensor, out: Path) -> BatchContext:
    """`mprt` on one batch of `x`, its rows in `out` beside records of those images (the readers' final images)."""
    pd.DataFrame({c: range(len(x)) for c in COLUMNS}).to_csv(out / RECORDS, index=False)
    explainer = Explainer(loaded, cfg.method_specs())
    ids = [f"img{i}" for i in range(len(x))]
    batch = {"index": torch.arange(len(x)), "image_id": ids}
    ctx = BatchContext(
        cfg, explainer, x, explainer.explain(x, None, ids), batch, validate_settings(cfg), lambda n: out / n
    )
    Mprt(cfg).update(ctx)
    return ctx


def test_a_cascading_config_keeps_its_fingerprint_and_another_mode_changes_it() -> None:
    """The hash below is the fingerprint this config had before `mprt_mode` existed (camexp 941c5de, when `sanity`
    was a section of the config): its run folders still resume. Another mode, or another sample count of the smooth
    mode, is another fingerprint."""
    raw = {"name": "p", "dataset": {"root": "."}, "model": {"name": "test_efficientnet", "weights": "random"}}
    raw |= {"methods": ["gradcam"], "analyses": ["mprt"], "sanity": {"mprt_blocks": ["conv_stem"], "seed": 3}}

    def fingerprint(sanity: dict) -> str:
        cfg = ExperimentConfig.model_validate(raw | {"sanity": {**raw["sanity"], **sanity}})
        return cfg.fingerprint(None, settings_fingerprint(cfg, ANALYSES))

    assert fingerprint({}) == fingerprint({"mprt_mode": "cascading"}) == "8d311b087b8a371c"
    cfg = ExperimentConfig.model_validate(raw)
    assert settings_fingerprint(cfg, ANALYSES)["sanity"] == {
        "seed": 3,
        "mprt_blocks": ["conv_stem"],
        "mprt_units": "blocks",
    }
    others = [{"mprt_mode": "independent"}, {"mprt_mode": "smooth"}, {"mprt_mode": "smooth", "mprt_samples": 8}]
    assert len({fingerprint({}), *(fingerprint(o) for o in others)}) == 4


def test_settings_are_refused_before_the_first_image(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mprt_blocks: efficient mprt explains only the fully randomised model"):
        SanitySettings(mprt_mode="efficient", mprt_blocks=["fc"])
    for bad in ({"mprt_mode": "sideways"}, {"mprt_samples": 0}, {"mprt_noise": -0.1}, {"mprt_bins": 0}):
        with pytest.raises(ValueError):
            SanitySettings.model_validate(bad)
    smoothed = [{"name": "sg", "method": "gradcam", "smooth": {"n": 2}}]
    cfg = config(tmp_path, TOY, smoothed, mprt_mode="smooth")  # type: ignore[arg-type]
    with pytest.raises(CamexpError, match=r"^sanity.mprt_mode smooth averages .*\['sg'\] already have"):
        Mprt(cfg)


@pytest.fixture(scope="module")
def toy() -> LoadedModel:
    """The toy with its 'trained' weights: features (1, 0, 0), fc (1, -1)."""
    loaded = build_model(ModelConfig(**TOY))
    with torch.no_grad():
        loaded.model.net.features.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
        loaded.model.net.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    return loaded


def ramp() -> torch.Tensor:
    """One image: channel 0 a ramp of distinct values 0 ... 1 over the pixels (row-major), the others 0.5."""
    x = torch.full((1, 3, SIDE, SIDE), 0.5)
    x[0, 0] = torch.linspace(0, 1, SIDE * SIDE).view(SIDE, SIDE)
    return x


def test_independent_and_cascading_differ_as_computed_by_hand(tmp_path: Path, toy: LoadedModel) -> None:
    """CAM's map (no ReLU) of class c is fc[c] * A = fc[c] * features[0] * ramp: a rising ramp when the product is
    positive, a falling one when negative, so each Spearman with the trained map (1 * 1 > 0: rising) is +1 or -1.
    Trained logits (m, -m), m = mean ramp > 0: the target is class 0. Blocks head first: fc, features.
    - depth 1 (fc random, -3; features trained, 1): -3 < 0, -1 in both modes;
    - depth 2, cascading (both random: -3 * -2 = 6 > 0): +1;
    - depth 2, independent (features alone random: 1 * -2 < 0): -1.
    The main table: cascading's fully random model +1, independent's mean over the blocks -1."""
    got = {}
    for mode in ("cascading", "independent"):
        out = tmp_path / mode
        out.mkdir()
        cfg = config(out, TOY, ["cam"], mprt_mode=mode)
        ctx = run_mprt(cfg, toy, ramp(), out)
        lines = Mprt(cfg).finish(out)
        stem = MODES[mode].stem
        assert {f"{stem}_curve.csv", f"{stem}.png", f"{stem}_maps.png"} <= {p.name for p in out.iterdir()}
        assert f"{stem}_curve.csv" in "".join(lines)
        assert ctx.targets.tolist() == [0]
        rows = read_records(out / MODES[mode].csv, MPRT_COLUMNS)
        assert rows["block"].tolist() == ["fc", "features"]
        got[mode] = rows["spearman"].tolist()
        result = mprt_result(out, rows[["index"]].drop_duplicates(), ["cam"])
        label = MODES[mode].rows[0].label
        got[label] = result.rows[label]["cam"]
    assert got["cascading"] == pytest.approx([-1.0, 1.0], abs=1e-12)
    assert got["independent"] == pytest.approx([-1.0, -1.0], abs=1e-12)
    assert got["MPRT Spearman, all blocks random (lower is better)"] == pytest.approx(1.0)
    assert got["MPRT independent Spearman, mean over blocks (lower is better)"] == pytest.approx(-1.0)
    assert not (tmp_path / "independent" / "mprt.csv").exists()  # each mode's rows under its own names


def test_efficient_mode_by_hand_and_its_rows(tmp_path: Path, toy: LoadedModel) -> None:
    """Every CAM map of the ramp image is a ramp, rising or falling, of 1024 evenly spaced values: normalised,
    value k/1023 falls in bin floor(100 k / 1023) of 100 (the last value in the last bin), the same counts (10 or
    11 a bin) on both models, so the rise is 0. 100 evenly spaced values in 10 bins: 10 a bin, log 10."""
    cfg = config(tmp_path, TOY, ["cam"], mprt_mode="efficient")
    run_mprt(cfg, toy, ramp(), tmp_path)
    rows = read_records(tmp_path / EFFICIENT_CSV, EFFICIENT_COLUMNS)
    counts = np.bincount(np.minimum(np.arange(SIDE * SIDE) * 100 // (SIDE * SIDE - 1), 99))
    p = counts / counts.sum()
    assert rows[["entropy_trained", "entropy_random"]].to_numpy() == pytest.approx(-(p * np.log(p)).sum(), abs=1e-12)
    assert rows["efficient_mprt"].tolist() == pytest.approx([0.0], abs=1e-12)
    assert discrete_entropy(torch.linspace(0, 1, 100).view(1, 10, 10), 10) == pytest.approx([np.log(10)])
    assert discrete_entropy(torch.zeros(1, 4, 4), 100) == [0.0]  # a constant map: every pixel in one bin
    per_image = mprt_per_image(tmp_path, rows[["index"]], ["cam"])
    assert per_image is not None and per_image["metric"].tolist() == ["efficient_mprt"]
    result = mprt_result(tmp_path, rows[["index"]], ["cam"])
    assert result.rows == {"Efficient MPRT: rise in entropy, all blocks random (higher is better)": {"cam": 0.0}}
    assert not (tmp_path / MODES["cascading"].csv).exists()
