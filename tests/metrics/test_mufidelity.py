"""MuFidelity (xplique 2.0): the grid cells, and the metric by hand on the toy model against xplique's algorithm
written out (xplique needs TensorFlow, which camexp does not install)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from camexp.metrics import METRICS
from camexp.metrics.mufidelity import KEY, cell_of, removed_cells
from tests.metrics.test_perturbation import MAP, toy_batch


def test_cells_are_nearest_resizing_with_half_pixel_centres() -> None:
    """A 4x4 input on a 2x2 grid: quadrants. One column lies in the middle cell of its row of cells (its centre
    0.5 x g / 1): on a 3-cell grid 9 rows give three rows per cell, cells 1, 4, 7; on a 2-cell grid 5 rows give
    rows 0, 1 (centres 0.5, 1.5 x 2/5 < 1) in cell 1, rows 2, 3, 4 (row 2's centre 2.5 x 2/5 = 1) in cell 3."""
    assert cell_of((4, 4), 2).view(4, 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert cell_of((9, 1), 3).tolist() == [1, 1, 1, 4, 4, 4, 7, 7, 7]
    assert cell_of((5, 1), 2).tolist() == [1, 1, 3, 3, 3]


def test_by_hand_against_xpliques_algorithm_on_the_toy_model() -> None:
    """xplique: kept = u > subset_percent per cell, resized to the input; degraded = x * kept + (1 - kept) * 0;
    pred = f(x) - f(degraded); attr = sum(phi * (1 - kept)); spearmanr(pred, attr). SumNet's logit drops by the
    removed pixels' sum (k + 1) / 68, so every term is known; with the same draws the value is xplique's."""
    settings = {"grid": 2, "subset_percent": 0.5, "samples": 12}
    batch = toy_batch(settings={KEY: settings}, perturbation={"score": "logit"})
    batch.batch["image_id"] = ["toy"]
    (out,) = METRICS.get(KEY).compute(batch)
    removed = removed_cells(batch.cfg.runtime.seed, "toy", 12, 2, 0.5).numpy()  # (R, 4 cells)
    kept = 1.0 - removed[:, cell_of((4, 4), 2).numpy()]  # (R, 16) pixels
    pixels = np.arange(1, 17, dtype=np.float64)
    pred = ((1 - kept) * pixels).sum(1) / 68
    attr = ((1 - kept) * MAP.flatten().double().numpy()).sum(1)
    assert float(out.value[0]) == pytest.approx(spearmanr(pred, attr).statistic, abs=1e-6)


def test_a_constant_map_is_undefined_not_zero() -> None:
    """xplique counts an undefined correlation as 0; camexp leaves it NaN (out of the mean, counted)."""
    batch = toy_batch(settings={KEY: {"grid": 2, "samples": 5}})
    batch.explanation.maps = {"m": torch.zeros(1, 4, 4)}
    (out,) = METRICS.get(KEY).compute(batch)
    assert torch.isnan(out.value).all()
