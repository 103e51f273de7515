"""A third-party per-batch metric with settings, in one file (docs/guide/plugins.md: "Add your own metric").

`centre_mass`: the share of each map's mass inside the central square that covers `fraction` of the image's
side, in %; higher is better. Its settings are read from the config's `settings: {centre: {...}}`.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from camexp.metrics import BatchMetric, PerImage, Row
from camexp.metrics.batch import BatchContext


class CentreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(0.5, gt=0.0, le=1.0, description="side of the central square, as a share of the image's")


def centre_shares(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """(B,) float64 share of each map's (B,H,W) mass inside the central square; 0 for a map without mass."""
    h, w = maps.shape[-2:]
    dy, dx = round(h * (1 - fraction) / 2), round(w * (1 - fraction) / 2)
    total = maps.double().sum((1, 2))
    inside = maps.double()[:, dy : h - dy, dx : w - dx].sum((1, 2))
    return torch.where(total > 0, inside / total.clamp(min=1e-300), torch.zeros_like(total))


ROW = Row("centre_mass", "Centre mass %", lower_is_better=False, scale=100.0)


def compute(batch: BatchContext) -> list[PerImage]:
    settings = batch.settings("centre")
    pos = torch.arange(len(batch.x), device=batch.x.device)
    return [
        PerImage(m, ROW.key, pos, batch.targets, centre_shares(maps, settings.fraction))
        for m, maps in batch.explanation.maps.items()
    ]


centre_mass = BatchMetric(
    "centre_mass",
    compute,
    summary="share of the map's mass in the image's centre",
    rows=(ROW,),
    settings=CentreSettings,
    settings_key="centre",
    note=lambda cfg: "; the central square of the image",
)
