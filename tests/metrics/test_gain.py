"""Average Gain (Opti-CAM; xplique's AverageGainMetric) from the records: by hand, against xplique's formula
written out, and through `camexp report table` on a run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from camexp.metrics import METRICS, MetricParams, RecordsView
from camexp.metrics.gain import gain_per_image
from camexp.report.tables import summarize_run_dir
from tests.report.test_uncertainty import write_run


def test_by_hand() -> None:
    """Y = 0.5, O = 0.75: a gain of 0.25 over a headroom of 0.5, 50 %; O below Y gains nothing; Y = 1 has no
    headroom and counts 0; the mean over images is the row."""
    y = torch.tensor([0.5, 0.5, 1.0, 0.2], dtype=torch.float64)
    o = torch.tensor([[0.75, 0.25], [0.5, 1.0], [1.0, 0.3], [0.6, 0.2]], dtype=torch.float64)
    np.testing.assert_allclose(gain_per_image(y, o).numpy(), [[50, 0], [0, 100], [0, 0], [50, 0]])
    view = RecordsView(["a", "b"], ["i0", "i1", "i2", "i3"], y, o, torch.full((4,), float("nan")))
    rows = METRICS.get("avg_gain").compute(view, MetricParams()).rows
    assert rows == {"Average gain % (higher is better)": {"a": 25.0, "b": 25.0}}


def test_equal_to_xpliques_formula() -> None:
    """xplique 2.0: AG_i = relu(after - base) / (1 - base + 1e-8), mean over images (xplique needs TensorFlow,
    which camexp does not install: its formula is written here). Equal to 1e-6 relative wherever 1 - Y is not
    tiny; the 1e-8 is the only difference (documented)."""
    g = np.random.default_rng(0)
    y = g.uniform(0.05, 0.95, 200)
    o = y[:, None] * g.uniform(0.5, 1.8, (200, 3))
    theirs = 100 * (np.maximum(o - y[:, None], 0) / (1 - y[:, None] + 1e-8)).mean(0)
    ours = gain_per_image(torch.from_numpy(y), torch.from_numpy(o)).mean(0).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_a_run_folder_gets_the_row_with_an_interval(tmp_path: Path) -> None:
    y = np.full(4, 0.5)
    o = np.array([[0.75, 0.5, 0.25], [0.5, 0.5, 1.0], [0.5, 0.5, 0.5], [1.0, 0.5, 0.5]])
    run = write_run(tmp_path, "g", "resnet18", y, o, metrics=["avg_drop", "avg_gain"])
    main = summarize_run_dir(run).main
    assert main.loc["Average gain % (higher is better)"].tolist() == pytest.approx([37.5, 0.0, 25.0])
