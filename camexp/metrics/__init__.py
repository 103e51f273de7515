"""Metric registry: each metric turns the per-image records of a run into summary rows and tables.

A metric is a function `(view, params) -> MetricResult` registered with `@metric(name)` (metadata, such
as needing true labels, on the entry); the summary is recomputed from records at any time
(`camexp table`), never from in-memory state of a run. A plug-in metric is such a function named by
import path (`metrics: [mypkg.metrics:my_metric]`) or entry point (group `camexp.metrics`).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations

import pandas as pd
import torch

from camexp.metrics import faithfulness as F
from camexp.registry import Registry


@dataclass
class RecordsView:
    """Per-image records in wide form: one row per image, one column per method."""

    methods: list[str]
    image_ids: list[str]
    y: torch.Tensor  # (N,) target confidence on the full image
    o: torch.Tensor  # (N, M) target confidence on each method's explanation image
    p_true: torch.Tensor  # (N,) true-class confidence on the full image (NaN: no label)


@dataclass
class MetricResult:
    """`rows`: label -> method -> value, for the main table (metrics as rows, methods as columns);
    `tables`: extra titled tables; `notes`: lines printed under the tables."""

    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def merge(self, other: "MetricResult") -> None:
        """Add `other`'s rows, tables and notes after ours."""
        self.rows.update(other.rows)
        self.tables.update(other.tables)
        self.notes += other.notes


@dataclass(frozen=True)
class MetricParams:
    relperf_min_true_prob: float = 0.0


MetricFn = Callable[[RecordsView, MetricParams], MetricResult]


@dataclass(frozen=True)
class Metric:
    """A registered record metric; `needs_labels`: it needs a true label for every image."""

    name: str
    fn: MetricFn
    needs_labels: bool = False

    def __call__(self, view: RecordsView, params: MetricParams) -> MetricResult:
        return self.fn(view, params)


def _as_metric(name: str, obj: object) -> Metric:
    if isinstance(obj, Metric):
        return obj
    if callable(obj):
        return Metric(name, obj)  # type: ignore[arg-type]
    raise TypeError(f"a metric must be a function (RecordsView, MetricParams) -> MetricResult, not {type(obj).__name__}")


METRICS: Registry[Metric] = Registry("metric", _as_metric)


def metric(name: str, needs_labels: bool = False) -> Callable[[MetricFn], Metric]:
    def register(fn: MetricFn) -> Metric:
        return METRICS.register(name, Metric(name, fn, needs_labels))

    return register


@metric("avg_drop")
def _avg_drop(v: RecordsView, p: MetricParams) -> MetricResult:
    return MetricResult(rows={"Average drop % (lower is better)": {
        m: F.average_drop(v.y, v.o[:, j]) for j, m in enumerate(v.methods)}})


@metric("increase")
def _increase(v: RecordsView, p: MetricParams) -> MetricResult:
    return MetricResult(rows={"% increase in confidence (higher is better)": {
        m: F.increase_in_confidence(v.y, v.o[:, j]) for j, m in enumerate(v.methods)}})


@metric("win")
def _win(v: RecordsView, p: MetricParams) -> MetricResult:
    w = F.win_matrix(v.o)
    table = pd.DataFrame(w.numpy(), index=v.methods, columns=v.methods)
    table.index.name = "win % of row vs column"
    res = MetricResult(tables={"Win % (row method vs column method, ties counted half)": table})
    if len(v.methods) == 2:
        res.rows["Win % (higher is better)"] = {v.methods[0]: float(w[0, 1]), v.methods[1]: float(w[1, 0])}
    share = F.best_share(v.o)
    res.rows["Best share % (camexp extension: strictly smallest fall)"] = {
        m: float(share[j]) for j, m in enumerate(v.methods)}
    return res


@metric("relperf", needs_labels=True)
def _relperf(v: RecordsView, p: MetricParams) -> MetricResult:
    keep = v.p_true > p.relperf_min_true_prob
    rows = []
    for a, b in combinations(range(len(v.methods)), 2):
        r, mean, std = F.relative_performance(v.o[keep, a], v.o[keep, b])
        rows.append({"pair": f"{v.methods[a]} vs {v.methods[b]}", "R": r, "mean log R": mean, "std log R": std,
                     "images": int(keep.sum())})
    table = pd.DataFrame(rows).set_index("pair") if rows else pd.DataFrame()
    note = (f"Relative performance on {int(keep.sum())} of {len(v.image_ids)} images whose true class has "
            f"full-image confidence > {p.relperf_min_true_prob:g}.")
    if any(not math.isfinite(x) for x in table.get("R", [])):
        note += " Some confidences underflowed to 0: R is not finite."
    return MetricResult(tables={"Relative performance R = exp(mean log(O_A / O_B))": table}, notes=[note])


def compute_metrics(names: list[str], view: RecordsView, params: MetricParams) -> MetricResult:
    """Run the named metrics and merge their results in order."""
    out = MetricResult()
    for name in names:
        out.merge(METRICS.get(name)(view, params))
    return out
