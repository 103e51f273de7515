"""Per-batch perturbation metrics on hand-made cases computed by hand: a 4x4 image, a toy model whose logit is
a known function of the pixels, and a map whose ranking (ties included) is written out below."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from camexp.config import ExperimentConfig
from camexp.data.transforms import InputSpec
from camexp.explain.scoring import Scorer
from camexp.metrics import METRICS, validate_settings
from camexp.metrics.batch import BatchContext, pixel_ranks
from camexp.metrics.perturbation import auc, rise_kernel, step_counts
from camexp.models import PixelModel

# Pixel k (row-major) of channel 0 holds k + 1, so the image sums to 136. The map ranks pixels 0, 1, 4, 5
# (value 1, ties by index), then 15 (0.5), then the zeros 2, 3, 6, 7, ..., 14 in index order.
MAP = torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0.5]])
RANKED = [0, 1, 4, 5, 15, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14]


class SumNet(nn.Module):
    """Two classes; logit 0 = (sum of channel 0) / 68 - 1, logit 1 = 0: an affine function of the pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, 0].sum((1, 2)) / 68 - 1
        return torch.stack([s, torch.zeros_like(s)], 1)


def image() -> torch.Tensor:
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0] = torch.arange(1, 17, dtype=torch.float32).view(4, 4) / 16  # pixel space; std 1/16 undoes the /16
    return x


def toy_batch(**cfg: Any) -> BatchContext:
    spec = InputSpec(
        size=(4, 4),
        interpolation="bilinear",
        crop_pct=1.0,
        crop_mode="center",
        mean=(0.0, 0.0, 0.0),
        std=(1 / 16, 1 / 16, 1 / 16),
    )
    model = PixelModel(SumNet(), spec)
    x = image()
    config = ExperimentConfig(
        name="toy", dataset={"root": "."}, model={"name": "toy"}, methods=["m"], metrics=["avg_drop"], **cfg
    )
    explanation = SimpleNamespace(maps={"m": MAP[None]}, targets=torch.tensor([0]), logits=model(x))
    scorer = Scorer(model, config.occlusion, config.confidence, chunk=3)  # chunks of 3 split the steps unevenly
    return BatchContext(config, SimpleNamespace(scorer=scorer), x, explanation, {}, validate_settings(config))


def value(name: str, batch: BatchContext) -> float:
    entry = METRICS.get(name)
    assert entry.source == "batch"
    (out,) = entry.compute(batch)
    return float(out.value[0])


def test_ranks_are_a_stable_descending_order() -> None:
    ranks = pixel_ranks(MAP[None])[0]
    assert [int(k) for k in torch.argsort(ranks)] == RANKED


def test_step_counts_and_trapezoid() -> None:
    assert step_counts(16, 4).tolist() == [0, 4, 8, 12, 16]
    assert step_counts(16, 3).tolist() == [0, 6, 12, 16]  # n = ceil(16 / 3) = 6, the last step clamped
    assert step_counts(5, 10).tolist() == [0, 1, 2, 3, 4, 5, 5, 5, 5, 5, 5]
    assert float(auc(torch.tensor([1.0, 0.5, 0.0]))) == pytest.approx(0.5)


def _logit(pixel_sum: float) -> float:
    return pixel_sum / 68 - 1


@pytest.mark.parametrize("steps, removed", [(4, [0, 14, 44, 82, 136]), (3, [0, 33, 82, 136])])
def test_deletion_and_insertion_auc_by_hand(steps: int, removed: list[int]) -> None:
    # deletion after step s: the image without the first counts[s] ranked pixels; score = logit
    batch = toy_batch(perturbation={"steps": steps, "insertion_substrate": [0.0, 0.0, 0.0], "score": "logit"})
    deleted = [_logit(136 - r) for r in removed]
    inserted = [_logit(r) for r in removed]  # black is 0 after normalisation (mean 0): only inserted pixels count
    trapezoid = lambda p: (sum(p) - p[0] / 2 - p[-1] / 2) / steps  # noqa: E731
    assert value("deletion", batch) == pytest.approx(trapezoid(deleted), abs=1e-6)  # the model computes in float32
    assert value("insertion", batch) == pytest.approx(trapezoid(inserted), abs=1e-6)  # the model computes in float32
    # S = 4: deletion (136 + 122 + 92 + 54 + 0 - 68) / 4 = 84 pixel units, insertion 52
    if steps == 4:
        assert value("deletion", batch) == pytest.approx(84 / 68 - 1)
        assert value("insertion", batch) == pytest.approx(52 / 68 - 1)


def test_curves_are_returned_with_their_ends() -> None:
    batch = toy_batch(perturbation={"steps": 4, "score": "logit"})
    (out,) = METRICS.get("deletion").compute(batch)
    assert out.curve.shape == (1, 5)
    assert float(out.curve[0, 0]) == pytest.approx(_logit(136)) and float(out.curve[0, -1]) == pytest.approx(-1.0)


def test_softmax_score_is_the_default() -> None:
    batch = toy_batch(perturbation={"steps": 4, "insertion_substrate": [0.0, 0.0, 0.0]})
    sigmoid = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731  (softmax of [z, 0], class 0)
    p = [sigmoid(_logit(r)) for r in [0, 14, 44, 82, 136]]
    assert value("insertion", batch) == pytest.approx(
        (sum(p) - p[0] / 2 - p[-1] / 2) / 4, abs=1e-6
    )  # the model computes in float32


@pytest.mark.parametrize("mode", ["binary", "weighted"])
def test_kept_fraction_drop_and_increase_by_hand(mode: str) -> None:
    batch = toy_batch(keep={"fraction": 0.5, "mode": mode})
    kept = RANKED[:8]  # 8 of 16 pixels
    weights = MAP.flatten()
    kept_sum = sum((k + 1) * (1.0 if mode == "binary" else float(weights[k])) for k in kept)
    assert kept_sum == (44 if mode == "binary" else 14 + 8)
    sigmoid = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    y, o = sigmoid(_logit(136)), sigmoid(_logit(kept_sum))
    assert value("avg_drop@keep", batch) == pytest.approx(max(0.0, y - o) / y, rel=1e-6)  # per image; the summary: %
    assert value("increase@keep", batch) == 0.0


def test_rise_kernel_is_scipys_blurred_delta() -> None:
    from scipy.ndimage import gaussian_filter

    k = rise_kernel().numpy()
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    assert np.array_equal(k, gaussian_filter(delta, 5)) and k.sum() == pytest.approx(1.0)
    assert k[5, 5] > k[5, 0] > k[0, 0] > 0  # reflect mode: no zero tails inside 11x11


def test_settings_are_validated_and_fingerprinted_with_their_defaults() -> None:
    from camexp.errors import CamexpError
    from camexp.metrics import settings_fingerprint, validate_settings
    from camexp.metrics.perturbation import PerturbationSettings

    def fingerprint(**extra: Any) -> str:
        cfg = ExperimentConfig(name="f", dataset={"root": "."}, model={"name": "toy"}, metrics=["avg_drop"], **extra)
        return cfg.fingerprint(None, settings_fingerprint(cfg))

    base = fingerprint()
    assert fingerprint(perturbation={"steps": PerturbationSettings().steps}) == base  # a default written out
    assert fingerprint(perturbation={"curves": True}) == base  # what is written, not computed
    changed = [
        {"perturbation": {"steps": 50}},
        {"perturbation": {"steps": 50, "curves": True}},
        {"keep": {"mode": "weighted"}},
        {"pointing": {"tolerance": 10}},
        {"road": {"noise": 0.0}},
        {"perturbation": {"insertion_substrate": [0, 0, 0]}},
    ]
    prints = [fingerprint(**extra) for extra in changed]
    assert base not in prints and prints[0] == prints[1] and len(set(prints)) == len(prints) - 1
    for bad, message in (
        ({"perturbation": {"deletion_substrate": [2, 0, 0]}}, "perturbation.deletion_substrate"),
        ({"perturbation": {"steps": 0}}, "perturbation.steps: Input should be greater"),
        ({"road": {"percentiles": [0, 50]}}, "road.percentiles"),
        ({"keep": {"fraction": 0}}, "keep"),
        ({"perturbation": {"score": "prob"}}, "perturbation.score"),
        ({"road": {"nosie": 0}}, "road.nosie: unknown key"),
        ({"settings": {"nope": {}}}, "settings.nope: no metric or analysis reads settings"),
    ):
        cfg = ExperimentConfig(name="f", dataset={"root": "."}, model={"name": "toy"}, **bad)
        with pytest.raises(CamexpError, match=message):
            validate_settings(cfg)


def test_steps_beyond_the_pixel_count_are_a_config_error() -> None:
    from camexp.metrics import metric_problems

    def cfg(steps: int, metrics: list[str]) -> ExperimentConfig:
        return ExperimentConfig(
            name="f", dataset={"root": "."}, model={"name": "toy"}, metrics=metrics, perturbation={"steps": steps}
        )

    assert metric_problems(cfg(224 * 224, ["deletion"]), (224, 224)) == []
    (problem,) = metric_problems(cfg(1_000_000, ["avg_drop", "insertion"]), (224, 224))
    assert problem.startswith("perturbation.steps: 1000000 steps exceed the 50176 pixels")
    assert "use at most 50176" in problem
    assert metric_problems(cfg(1_000_000, ["avg_drop"]), (224, 224)) == []  # no metric reads it


def test_pointing_games_need_boxes(tmp_path) -> None:
    from camexp.check import label_problems
    from camexp.data.base import Item

    cfg = ExperimentConfig(
        name="f", dataset={"root": str(tmp_path)}, model={"name": "toy"}, metrics=["avg_drop", "pointing_game"]
    )
    (problem,) = label_problems(cfg, [Item(path=tmp_path / "a.jpg", image_id="a")])
    assert "metric(s) ['pointing_game'] need ground-truth boxes" in problem
    boxed = Item(path=tmp_path / "a.jpg", image_id="a", boxes=((0, 0, 1, 1),), box_labels=(3,))
    assert label_problems(cfg, [boxed]) == []
