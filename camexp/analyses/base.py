"""The analysis contract and registries: per-batch analyses beyond the faithfulness records (area curve, alpha statistics, localization, ...).

An analysis sees every batch through `BatchContext` and writes its own files when the run ends. Register a
factory with `@analysis(name)`; a config enables it by listing the name under `analyses:`. To survive a
kill, an analysis should append per-image rows to its own file in `update` (as the runner does), not
keep everything in memory. It declares those files on the factory, `files = {name: csv columns}` (`{}`
when it appends nothing), and appends to `ctx.path(name)`: under torchrun that is the rank's own file,
which rank 0 merges before `finish`; the runner also deletes them on a fresh start. An analysis that
declares nothing runs in a single process only. An analysis whose files hold numbers for the summary table also registers a
reader with `@analysis_result(name)`: the summary (and `camexp table`) recomputes them from the files,
as metrics are recomputed from the records. An analysis that needs nothing per batch (it reads the records
when the run ends) sets `per_batch = False`: a resumed run may then add it; any other analysis added to a
run that has recorded images is refused (camexp/resume.py), since it would cover only the new images. A plug-in analysis is a factory named by import path
(`analyses: [mypkg.analyses:MyAnalysis]`) or entry point (group `camexp.analyses`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch

from camexp.registry import Registry, callable_entry as _callable

if TYPE_CHECKING:
    import pandas as pd

    from camexp.config import ExperimentConfig
    from camexp.explain.core import Explainer, Explanation
    from camexp.metrics import MetricResult
    from camexp.models import LoadedModel


@dataclass
class BatchContext:
    """One batch as the runner saw it; tensors are on the run's device, rows are the good images only."""

    cfg: "ExperimentConfig"
    loaded: "LoadedModel"
    explainer: "Explainer"
    x: torch.Tensor  # (B,3,H,W) pixel-space images
    explanation: "Explanation"
    y: torch.Tensor  # (B,) target confidence on the full image
    o: torch.Tensor  # (B,M) target confidence on the explanation images
    batch: dict[str, Any]  # the collated batch, restricted to the good images
    out_dir: Path
    own: Callable[[str], Path] | None = field(default=None, repr=False)  # the runner's per-rank file naming

    def path(self, name: str) -> Path:
        """Where this process appends to the run folder's file `name` (a per-rank file under torchrun)."""
        return self.own(name) if self.own is not None else self.out_dir / name


class Analysis(Protocol):
    files: dict[str, list[str]]  # CSV files appended per batch (name -> columns); {} for none

    def update(self, ctx: BatchContext) -> None: ...

    def finish(self, out_dir: Path) -> list[str]:
        """Write final files; return Markdown lines for summary.md (e.g. figure links)."""
        ...


T = TypeVar("T")
AnalysisFactory = Callable[["ExperimentConfig"], Analysis]
ANALYSES: Registry[AnalysisFactory] = Registry("analysis", _callable("an analysis factory (config) -> Analysis"),
                                               group="camexp.analyses")

# (run folder, the run's final per-image records, methods) -> rows/tables/notes for the summary
ResultReader = Callable[[Path, "pd.DataFrame", list[str]], "MetricResult"]
ANALYSIS_RESULTS: Registry[ResultReader] = Registry("analysis result", plugins=False)


def declared_files(factory: AnalysisFactory) -> dict[str, list[str]] | None:
    """The per-batch files an analysis factory declares, or None when it declares none (single process only)."""
    return getattr(factory, "files", None)


def _registrar(registry: Registry[T], name: str) -> Callable[[T], T]:
    def register(obj: T) -> T:
        return registry.register(name, obj)

    return register


def analysis(name: str) -> Callable[[AnalysisFactory], AnalysisFactory]:
    """Register an analysis factory (a class taking the config) under `name`."""
    return _registrar(ANALYSES, name)


def analysis_result(name: str) -> Callable[[ResultReader], ResultReader]:
    """Register the reader that recomputes analysis `name`'s summary rows from its files."""
    return _registrar(ANALYSIS_RESULTS, name)
