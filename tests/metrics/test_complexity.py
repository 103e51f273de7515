"""Sparseness (Gini index) and Complexity (entropy) of maps: by hand on tiny maps, equal to Quantus' own
metrics on the same maps, and through a run (docs/guide/trustworthiness.md, "Complexity metrics")."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from camexp.explain.maps import upsample_normalize
from camexp.metrics.complexity import GINI_EPS, entropy, gini
from tests.metrics.test_metric_contract import _config, _run


def test_gini_by_hand() -> None:
    """One-hot: sum_i (2i - n - 1) a_i over the sorted a + eps is (n - 1) * 1 (the eps terms sum to 0) and
    sum a = 1 + n eps, so G = (n - 1) / (n (1 + n eps)); a constant map (or zeros) gives 0."""
    n = 16
    one_hot = torch.zeros(1, 4, 4)
    one_hot[0, 2, 1] = 5.0
    assert gini(one_hot).item() == pytest.approx((n - 1) / (n * (1 + n * GINI_EPS)), rel=1e-12)
    assert gini(torch.full((1, 4, 4), 0.3)).tolist() == pytest.approx([0.0], abs=1e-15)
    assert gini(torch.zeros(1, 4, 4)).tolist() == pytest.approx([0.0], abs=1e-15)
    # half the pixels at 1, half at 0: G = (sum over the upper half of 2i - n - 1) / (n * n/2) = 1/2 (up to eps)
    half = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    assert gini(half).item() == pytest.approx(0.5, rel=1e-6)
    # the sign of an attribution does not count (Quantus' abs=True), nor its scale (normalise_by_max)
    assert gini(-3 * half).item() == pytest.approx(gini(half).item(), rel=1e-12)


def test_entropy_by_hand() -> None:
    """Uniform over n pixels: log n; one-hot: 0; two equal pixels: log 2; a map of zeros stands for a
    constant map: log n."""
    assert entropy(torch.full((1, 8, 8), 0.7)).item() == pytest.approx(math.log(64), rel=1e-9)
    assert entropy(torch.zeros(1, 8, 8)).item() == math.log(64)
    one_hot = torch.zeros(1, 8, 8)
    one_hot[0, 3, 3] = 1.0
    assert entropy(one_hot).item() == pytest.approx(0.0, abs=1e-10)
    two = torch.zeros(1, 8, 8)
    two[0, 0, 0], two[0, 7, 7] = 1.0, -1.0  # absolute values: two equal masses
    assert entropy(two).item() == pytest.approx(math.log(2), rel=1e-9)


def _camexp_maps(seed: int = 0) -> torch.Tensor:
    """(6, 32, 32) float64 maps as a run has them: coarse random maps upsampled and min-max normalised, plus a
    one-hot map and a peaked one."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(4, 7, 7, generator=g, dtype=torch.float64) ** 3
    maps, _ = upsample_normalize(coarse, (32, 32))
    one_hot = torch.zeros(1, 32, 32, dtype=torch.float64)
    one_hot[0, 5, 9] = 1.0
    peak = torch.exp(-((torch.arange(32.0)[:, None] - 10) ** 2 + (torch.arange(32.0) - 20) ** 2) / 8)[None]
    return torch.cat([maps.double(), one_hot, peak.double() / peak.max()])


def _quantus(maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Quantus' Sparseness and Complexity with their defaults (abs=True, normalise=True, normalise_by_max) on
    (B,H,W) attributions of (B,3,H,W) inputs; no model is needed for either."""
    quantus = pytest.importorskip("quantus")
    a = maps.numpy().astype(np.float64)
    x = np.zeros((len(a), 3, *a.shape[1:]))
    y = np.zeros(len(a), dtype=int)
    sparse = quantus.Sparseness(disable_warnings=True)(model=None, x_batch=x, y_batch=y, a_batch=a.copy())
    comp = quantus.Complexity(disable_warnings=True)(model=None, x_batch=x, y_batch=y, a_batch=a.copy())
    return np.asarray(sparse, dtype=np.float64), np.asarray(comp, dtype=np.float64)


def test_equal_to_quantus_on_the_same_maps(record_property: pytest.RecordProperty) -> None:
    """On maps as camexp hands them to metrics (each in [0,1] with maximum 1, at input resolution; a constant
    map among them) both are Quantus' values to float64 rounding. Recorded, not asserted: Quantus divides a
    batch by the batch's maximum, camexp each map by its own, so maps of other scales differ by the 1e-7 /
    1e-12 constants' share; and Quantus' entropy of a map of zeros (camexp's constant map) is NaN (0/0) where
    camexp's is that of the constant map, log n. (Quantus refuses a batch whose maps are all constant.)"""
    maps = torch.cat([_camexp_maps(), torch.full((1, 32, 32), 0.5, dtype=torch.float64)])
    q_sparse, q_comp = _quantus(maps)
    np.testing.assert_allclose(gini(maps).numpy(), q_sparse, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(entropy(maps).numpy(), q_comp, rtol=1e-12, atol=1e-12)
    assert entropy(torch.zeros(1, 32, 32)).item() == pytest.approx(float(q_comp[-1]), rel=1e-9)
    scaled = maps * torch.linspace(0.01, 3.0, len(maps), dtype=torch.float64)[:, None, None]
    s_sparse, s_comp = _quantus(scaled)
    record_property("sparseness_max_abs_dev_mixed_scales", float(np.abs(gini(scaled).numpy() - s_sparse).max()))
    record_property("complexity_max_abs_dev_mixed_scales", float(np.abs(entropy(scaled).numpy() - s_comp).max()))
    with_zeros = torch.cat([maps[:1], torch.zeros(1, 32, 32, dtype=torch.float64)])
    _, z_comp = _quantus(with_zeros)
    record_property("quantus_complexity_of_zeros", float(z_comp[-1]))


def test_a_run_writes_both_per_image(tmp_path: Path, photo_dir: Path) -> None:
    """Through the runner: one value per image and method, in range, and summary rows with their direction;
    the `center` floor is the same map on every image, so its values are equal across images."""
    res = _run(_config(tmp_path, photo_dir, "cx", methods=["gradcam", "center"], metrics=["sparseness", "complexity"]))
    assert res.exit_code == 0, res.output
    values = pd.read_csv(tmp_path / "runs" / "cx" / "per_image_metrics.csv")
    assert len(values) == 2 * 4 * 2
    sparse = values[values.metric == "sparseness"]
    comp = values[values.metric == "complexity"]
    assert sparse.value.between(0, 1).all() and comp.value.between(0, math.log(224 * 224) + 1e-9).all()
    centre = comp[comp.method == "center"].value
    assert centre.max() - centre.min() < 1e-9
    summary = pd.read_csv(tmp_path / "runs" / "cx" / "summary.csv", index_col=0)
    assert {"Sparseness (Gini index) (higher is better)", "Complexity (entropy) (lower is better)"} <= set(
        summary.index
    )


def test_effective_complexity_by_hand_and_equal_to_quantus() -> None:
    """One-hot: 1 pixel; a constant map (stored as zeros): every pixel; a map with values 0, 1e-6, 1e-4, 1:
    2 above ε = 1e-5 of the maximum, and the sign does not count. Quantus' EffectiveComplexity (defaults: abs,
    normalise_by_max, ε = 1e-5) gives the same counts on camexp's maps."""
    quantus = pytest.importorskip("quantus")
    from camexp.metrics.complexity import effective

    one_hot = torch.zeros(1, 4, 4)
    one_hot[0, 1, 2] = 0.3
    assert effective(one_hot, 1e-5).tolist() == [1.0]
    assert effective(torch.zeros(1, 4, 4), 1e-5).tolist() == [16.0]
    steps = torch.tensor([[[0.0, 1e-6], [-1e-4, 1.0]]], dtype=torch.float64)
    assert effective(steps, 1e-5).tolist() == [2.0] and effective(steps, 0.0).tolist() == [3.0]
    maps = _camexp_maps()
    a = maps.numpy()
    theirs = quantus.EffectiveComplexity(disable_warnings=True, return_aggregate=False)(
        model=None, x_batch=np.zeros((len(a), 3, 32, 32)), y_batch=np.zeros(len(a), dtype=int), a_batch=a.copy()
    )
    assert effective(maps, 1e-5).tolist() == [float(v) for v in theirs]
