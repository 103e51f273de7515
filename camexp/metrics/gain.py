"""Average Gain (Zhang et al., Opti-CAM, CVIU 2024; xplique's `AverageGainMetric`; docs/guide/field-metrics.md,
"Average Gain"): the headroom a method's explanation image wins, from the records alone.

With Y the target's confidence on the full image and O on the explanation image E = L * I (the records'
columns, as average drop reads them): AG = (100 / N) Σ max(0, O − Y) / (1 − Y). Higher is better; it is
average drop's complement (a gain over the headroom 1 − Y where average drop counts a fall over Y). An image
with Y = 1 has no headroom and no possible gain: it counts 0 (xplique divides by 1 − Y + 1e-8).
"""

from __future__ import annotations

import torch

from camexp.metrics.base import MetricParams, MetricResult, RecordsView, Row, metric


def gain_per_image(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """100 max(0, O − Y) / (1 − Y) per image (N,) and method (N, M); 0 where Y = 1."""
    y = y.reshape(-1, *([1] * (o.dim() - 1)))
    headroom = 1.0 - y
    gain = (o - y).clamp(min=0)
    return 100.0 * torch.where(headroom > 0, gain / torch.where(headroom > 0, headroom, 1.0), 0.0 * gain)


AVG_GAIN = Row("avg_gain", "Average gain %", False, criterion="faithfulness", per_image=gain_per_image)


@metric("avg_gain", rows=(AVG_GAIN,))
def avg_gain(v: RecordsView, p: MetricParams) -> MetricResult:
    """Average gain % of each method (Opti-CAM; xplique): the mean over images of `gain_per_image`."""
    values = gain_per_image(v.y, v.o).mean(0)
    return MetricResult(rows={AVG_GAIN.label: {m: float(values[j]) for j, m in enumerate(v.methods)}})
