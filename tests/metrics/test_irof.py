"""IROF (Rieger & Hansen 2020): the segment order, the area over the curve, the whole metric by hand on the toy
model with fixed superpixels, and Quantus 0.6's IROF on real Lite0 maps with the same superpixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from camexp.metrics import METRICS
from camexp.metrics.irof import aoc, irof_curves, quantus_aoc, segment_ranks, superpixels
from tests.metrics.test_perturbation import MAP, toy_batch

QUADRANTS = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


def test_segments_ordered_by_mean_relevance_ties_by_label() -> None:
    """MAP's quadrant means: 1 (top left), 0 (top right), 0 (bottom left), 0.125 (bottom right): removed in the
    order 0, 3, 1, 2."""
    places = segment_ranks(torch.from_numpy(QUADRANTS).flatten(), MAP.flatten())
    assert places.view(4, 4)[::2, ::2].tolist() == [[0, 2], [3, 1]]


def test_area_over_the_curve_by_hand() -> None:
    """A curve falling at once to 0 has area 1 - 1/(2L); a flat curve 0; Quantus' form of the same curve is
    L - (trapezoid of p_1..p_L, unit spacing)."""
    assert aoc(np.array([1.0, 0, 0, 0])) == pytest.approx(1 - 1 / 6)
    assert aoc(np.ones(5)) == 0.0
    assert quantus_aoc(np.array([1.0, 0.5, 0.25])) == pytest.approx(2 - 0.375)


def test_irof_on_the_toy_model_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """SumNet's logit is sum(channel 0 normalised) / 68 - 1 = 1 on the image (pixels k + 1 sum to 136); the
    quadrants hold 14, 22, 46 and 54. Removed (set to 0) in the order 0, 3, 1, 2: logits 54/68, 0, -22/68, -1,
    so p = [1, 54/68, 0, -22/68, -1] and IROF = 1 - (sum of the trapezoids) / 4 = 1 - (64/68) / 8."""
    monkeypatch.setattr("camexp.metrics.irof.superpixels", lambda image, segments, compactness: QUADRANTS)
    batch = toy_batch(settings={"irof": {}}, perturbation={"score": "logit"})
    (curve,) = irof_curves(batch)[0]
    np.testing.assert_allclose(curve, [1, 54 / 68, 0, -22 / 68, -1], atol=1e-6)
    (out,) = METRICS.get("irof").compute(batch)
    assert float(out.value[0]) == pytest.approx(1 - (64 / 68) / 8, abs=1e-6)


def test_superpixels_are_labelled_from_zero_without_gaps() -> None:
    g = torch.Generator().manual_seed(0)
    labels = superpixels(torch.rand(3, 32, 32, generator=g), 20, 10.0)
    assert labels.shape == (32, 32) and np.array_equal(np.unique(labels), np.arange(labels.max() + 1))


@pytest.mark.slow
def test_equal_to_quantus_on_real_lite0_maps(photo_dir: Path, lite0) -> None:
    """Quantus' IROF (SLIC defaults, softmax) given the pixel-space image, the pixel-space model and a perturb
    function that puts the mean colour (our `zero` baseline) in the removed superpixels sees our superpixels and
    our curve: its value is `quantus_aoc` of our curve to 1e-5, one image per call (Quantus pads a batch's
    curves with zeros when its images have different numbers of segments, which adds a trapezoid to the
    shorter ones). Ours, the area over the normalised curve, is recorded beside it."""
    quantus = pytest.importorskip("quantus")
    from camexp.config import ExperimentConfig
    from camexp.data import build_dataset, collate
    from camexp.explain.core import Explainer
    from camexp.explain.scoring import Scorer
    from camexp.metrics import validate_settings
    from camexp.metrics.batch import BatchContext

    cfg = ExperimentConfig(
        name="irof",
        dataset={"root": str(photo_dir), "limit": 2},
        model={"name": "tf_efficientnet_lite0"},
        methods=["gradcam"],
        metrics=["irof"],
        settings={"irof": {"segments": 30}},
    )
    ds = build_dataset(cfg.dataset, lite0.spec)
    x = collate([ds[i] for i in range(len(ds))])["image"]
    explainer = Explainer(lite0, cfg.methods, scorer=Scorer(lite0.model, chunk=16))
    ex = explainer.explain(x)
    batch = BatchContext(cfg, explainer, x, ex, {}, validate_settings(cfg))
    curves = irof_curves(batch)[0]
    mean = np.array(lite0.spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)

    def mean_colour(arr: np.ndarray, mask: np.ndarray, **_: object) -> np.ndarray:
        return np.where(mask, mean, arr)

    metric = quantus.IROF(perturb_func=mean_colour, return_aggregate=False, disable_warnings=True)
    import quantus.helpers.utils as qutils

    slic_default = qutils.get_superpixel_segments
    for i in range(len(x)):
        with pytest.MonkeyPatch.context() as mp:  # Quantus' SLIC at our n_segments (it passes only the image)
            if not hasattr(np, "trapz"):  # Quantus 0.6's IROF calls np.trapz, which numpy 2.4 removed
                mp.setattr(np, "trapz", np.trapezoid, raising=False)
            mp.setattr(
                qutils,
                "get_superpixel_segments",
                lambda img, segmentation_method: superpixels(torch.from_numpy(np.moveaxis(img, -1, 0)), 30, 10.0),
            )
            theirs = metric(
                model=lite0.model.eval(),
                x_batch=x[i : i + 1].numpy(),
                y_batch=ex.targets[i : i + 1].numpy(),
                a_batch=ex.maps["gradcam"][i : i + 1, None].numpy(),
                softmax=True,
                device="cpu",
            )
        assert qutils.get_superpixel_segments is slic_default
        assert float(theirs[0]) == pytest.approx(quantus_aoc(curves[i]), abs=1e-5)
        print(f"image {i}: Quantus {float(theirs[0]):.4f}, ours (normalised) {aoc(curves[i]):.4f}")
