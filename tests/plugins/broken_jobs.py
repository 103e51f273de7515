"""Plug-in analyses and metrics with the bugs a plug-in author makes: each must stop a run with one line
naming the plug-in and what is wrong, checked before the first image where that can be seen statically."""

from __future__ import annotations

from pathlib import Path

import torch

from camexp.metrics import BatchMetric, MetricParams, MetricResult, PerImage, RecordsView, Row
from camexp.metrics.batch import BatchContext


class NoFinish:
    """An analysis without `finish`."""

    def __init__(self, cfg: object) -> None:
        pass

    def update(self, ctx: BatchContext) -> None:
        pass


class UpdateRaises:
    """An analysis whose `update` raises on the first batch."""

    def __init__(self, cfg: object) -> None:
        pass

    def update(self, ctx: BatchContext) -> None:
        raise ValueError(f"cannot count {len(ctx.x)} images")

    def finish(self, out_dir: Path) -> list[str]:
        return []


NOT_A_CLASS = 3


def two_args_metric(view: RecordsView) -> MetricResult:
    """A record metric missing its `params` argument."""
    return MetricResult()


def raising_metric(view: RecordsView, params: MetricParams) -> MetricResult:
    """A record metric that raises."""
    raise ValueError("no rows for me")


class UpdateWithoutCtx:
    """An analysis whose `update` forgot its batch argument."""

    def __init__(self, cfg: object) -> None:
        pass

    def update(self) -> None:
        pass

    def finish(self, out_dir: Path) -> list[str]:
        return []


class ReadAsAMethod(UpdateRaises):
    """An analysis whose `read` takes `self`: camexp calls the class's attribute as read(run_dir, records, methods)."""

    def read(self, run_dir: Path, records: object, methods: list[str]) -> MetricResult:
        return MetricResult()


def builds_nothing(cfg: object) -> None:
    """A function factory that returns no worker (its author forgot the `return`)."""
    UpdateRaises(cfg)


def _compute_raises(batch: BatchContext) -> list[PerImage]:
    values = torch.ones(len(batch.x) + 1, dtype=torch.float64)  # one value too many
    return [
        PerImage(m, "boom", torch.arange(len(batch.x)), batch.targets, values.view(len(batch.x), -1))
        for m in batch.methods
    ]


def _compute_without_batch() -> list[PerImage]:
    return []


raising_batch_metric = BatchMetric("boom", _compute_raises, rows=(Row("boom", "Boom"),))
batch_metric_without_batch = BatchMetric("nobatch", _compute_without_batch)  # type: ignore[arg-type]
