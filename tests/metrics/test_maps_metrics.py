"""Map normalisation and the faithfulness metrics against hand-computed cases (docs/definitions.md, D2 and D4)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from camexp.explain.maps import normalize, normalize_exact, upsample_normalize
from camexp.metrics import MetricParams, compute_metrics
from camexp.metrics import faithfulness as F
from camexp.results import records_view


def test_normalised_maps_span_zero_to_one():
    m = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    out, const = upsample_normalize(m, (8, 8))
    assert out.shape == (1, 8, 8)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert not const.any()


def test_upsampling_is_bilinear_half_pixel():
    """2 -> 4 pixels with align_corners=False: [a, .75a+.25b, .25a+.75b, b], then min-max."""
    out, _ = upsample_normalize(torch.tensor([[[0.0, 4.0]]]), (1, 4))
    assert torch.allclose(out, torch.tensor([[[0.0, 0.25, 0.75, 1.0]]]))


@pytest.mark.parametrize("value", [0.0, 3.5, -2.0])
def test_constant_map_becomes_zeros_and_is_flagged(value: float):
    out, const = upsample_normalize(torch.full((2, 3, 3), value), (6, 6))
    assert torch.equal(out, torch.zeros(2, 6, 6)) and const.all()
    assert not torch.isnan(out).any()


def test_nan_map_stays_visible_to_the_caller():
    m = torch.tensor([[[0.0, float("nan")]]])
    out, _ = upsample_normalize(m, (2, 2))
    assert torch.isnan(out).any()


def test_exact_normalisation_keeps_the_dtype_and_has_no_tolerance():
    """Score-CAM's masks and the consistency alignment: only an exactly constant map (or a NaN one) is zeros, a
    range of 1e-9 around 1 (float noise to `normalize`) still spans [0, 1], and float64 stays float64."""
    nan = float("nan")
    m = torch.tensor(
        [[[1.0, 1.0 + 1e-9], [1.0, 1.0]], [[2.0, 2.0], [2.0, 2.0]], [[0.0, nan], [1.0, 2.0]]], dtype=torch.float64
    )
    out = normalize_exact(m)
    assert out.dtype == torch.float64
    assert torch.equal(out[0], torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64))
    assert torch.equal(out[1:], torch.zeros(2, 2, 2, dtype=torch.float64))
    tolerant, constant = normalize(m[:1])
    assert constant.all() and not tolerant.any()  # the run's rule (float32, a tolerance): constant
    x = torch.tensor([[[0.0, 1.0], [3.0, 4.0]]], dtype=torch.float16)
    assert torch.equal(normalize_exact(x), torch.tensor([[[0.0, 0.25], [0.75, 1.0]]], dtype=torch.float16))


def test_average_drop_and_increase_by_hand():
    y = torch.tensor([0.8, 0.5, 0.4, 0.9], dtype=torch.float64)
    o = torch.tensor([0.4, 0.6, 0.4, 0.0], dtype=torch.float64)
    # drops: 0.5, 0 (o > y counts 0), 0 (equal), 1.0 -> mean 0.375
    assert F.average_drop(y, o) == pytest.approx(37.5)
    assert F.increase_in_confidence(y, o) == pytest.approx(25.0)  # only image 2 strictly increases


def test_win_matrix_counts_ties_half():
    o = torch.tensor([[0.5, 0.4], [0.3, 0.3], [0.1, 0.2], [0.9, 0.1]], dtype=torch.float64)
    w = F.win_matrix(o)
    # A wins images 0, 3; tie on 1; B wins 2 -> A: (2 + 0.5)/4 = 62.5 %
    assert float(w[0, 1]) == pytest.approx(62.5) and float(w[1, 0]) == pytest.approx(37.5)
    assert math.isnan(float(w[0, 0]))


def test_best_share_ignores_shared_best():
    o = torch.tensor([[0.5, 0.4, 0.1], [0.3, 0.3, 0.1], [0.1, 0.2, 0.3]], dtype=torch.float64)
    assert F.best_share(o).tolist() == pytest.approx([100 / 3, 0.0, 100 / 3])


def test_relative_performance_by_hand():
    oa = torch.tensor([0.2, 0.9], dtype=torch.float64)
    ob = torch.tensor([0.1, 0.9], dtype=torch.float64)
    r, mean, std = F.relative_performance(oa, ob)
    assert mean == pytest.approx(math.log(2) / 2)
    assert r == pytest.approx(math.sqrt(2))
    assert std == pytest.approx(math.log(2) / math.sqrt(2))  # ddof=1 of [log 2, 0]


def _records() -> pd.DataFrame:
    rows = []
    # image: (y, p_true, o_gradcam, o_gradcam++)
    data = {0: (0.8, 0.9, 0.4, 0.8), 1: (0.5, 0.2, 0.25, 0.5), 2: (0.6, 0.7, 0.3, 0.15)}
    for i, (y, p, oa, ob) in data.items():
        for m, o in (("gradcam", oa), ("gradcam++", ob)):
            rows.append(
                dict(
                    index=i, image_id=f"im{i}", method=m, target=1, label=1, pred=1, y=y, o=o, p_true=p, constant_map=0
                )
            )
    return pd.DataFrame(rows)


def test_relperf_threshold_selects_confident_images():
    view = records_view(_records(), ["gradcam", "gradcam++"])
    res = compute_metrics(["relperf"], view, MetricParams(relperf_min_true_prob=0.5))
    table = next(iter(res.tables.values()))
    row = table.loc["gradcam vs gradcam++"]
    assert row["images"] == 2  # image 1 (p_true 0.2) is excluded
    # log(0.4/0.8) = -log 2, log(0.3/0.15) = log 2 -> mean 0, R = 1
    assert row["R"] == pytest.approx(1.0) and row["mean log R"] == pytest.approx(0.0, abs=1e-12)
    assert "2 of 3 images" in res.notes[0]


def test_metric_rows_from_records():
    view = records_view(_records(), ["gradcam", "gradcam++"])
    res = compute_metrics(["avg_drop", "increase", "win"], view, MetricParams())
    drop = res.rows["Average drop % (lower is better)"]
    assert drop["gradcam"] == pytest.approx(100 * (0.5 + 0.5 + 0.5) / 3)
    assert drop["gradcam++"] == pytest.approx(100 * (0 + 0 + 0.75) / 3)
    win = res.rows["Win % (higher is better)"]
    assert win["gradcam++"] == pytest.approx(200 / 3) and win["gradcam"] + win["gradcam++"] == pytest.approx(100)
