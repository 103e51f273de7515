"""Per-batch analyses beyond the faithfulness records (area curve, alpha statistics, localization, ...).

An analysis sees every batch through `BatchContext` and writes its own files when the run ends. Register a
factory with `@analysis(name)`; a config enables it by listing the name under `analyses:`. To survive a
kill, an analysis should append per-image rows to its own file in `update` (as the runner does), not
keep everything in memory.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig
    from camexp.explain.core import Explainer, Explanation
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


class Analysis(Protocol):
    def update(self, ctx: BatchContext) -> None: ...

    def finish(self, out_dir: Path) -> list[str]:
        """Write final files; return Markdown lines for summary.md (e.g. figure links)."""
        ...


AnalysisFactory = Callable[["ExperimentConfig"], Analysis]
ANALYSES: dict[str, AnalysisFactory] = {}


def analysis(name: str) -> Callable[[AnalysisFactory], AnalysisFactory]:
    def register(factory: AnalysisFactory) -> AnalysisFactory:
        ANALYSES[name] = factory
        return factory

    return register


# The built-in analyses register themselves on import.
from camexp.analyses import alpha_stats, area_curve, record_plots  # noqa: E402,F401
