"""Metric registry: each metric turns the per-image records of a run into summary rows and tables.

A metric is a function `(view, params) -> MetricResult` registered with `@metric(name, rows=...)` (metadata,
such as needing true labels, and its main-table rows with their direction and per-image values, on the
entry); the summary is recomputed from records at any time (`camexp report table`), never from in-memory state of a
run. A plug-in metric is such a function, or a `MetricEntry` (`Metric(...)`, `BatchMetric(...)`), named by import path
(`metrics: [mypkg.metrics:my_metric]`) or entry point (group `camexp.metrics`).
"""

from __future__ import annotations

import math
from itertools import combinations

import pandas as pd

from camexp.metrics import faithfulness as F
from camexp.metrics.base import (
    METRICS,
    BatchMetric,
    Curve,
    Metric,
    MetricEntry,
    MetricFn,
    MetricParams,
    MetricResult,
    PairColumns,
    Pairwise,
    PerImage,
    RecordsView,
    Row,
    all_rows,
    batch_metric,
    batch_metrics,
    curve_of,
    metric,
    metric_problems,
    record_metrics,
    settings_fingerprint,
    settings_of,
    table_files,
    validate_settings,
)
from camexp.stats.bootstrap import log_values, relperf_table, win_table, win_values

AVG_DROP = Row("avg_drop", "Average drop %", True, criterion="faithfulness", per_image=F.drop_per_image)
INCREASE = Row("increase", "% increase in confidence", False, criterion="faithfulness", per_image=F.increase_per_image)
# its interval comes from the pairwise win %
WIN = Row("win", "Win %", False, image_mean=False, null=50.0, criterion="faithfulness")
BEST_SHARE = Row(
    "best_share",
    "Best share % (camexp extension: strictly smallest fall)",
    False,
    show_direction=False,
    criterion="faithfulness",
    per_image=lambda y, o: 100.0 * F.strictly_best(o),
)


@metric("avg_drop", rows=(AVG_DROP,))
def _avg_drop(v: RecordsView, p: MetricParams) -> MetricResult:
    return MetricResult(rows={AVG_DROP.label: {m: F.average_drop(v.y, v.o[:, j]) for j, m in enumerate(v.methods)}})


@metric("increase", rows=(INCREASE,))
def _increase(v: RecordsView, p: MetricParams) -> MetricResult:
    return MetricResult(
        rows={INCREASE.label: {m: F.increase_in_confidence(v.y, v.o[:, j]) for j, m in enumerate(v.methods)}}
    )


WIN_TABLE = "Win % (row method vs column method, ties counted half)"
RELPERF_TABLE = "Relative performance R = exp(mean log(O_A / O_B))"


@metric(
    "win",
    rows=(WIN, BEST_SHARE),
    pairwise=Pairwise(
        win_values,
        lambda *a: win_table(*a).assign(interval="bootstrap"),
        per_method=True,
        shown=PairColumns("win % A vs B", sign_test=True),
    ),
    table_files=((WIN_TABLE, "win_matrix"),),
    compares=True,
)
def _win(v: RecordsView, p: MetricParams) -> MetricResult:
    w = F.win_matrix(v.o)
    table = pd.DataFrame(w.numpy(), index=v.methods, columns=v.methods)
    table.index.name = "win % of row vs column"
    res = MetricResult(tables={WIN_TABLE: table})
    if len(v.methods) == 2:
        res.rows[WIN.label] = {v.methods[0]: float(w[0, 1]), v.methods[1]: float(w[1, 0])}
    share = F.best_share(v.o)
    res.rows[BEST_SHARE.label] = {m: float(share[j]) for j, m in enumerate(v.methods)}
    return res


@metric(
    "relperf",
    needs_labels=True,
    pairwise=Pairwise(
        log_values,
        relperf_table,
        select=lambda v, p: v.p_true > p.relperf_min_true_prob,
        shown=PairColumns("R ({interval})", digits=3),
    ),
    table_files=((RELPERF_TABLE, "relperf"),),
)
def _relperf(v: RecordsView, p: MetricParams) -> MetricResult:
    keep = v.p_true > p.relperf_min_true_prob
    rows = []
    for a, b in combinations(range(len(v.methods)), 2):
        r, mean, std = F.relative_performance(v.o[keep, a], v.o[keep, b])
        rows.append(
            {
                "pair": f"{v.methods[a]} vs {v.methods[b]}",
                "R": r,
                "mean log R": mean,
                "std log R": std,
                "images": int(keep.sum()),
            }
        )
    table = pd.DataFrame(rows).set_index("pair") if rows else pd.DataFrame()
    note = (
        f"Relative performance on {int(keep.sum())} of {len(v.image_ids)} images whose true class has "
        f"full-image confidence > {p.relperf_min_true_prob:g}."
    )
    if any(not math.isfinite(x) for x in table.get("R", [])):
        note += " Some confidences underflowed to 0: R is not finite."
    return MetricResult(tables={RELPERF_TABLE: table}, notes=[note])


def compute_metrics(names: list[str], view: RecordsView, params: MetricParams) -> MetricResult:
    """Run the named record metrics and merge their results in order (per-batch metrics are summarised from
    their own file: `camexp.report.tables.summarize`)."""
    out = MetricResult()
    for name in names:
        entry = METRICS.get(name)
        if entry.source == "records":
            with METRICS.running(entry, "its summary", entry.compute):
                out.merge(entry.compute(view, params))
    return out


__all__ = [
    "METRICS",
    "BatchMetric",
    "Curve",
    "Metric",
    "MetricEntry",
    "MetricFn",
    "MetricParams",
    "MetricResult",
    "PairColumns",
    "Pairwise",
    "PerImage",
    "RecordsView",
    "Row",
    "all_rows",
    "batch_metric",
    "batch_metrics",
    "curve_of",
    "compute_metrics",
    "metric",
    "metric_problems",
    "record_metrics",
    "settings_fingerprint",
    "settings_of",
    "table_files",
    "validate_settings",
    "writes_curves",
]

from camexp.metrics import (  # noqa: E402, F401  (registers the others)
    adcc,
    complexity,
    correlation,
    gain,
    infidelity,
    instances,
    irof,
    mufidelity,
    perturbation,
    pointing,
    road,
    robustness,
)
from camexp.metrics.perturbation import writes_curves  # noqa: E402  (after the record metrics: registration order)
