"""`analyses: [mloc]`: localization of the top-k predicted classes against ground-truth boxes
(docs/definitions.md, D5).

Per batch: the maps of the top-k predicted classes that have a box in their image come from the batch
context's `class_maps` (the run's own map where the class is the image's target; the other (image, class)
pairs explained in one batched forward + backward, shared with the pointing games). Loc per (image, class,
method, δ) is appended to mloc.csv; the summary rows `mLoc δ=...` (the layout of the paper's Table 3) are
recomputed from that file by the entry's reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from camexp.analyses.base import analysis
from camexp.metrics import MetricResult, Row, settings_of
from camexp.metrics.batch import BatchContext, class_maps_cost
from camexp.metrics.localization import class_box_masks, localization
from camexp.results import append_records, read_records
from camexp.stats.bootstrap import LONG_COLUMNS

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig

MLOC_CSV = "mloc.csv"
COLUMNS = ["index", "image_id", "class", "rank", "method", "delta", "loc"]
KEY = ["index", "class", "method", "delta"]


def row_label(delta: float) -> str:
    """Summary row name, as the paper's Table 3 (and report/paper.py) print it."""
    return f"mLoc δ={delta:g}"


# every `mLoc δ=...` row: a mean over (image, class) pairs, weighted per image in the bootstrap; higher is better
MLOC_ROW = Row(row_label(0.0).split("=")[0] + "=", "mLoc", False, prefix=True, criterion="localization")


class LocalizationSettings(BaseModel):
    """The `mloc` analysis (docs/definitions.md, D5): map thresholds δ and how many top predictions count."""

    model_config = ConfigDict(extra="forbid")

    thresholds: list[float] = Field([0.0, 0.25, 0.5], description="δ: a pixel is on where the map is above δ")
    topk: int = Field(5, ge=1, description="the classes among the top-k predictions that have a box are explained")

    @field_validator("thresholds")
    @classmethod
    def _unit_interval(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.0 <= d < 1.0 for d in v) or len(set(v)) != len(v):
            raise ValueError("give one or more distinct thresholds δ with 0 <= δ < 1 (maps are normalised to [0,1])")
        return v


SETTINGS_KEY = "localization"


class MLoc:
    """Streams Loc values to mloc.csv."""

    def __init__(self, cfg: ExperimentConfig):
        self.settings: LocalizationSettings = settings_of(cfg, SETTINGS_KEY)
        self.thresholds = torch.tensor(self.settings.thresholds, dtype=torch.float64)

    def update(self, ctx: BatchContext) -> None:
        top = ctx.logits.topk(min(self.settings.topk, ctx.logits.shape[1]), dim=1).indices  # (B, K)
        boxes = ctx.batch.get("boxes", [None] * len(ctx.x))
        box_labels = ctx.batch.get("box_labels", [None] * len(ctx.x))
        size = (ctx.x.shape[-2], ctx.x.shape[-1])
        box = torch.stack(
            [class_box_masks(boxes, box_labels, top[:, k], size) for k in range(top.shape[1])]
        )  # (K, B, H, W)
        rank, pos = box.any((2, 3)).nonzero(as_tuple=True)  # the (rank, image) pairs with a box, rank-major
        if not len(pos):
            return
        classes = top[pos, rank]
        loc = {
            m: localization(v, box[rank, pos], self.thresholds) for m, v in ctx.class_maps(pos, classes).items()
        }  # the batch's own maps where classes are targets
        frames = [
            self._rows(ctx, pos[rank == k], classes[rank == k], k, m, v[rank == k])
            for k in rank.unique().tolist()
            for m, v in loc.items()
        ]
        append_records(ctx.path(MLOC_CSV), pd.concat(frames, ignore_index=True), COLUMNS)

    def _rows(
        self, ctx: BatchContext, sel: torch.Tensor, classes: torch.Tensor, rank: int, method: str, loc: torch.Tensor
    ) -> pd.DataFrame:
        """Long rows (one per image and δ) for one method."""
        t = len(self.thresholds)
        sel_l = sel.cpu().repeat_interleave(t).tolist()
        return pd.DataFrame(
            {
                "index": ctx.batch["index"][sel_l].tolist(),
                "image_id": [ctx.batch["image_id"][i] for i in sel_l],
                "class": classes.cpu().repeat_interleave(t).tolist(),
                "rank": rank,
                "method": method,
                "delta": self.thresholds.repeat(len(sel)).tolist(),
                "loc": loc.cpu().flatten().tolist(),
            }
        )

    def finish(self, out_dir: Path) -> list[str]:
        return []  # the summary rows come from the entry's reader, `mloc_result`, so `camexp report table` shows them


def mloc_rows(run_dir: Path, records: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """The Loc rows (one per image, class, method, δ) of the images that have final records."""
    df = read_records(run_dir / MLOC_CSV, COLUMNS)
    return df[df["index"].isin(records["index"]) & df["method"].isin(methods)].drop_duplicates(KEY, keep="last")


def mloc_result(run_dir: Path, records: pd.DataFrame, methods: list[str]) -> MetricResult:
    """mLoc(δ) per method = mean Loc over (image, class) pairs of the images that have final records."""
    df = mloc_rows(run_dir, records, methods)
    means = df.groupby(["delta", "method"])["loc"].mean()
    rows = {
        row_label(d): {m: float(means.get((d, m), float("nan"))) for m in methods} for d in sorted(df["delta"].unique())
    }
    images = records["index"].nunique()
    used = df["index"].nunique()
    pairs = len(df[["index", "class"]].drop_duplicates())
    note = (
        f"mLoc: mean over {pairs} (image, class) pairs from {used} images (top-k predicted classes that have a "
        f"ground-truth box); {images - used} of {images} images skipped (no such class)."
    )
    return MetricResult(rows=rows, notes=[note])


def mloc_per_image(run_dir: Path, records: pd.DataFrame, methods: list[str]) -> pd.DataFrame | None:
    """Each image's mean Loc per method and δ (long form), weighted by its (image, class) pairs; None without
    mloc.csv."""
    if not (run_dir / MLOC_CSV).exists():
        return None
    loc = mloc_rows(run_dir, records, methods).groupby(["image_id", "method", "delta"])["loc"]
    loc = loc.agg(value="mean", weight="size").reset_index()
    return loc.assign(metric=loc["delta"].map(row_label))[[*LONG_COLUMNS, "weight"]]


analysis(
    "mloc",
    {MLOC_CSV: COLUMNS},
    rows=(MLOC_ROW,),
    read=mloc_result,
    per_image=mloc_per_image,
    settings=LocalizationSettings,
    settings_key=SETTINGS_KEY,
    cost=class_maps_cost("predicted class among the top localization.topk with a box"),
)(MLoc)
