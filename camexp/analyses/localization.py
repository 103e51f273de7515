"""`analyses: [mloc]`: localization of the top-k predicted classes against ground-truth boxes (README.md, Definitions D5).

Per batch and per rank k of the top-k predictions: one batched forward + backward explains class
topk[:, k] for the images that have a box of that class (rank 0 reuses the runner's own explanation when
its targets are the top-1 predictions). Loc per (image, class, method, δ) is appended to mloc.csv; the
summary rows `mLoc δ=...` (the layout of the paper's Table 3) are recomputed from that file.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from camexp.analyses.base import BatchContext, analysis, analysis_result
from camexp.metrics import MetricResult, Row
from camexp.metrics.localization import class_box_masks, localization
from camexp.results import append_records, read_records

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig

MLOC_CSV = "mloc.csv"
COLUMNS = ["index", "image_id", "class", "rank", "method", "delta", "loc"]
KEY = ["index", "class", "method", "delta"]


def row_label(delta: float) -> str:
    """Summary row name, as the paper's Table 3 (and report/paper.py) print it."""
    return f"mLoc δ={delta:g}"


# every `mLoc δ=...` row: a mean over (image, class) pairs, weighted per image in the bootstrap; higher is better
MLOC_ROW = Row(row_label(0.0).split("=")[0] + "=", "mLoc", False, prefix=True)


@analysis("mloc")
class MLoc:
    """Streams Loc values to mloc.csv."""

    files = {MLOC_CSV: COLUMNS}
    rows = (MLOC_ROW,)

    def __init__(self, cfg: "ExperimentConfig"):
        self.cfg = cfg
        self.thresholds = torch.tensor(cfg.localization.thresholds, dtype=torch.float64)

    def update(self, ctx: BatchContext) -> None:
        logits = ctx.explanation.logits
        top = logits.topk(min(self.cfg.localization.topk, logits.shape[1]), dim=1).indices
        boxes = ctx.batch.get("boxes", [None] * len(ctx.x))
        box_labels = ctx.batch.get("box_labels", [None] * len(ctx.x))
        frames = []
        for rank in range(top.shape[1]):
            classes = top[:, rank]
            box = class_box_masks(boxes, box_labels, classes, tuple(ctx.x.shape[-2:]))
            sel = box.any((1, 2)).nonzero()[:, 0]
            if not len(sel):
                continue
            if torch.equal(ctx.explanation.targets, classes):
                maps = {m: v[sel] for m, v in ctx.explanation.maps.items()}
            else:
                ids = [ctx.batch["image_id"][i] for i in sel.tolist()]
                maps = ctx.explainer.explain(ctx.x[sel], classes[sel], ids).maps
            frames += [self._rows(ctx, sel, classes[sel], rank, m, localization(v, box[sel], self.thresholds))
                       for m, v in maps.items()]
        if frames:
            append_records(ctx.path(MLOC_CSV), pd.concat(frames, ignore_index=True), COLUMNS)

    def _rows(self, ctx: BatchContext, sel: torch.Tensor, classes: torch.Tensor, rank: int, method: str,
              loc: torch.Tensor) -> pd.DataFrame:
        """Long rows (one per image and δ) for one method."""
        t = len(self.thresholds)
        sel_l = sel.cpu().repeat_interleave(t).tolist()
        return pd.DataFrame({
            "index": ctx.batch["index"][sel_l].tolist(), "image_id": [ctx.batch["image_id"][i] for i in sel_l],
            "class": classes.cpu().repeat_interleave(t).tolist(), "rank": rank, "method": method,
            "delta": self.thresholds.repeat(len(sel)).tolist(), "loc": loc.cpu().flatten().tolist()})

    def finish(self, out_dir: Path) -> list[str]:
        return []  # the summary rows come from `mloc_result`, so `camexp table` shows them too


def mloc_rows(run_dir: Path, records: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """The Loc rows (one per image, class, method, δ) of the images that have final records."""
    df = read_records(run_dir / MLOC_CSV, COLUMNS)
    return df[df["index"].isin(records["index"]) & df["method"].isin(methods)].drop_duplicates(KEY, keep="last")


@analysis_result("mloc")
def mloc_result(run_dir: Path, records: pd.DataFrame, methods: list[str]) -> MetricResult:
    """mLoc(δ) per method = mean Loc over (image, class) pairs of the images that have final records."""
    df = mloc_rows(run_dir, records, methods)
    means = df.groupby(["delta", "method"])["loc"].mean()
    rows = {row_label(d): {m: float(means.get((d, m), float("nan"))) for m in methods}
            for d in sorted(df["delta"].unique())}
    images = records["index"].nunique()
    used = df["index"].nunique()
    pairs = len(df[["index", "class"]].drop_duplicates())
    note = (f"mLoc: mean over {pairs} (image, class) pairs from {used} images (top-k predicted classes that have a "
            f"ground-truth box); {images - used} of {images} images skipped (no such class).")
    return MetricResult(rows=rows, notes=[note])
