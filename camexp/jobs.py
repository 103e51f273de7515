"""One per-batch contract: everything a run computes per batch beyond the records is a `Job`.

A job is a per-batch metric (a metric entry of source `batch` listed under `metrics:`), an analysis (listed under
`analyses:`), the mean curves or the kept maps (`output: {maps: true}`). The runner builds one `BatchContext`
per batch and calls every job's `update(ctx)` before the batch's records are written (so a recorded image has
its jobs' rows); each job appends to the files it declares (`files`, name -> CSV columns: per-rank files under
torchrun, merged by rank 0), writes its figures in `finish`, and `read` summarises its rows from those files
alone, so that `camexp report table` recomputes them. `resume` (on the entry) says whether it may be added to a run
that has recorded images (camexp/resume.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
import pandas as pd
import torch

from camexp.analyses import ANALYSES, Analysis, Worker, worker_problem
from camexp.analyses.curves import write_curves
from camexp.errors import CamexpError
from camexp.explain.maps import normalize
from camexp.metrics import METRICS, MetricEntry, MetricResult, batch_metrics, writes_curves
from camexp.metrics.base import Resume
from camexp.metrics.batch import BatchContext
from camexp.results import (
    CURVE_COLUMNS,
    CURVES,
    MAPS_DIR,
    METRIC_COLUMNS,
    METRIC_RECORDS,
    append_records,
    final_metric_rows,
    last_invocation,
    metric_records,
    read_records,
    shard_name,
    write_map_shard,
    write_maps_index,
)

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig


class Job(Protocol):
    """One per-batch job of a run (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def files(self) -> dict[str, list[str]] | None:
        """Files it appends per batch (name -> CSV columns); None: undeclared (a plug-in analysis without
        `files`), so it runs in a single process only."""
        ...

    @property
    def resume(self) -> Resume: ...

    @property
    def metric_rows(self) -> tuple[str, ...]:
        """The rows it writes to per_image_metrics.csv (an image lacking them is pending when `resume` is
        'recompute'); () for none."""
        ...

    @property
    def summary(self) -> str | None:
        """What run.json's `per_image_metrics` says of it; None: not a per-image metric."""
        ...

    def start(self) -> None:
        """Prepare for a run before the first batch (an analysis builds its worker, which may refuse the config)."""

    def update(self, ctx: BatchContext) -> None: ...

    def finish(self, out_dir: Path) -> list[str]:
        """Write final files and figures; return Markdown lines for summary.md."""
        ...

    def read(self, run_dir: Path, records: pd.DataFrame) -> MetricResult:
        """Its summary rows, tables and notes from its files, over the images of the final `records`."""
        ...


@dataclass
class MetricJob:
    """A per-batch metric as a job: its per-image values go to per_image_metrics.csv (and their curves to
    the curves file with `curves`: `perturbation.curves`), summarised by the entry's `summary_of`."""

    entry: MetricEntry  # source: batch
    cfg: ExperimentConfig
    curves: bool
    files: ClassVar[dict[str, list[str]]] = {METRIC_RECORDS: METRIC_COLUMNS, CURVES: CURVE_COLUMNS}

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def resume(self) -> Resume:
        return self.entry.resume

    @property
    def metric_rows(self) -> tuple[str, ...]:
        return self.entry.row_names

    @property
    def summary(self) -> str | None:
        return self.entry.summary

    def start(self) -> None:
        pass

    def update(self, ctx: BatchContext) -> None:
        with METRICS.running(self.entry, "update", self.entry.compute):
            values = self.entry.compute(ctx)
        rows, curves = metric_records(ctx.batch["index"].numpy(), ctx.image_ids, values, self.curves)
        if curves is not None:
            append_records(ctx.path(CURVES), curves, CURVE_COLUMNS)
        append_records(ctx.path(METRIC_RECORDS), rows, METRIC_COLUMNS)

    def finish(self, out_dir: Path) -> list[str]:
        return []  # its rows are in the summary table (`read`); the curves' figure is CurvesJob's

    def read(self, run_dir: Path, records: pd.DataFrame) -> MetricResult:
        methods = self.cfg.method_names
        rows = final_metric_rows(run_dir / METRIC_RECORDS, set(records["index"].astype(int)), methods)
        with METRICS.running(self.entry, "its summary", self.entry.summarize or self.entry.compute):
            return self.entry.summary_of(rows[rows["metric"].isin(self.entry.row_names)], methods, self.cfg)


@dataclass
class AnalysisJob:
    """An analysis as a job: the entry's worker, built by `start`, sees the batches and writes the figures."""

    entry: Analysis
    cfg: ExperimentConfig
    worker: Worker | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def files(self) -> dict[str, list[str]] | None:
        return self.entry.files

    @property
    def resume(self) -> Resume:
        return self.entry.resume

    metric_rows: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str | None] = None

    def start(self) -> None:
        """Build the worker, before the first image, and check it has the `Worker` methods camexp calls."""
        with ANALYSES.running(self.entry, "its factory", self.entry.make):
            self.worker = self.entry.make(self.cfg)
        if problem := worker_problem(self.worker):
            raise CamexpError(f"analysis {self.name!r}: the {type(self.worker).__name__} its factory built {problem}")

    def update(self, ctx: BatchContext) -> None:
        assert self.worker is not None, "start() builds the worker before the first batch"
        with ANALYSES.running(self.entry, "update", type(self.worker)):
            self.worker.update(ctx)

    def finish(self, out_dir: Path) -> list[str]:
        assert self.worker is not None, "start() builds the worker before finish()"
        with ANALYSES.running(self.entry, "finish", type(self.worker)):
            return self.worker.finish(out_dir)

    def read(self, run_dir: Path, records: pd.DataFrame) -> MetricResult:
        if self.entry.read is None:
            return MetricResult()
        with ANALYSES.running(self.entry, "read", self.entry.read):
            return self.entry.read(run_dir, records, self.cfg.method_names)


@dataclass
class CurvesJob:
    """With `perturbation.curves`: the mean curve per method (table and figure) from the curves the per-batch
    metrics appended (each `MetricJob` writes its own), once every rank's file is merged and finalised."""

    cfg: ExperimentConfig
    name: ClassVar[str] = "curves"
    files: ClassVar[dict[str, list[str]]] = {}
    resume: ClassVar[Resume] = "any"
    metric_rows: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str | None] = None

    def start(self) -> None:
        pass

    def update(self, ctx: BatchContext) -> None:
        pass

    def finish(self, out_dir: Path) -> list[str]:
        images = set(read_records(out_dir / CURVES, CURVE_COLUMNS)["index"].astype(int))  # finalised by the runner
        return write_curves(out_dir, self.cfg, images)

    def read(self, run_dir: Path, records: pd.DataFrame) -> MetricResult:
        return MetricResult()


@dataclass
class MapsJob:
    """With `output: {maps: true}`: every method's map of every image at the layer's resolution, min-max
    normalised, one shard per batch in maps/ (camexp/results.py, `write_map_shard`); rank 0 indexes the shards
    of the final records at the end. Added to a run that recorded images without it, it is refused (`resume`):
    their maps would need the model again, which is a fresh run."""

    cfg: ExperimentConfig
    name: ClassVar[str] = MAPS_DIR
    files: ClassVar[dict[str, list[str]]] = {}  # shards are per rank by name (`ctx.path`), not merged
    resume: ClassVar[Resume] = "refuse"
    metric_rows: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str | None] = None
    invocation: int = 0
    batches: int = 0

    def start(self) -> None:
        maps_dir = self.cfg.output_dir / MAPS_DIR
        maps_dir.mkdir(parents=True, exist_ok=True)
        self.invocation, self.batches = last_invocation(maps_dir) + 1, 0

    def update(self, ctx: BatchContext) -> None:
        self.batches += 1
        normalized = [normalize(ctx.explanation.layer_maps[m])[0] for m in ctx.methods]
        host = torch.cat([m.flatten() for m in normalized]).half().cpu().numpy()  # one transfer per batch
        parts = np.split(host, np.cumsum([m.numel() for m in normalized])[:-1])
        write_map_shard(
            ctx.path(f"{MAPS_DIR}/{shard_name(self.invocation, self.batches)}"),
            ctx.batch["index"].numpy(),
            ctx.image_ids,
            ctx.targets.cpu().numpy(),
            {m: part.reshape(n.shape) for m, part, n in zip(ctx.methods, parts, normalized)},
        )

    def finish(self, out_dir: Path) -> list[str]:
        kept = write_maps_index(out_dir, self.cfg.method_names)
        return [
            f"Maps of {kept['index'].nunique()} images x {len(self.cfg.method_names)} methods kept in {MAPS_DIR}/ "
            "(`camexp.results.read_maps`, `camexp plot`; docs/guide/run-folder.md, 'Maps')."
        ]

    def read(self, run_dir: Path, records: pd.DataFrame) -> MetricResult:
        return MetricResult()


def jobs_of(cfg: ExperimentConfig) -> list[Job]:
    """The config's per-batch jobs in the order they run: its per-batch metrics, then its analyses, then the
    mean curves (with `perturbation.curves` and a per-batch metric), then the maps (with `output.maps`)."""
    with_curves = writes_curves(cfg)
    metrics: list[Job] = [MetricJob(m, cfg, with_curves) for m in batch_metrics(cfg.metrics)]
    curves: list[Job] = [CurvesJob(cfg)] if metrics and with_curves else []
    maps: list[Job] = [MapsJob(cfg)] if cfg.output.maps else []
    return [*metrics, *(AnalysisJob(ANALYSES.get(name), cfg) for name in cfg.analyses), *curves, *maps]
