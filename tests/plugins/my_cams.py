"""A third-party method, metric and analysis, as a researcher would write them in their own package."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from camexp.config import ExperimentConfig
from camexp.errors import CamexpError
from camexp.explain.methods import MethodInputs, weighted_sum
from camexp.metrics import MetricParams, MetricResult, RecordsView, settings_of
from camexp.metrics.batch import BatchContext
from camexp.models import LoadedModel


def abs_gradcam(x: MethodInputs) -> torch.Tensor:
    """Grad-CAM with |G| as channel weights (a plug-in for the tests)."""
    return weighted_sum(x.G.abs().mean((2, 3)), x.A).relu()


def mean_o(view: RecordsView, params: MetricParams) -> MetricResult:
    """Mean confidence on the explanation image, per method."""
    return MetricResult(rows={"Mean O (plug-in)": {m: float(view.o[:, j].mean()) for j, m in enumerate(view.methods)}})


class CountSettings(BaseModel):
    """The plug-in analysis' own settings, read from `settings: {count: {...}}`."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field("images", min_length=1, description="the column of plugin_count.csv")


class CountImages:
    """Counts the images it saw and writes the count when the run ends."""

    settings, settings_key = CountSettings, "count"

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.column = settings_of(cfg, "count").column
        self.seen = 0

    def update(self, ctx: BatchContext) -> None:
        self.seen += len(ctx.x)

    def finish(self, out_dir: Path) -> list[str]:
        pd.DataFrame({self.column: [self.seen]}).to_csv(out_dir / "plugin_count.csv", index=False)
        return [f"plug-in analysis saw {self.seen} images"]

    @staticmethod
    def check(config: ExperimentConfig, loaded: LoadedModel) -> list[tuple[str, str]]:
        """What `camexp check` prints for it (the model's class count); it refuses a layer other than layer4."""
        if loaded.layer_name != "layer4":
            raise CamexpError(f"CountImages takes layer4's maps, not {loaded.layer_name}'s")
        return [("plug-in classes", str(loaded.num_classes))]
