"""Multiple instances (docs/guide/field-metrics.md, "Multiple instances"): does a class's map find every object of that
class?

camexp's own definition (the Grad-CAM++ paper's Fig. 1-2 and §3 show examples, not a metric). As the pointing
games, every ground-truth class of an image with a box is explained (`BatchContext.class_maps`: the run's own
map where the class is the image's target, one batched explanation for the others, shared with the pointing
games), on the normalised map at the input's resolution (bilinear upsampling, min-max; the boxes are mapped
through the same resize and centre crop as the image; a pixel belongs to a box when its centre lies inside).

An instance is a box of the class that covers at least one pixel centre of the input (a box the crop removes
entirely, or clips to less than a pixel, is no instance) and, with `settings.instances.difficult: ignore`
(default), is not flagged difficult (VOC's own evaluation ignores those objects). k = the (image, class) pair's
number of instances. Instance i is found when the map's maximum over its box's pixels is at least τ times the
map's global maximum (`settings.instances.tau`, default 0.5; exactly τ counts as found) and positive: a
constant map, normalised to zeros, finds nothing.

Per (image, class) pair with k >= 2: the fraction of its instances found (`instances_found`) and whether all
are (`instances_all`); with k = 1 the same number (found or not, where fraction and "all" coincide) is the
control (`instances_single`): a method that finds one object but not the second shows a gap between the rows.
Pairs without an instance and images without boxes leave NaN rows, counted in the summary's note. The summary
rows are means over pairs; an image with several such classes weighs by their number, and the bootstrap
resamples images (camexp/report/uncertainty.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from camexp.metrics.base import MetricResult, PerImage, Row, batch_metric, mean_rows, settings_of
from camexp.metrics.batch import BatchContext, class_maps_cost
from camexp.metrics.localization import box_union_mask
from camexp.metrics.pointing import NO_BOX, bare_rows, nan_rows, truth

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig

FOUND = Row("instances_found", "Instances found % (k ≥ 2)", False, scale=100.0, criterion="localization")
ALL_FOUND = Row("instances_all", "All instances found % (k ≥ 2)", False, scale=100.0, criterion="localization")
SINGLE = Row("instances_single", "Instance found % (k = 1, control)", False, scale=100.0, criterion="localization")
ROWS = (FOUND, ALL_FOUND, SINGLE)


class InstanceSettings(BaseModel):
    """`settings: {instances: {...}}`: the multiple-instance metric."""

    model_config = ConfigDict(extra="forbid")

    tau: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="an instance is found when the map's maximum in its box is at least tau times the map's maximum",
    )
    difficult: Literal["ignore", "count"] = Field(
        "ignore", description="boxes flagged difficult (VOC): ignore (no instance) or count as instances"
    )


def instance_settings(cfg: ExperimentConfig) -> InstanceSettings:
    return settings_of(cfg, "instances")


def instances_found(maps: torch.Tensor, inside: torch.Tensor, owner: torch.Tensor, tau: float) -> torch.Tensor:
    """(N,) bool: instance n, the pixels `inside[n]` (N,H,W bool, non-empty) of map owner[n] of `maps` (P,H,W),
    holds a value of at least tau times that map's maximum, and a positive one (a map of zeros finds nothing)."""
    peak = maps.flatten(1).amax(1).double()[owner]
    mine = maps[owner].masked_fill(~inside, float("-inf"))
    peak_in = mine.flatten(1).amax(1).double()
    return (peak_in >= tau * peak) & (peak_in > 0)


def instances(batch: BatchContext) -> list[PerImage]:
    t = truth(batch)
    settings: InstanceSettings = batch.settings("instances")
    device, (h, w) = batch.x.device, batch.x.shape[-2:]
    inside = box_union_mask(t.boxes, torch.arange(len(t.boxes), device=device), len(t.boxes), (h, w))
    keep = inside.flatten(1).any(1)
    if settings.difficult == "ignore":
        keep &= ~t.difficult
    k = torch.bincount(t.owner[keep], minlength=len(t.pos))
    none = k == 0
    out = bare_rows(batch, FOUND.key, t) + nan_rows(batch, FOUND.key, t.pos[none], t.cls[none])
    seen = (~none).nonzero()[:, 0]
    if not len(seen):
        return out
    remap = torch.full((len(t.pos),), -1, dtype=torch.long, device=device)
    remap[seen] = torch.arange(len(seen), device=device)
    owner, inside, k = remap[t.owner[keep]], inside[keep], k[seen].double()
    pos, cls, many = t.pos[seen], t.cls[seen], k >= 2
    for m, maps in batch.class_maps(pos, cls).items():
        found = instances_found(maps, inside, owner, settings.tau).double()
        share = torch.zeros(len(seen), dtype=torch.float64, device=device).index_add_(0, owner, found) / k
        out += [
            PerImage(m, FOUND.key, pos[many], cls[many], share[many]),
            PerImage(m, ALL_FOUND.key, pos[many], cls[many], (share[many] == 1).double()),
            PerImage(m, SINGLE.key, pos[~many], cls[~many], share[~many]),
        ]
    return out


def _pairs(rows: pd.DataFrame) -> str:
    """'n (image, class) pairs on m images' of rows with a value."""
    valid = rows.dropna(subset=["value"])
    return f"{len(valid)} (image, class) pairs on {valid['index'].nunique()} images"


def summarize_instances(rows: pd.DataFrame, methods: list[str], cfg: ExperimentConfig) -> MetricResult:
    """Each row's mean over pairs (`mean_rows`), with one note counting the pairs of each kind."""
    out = MetricResult()
    for row in ROWS:
        out.rows.update(mean_rows(row)(rows[rows["metric"] == row.key], methods, cfg).rows)
    one = rows[rows["method"] == methods[0]]
    empty = one[(one["metric"] == FOUND.key) & one["value"].isna()]
    settings = instance_settings(cfg)
    out.notes.append(
        f"Multiple instances (τ = {settings.tau:g}, difficult boxes: {settings.difficult}): means over pairs; "
        f"k ≥ 2: {_pairs(one[one['metric'] == FOUND.key])}; k = 1 (control): "
        f"{_pairs(one[one['metric'] == SINGLE.key])}; {int((empty['class'] != NO_BOX).sum())} pairs without an "
        f"instance (cropped away or difficult), {int((empty['class'] == NO_BOX).sum())} images without boxes."
    )
    return out


batch_metric(
    "instances",
    "multiple instances (camexp): share of a class's k >= 2 objects where its map reaches tau x its maximum",
    summarize=summarize_instances,
    rows=ROWS,
    settings=InstanceSettings,
    needs_boxes=True,
    cost=class_maps_cost("ground-truth class with an instance"),
)(instances)
