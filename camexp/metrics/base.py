"""The metric contract: record metrics (views of per_image.csv) and per-batch metrics (values per image
computed inside the batch loop), one registry for both.

A record metric is a function `(view, params) -> MetricResult` registered with `@metric(name)`; it is
recomputed from the records at any time. A per-batch metric (`BatchMetric`, `@batch_metric(name)`) needs
more than the records: more forwards per image (insertion/deletion, ROAD, kept-fraction drop) or boxes
(pointing games). It computes per-image values on the device from the batch the runner hands it
(`camexp.metrics.batch.MetricBatch`); the runner appends them to per_image_metrics.csv in long form, and
its `summarize` turns those rows into summary rows, so that `camexp table` recomputes them from the file.
A plug-in is either kind, named by import path (`metrics: [mypkg.metrics:my_metric]`) or entry point
(group `camexp.metrics`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import pandas as pd
import torch

from camexp.registry import Registry

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig
    from camexp.metrics.batch import MetricBatch


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


@dataclass(frozen=True)
class PerImage:
    """Values of one per-batch metric for one method on some images of a batch, still on the device.

    `pos`: (N,) positions among the batch's good images; `cls`: (N,) the class each value is about; `value`:
    (N,) float64, NaN where the image was seen but has no value (no box of its class, not selected), so that
    every processed image leaves a row and the skipped ones are counted from the file; `curve`: optionally
    (N, T) the whole curve, written only with `perturbation.curves`."""

    method: str
    metric: str
    pos: torch.Tensor
    cls: torch.Tensor
    value: torch.Tensor
    curve: torch.Tensor | None = None


Note = Callable[["ExperimentConfig"], str]
# (this metric's rows of the run's final images and methods, methods in run order, the run's config) -> summary
Summarize = Callable[[pd.DataFrame, list[str], "ExperimentConfig"], MetricResult]


@dataclass(frozen=True)
class BatchMetric:
    """A per-batch metric: `compute(batch) -> [PerImage]` per batch, `summarize(rows, methods, cfg)` from the file.

    `rows`: the metric names its PerImage values carry (default: its own name); an image counts as done for
    this metric once a row of any of them exists. `needs_boxes`: the data set must have boxes."""

    name: str
    compute: Callable[["MetricBatch"], list[PerImage]]
    summarize: Summarize
    summary: str = ""
    rows: tuple[str, ...] = ()
    needs_boxes: bool = False
    needs_labels: bool = False

    @property
    def row_names(self) -> tuple[str, ...]:
        return self.rows or (self.name,)


AnyMetric = Union[Metric, BatchMetric]


def _as_metric(name: str, obj: object) -> AnyMetric:
    if isinstance(obj, (Metric, BatchMetric)):
        return obj
    if callable(obj):
        return Metric(name, obj)  # type: ignore[arg-type]
    raise TypeError("a metric must be a function (RecordsView, MetricParams) -> MetricResult or a camexp "
                    f"BatchMetric, not {type(obj).__name__}")


METRICS: Registry[AnyMetric] = Registry("metric", _as_metric)


def metric(name: str, needs_labels: bool = False) -> Callable[[MetricFn], Metric]:
    """Register a record metric `fn(view, params) -> MetricResult` under `name`."""
    def register(fn: MetricFn) -> Metric:
        return METRICS.register(name, Metric(name, fn, needs_labels))  # type: ignore[return-value]

    return register


def batch_metric(name: str, summarize: Summarize, summary: str = "", **meta: object
                 ) -> Callable[[Callable[["MetricBatch"], list[PerImage]]], BatchMetric]:
    """Register `compute(batch) -> [PerImage]` as per-batch metric `name` (see `BatchMetric` for `meta`)."""
    def register(fn: Callable[["MetricBatch"], list[PerImage]]) -> BatchMetric:
        return METRICS.register(name, BatchMetric(name, fn, summarize, summary, **meta))  # type: ignore[arg-type, return-value]

    return register


def mean_rows(label: str, note: Note = lambda cfg: "", scale: float = 1.0) -> Summarize:
    """A Summarize that averages each method's non-NaN values (times `scale`, e.g. 100 for a percentage)
    into one row `label`, with a note on how many images (and `note(cfg)`: the settings)."""
    def summarize(rows: pd.DataFrame, methods: list[str], cfg: "ExperimentConfig") -> MetricResult:
        valid = rows.dropna(subset=["value"])
        means = valid.groupby("method")["value"].mean() * scale
        images = valid["index"].nunique()
        return MetricResult(rows={label: {m: float(means.get(m, float("nan"))) for m in methods}},
                            notes=[f"{label.split(' (')[0]}: mean over {images} images{note(cfg)}."])
    return summarize


def batch_metrics(names: list[str]) -> list[BatchMetric]:
    """The per-batch metrics among `names`, in order."""
    return [m for m in map(METRICS.get, names) if isinstance(m, BatchMetric)]


