"""Pointing games (docs/guide/field-metrics.md, "The field's other metrics"): TorchRay's pointing game and Score-CAM's
energy-based one.

Both explain the ground-truth classes: for every (image, class with a box in the image) the map of that
class (`BatchContext.class_maps`: the run's own map where the class is the image's target, otherwise one
batched explanation per batch). Boxes are the data set's, mapped through the same resize / centre crop as
the image (pixel edges; a pixel belongs to a box when its centre lies inside). A box cropped away entirely
is not visible; a class none of whose boxes is visible cannot be pointed at and is skipped (a NaN row).

Pointing game: the point is the centre of the map's maximum pixel (the first in row-major order on ties;
a constant map, normalised to zeros, points at the top-left pixel). A hit when the point lies within
`pointing.tolerance` (15) pixels of a visible box of the class, measured in the original image's pixel
coordinates: distances in the input are divided by the resize scale (input pixels per original pixel,
per axis; the crop does not scale), so 15 original pixels are ~15 * 224/375 ≈ 9 input pixels on a VOC
image. Distance to a box is to the rectangle, 0 inside it; where the data set gives each object's region (COCO:
`Item.segments`), it is to the nearest pixel centre of the region instead (TorchRay's COCO rule: masks, not
boxes). Per class: hits / pairs; the summary is the
mean over classes, on all pairs and on the difficult pairs (the class's visible boxes cover less than
`pointing.difficult_area` (1/4) of the input image, and the image has another ground-truth class: EBP's rule), or,
with `pointing.difficult_pairs`, the pairs a file flags, as TorchRay reads EBP's own lists.

Energy-based pointing game: on images with exactly one box, visible and covering less than
`pointing.energy_max_area` (50 %) of the input image, the share of the class map's mass inside the box,
sum_{in box} L / sum L (0 for a constant map, which has no mass); the summary is the mean over images in %.
Images not selected leave a NaN row, so the selection is counted from the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from camexp.config import field_if_set
from camexp.errors import CamexpError
from camexp.io import read_user_text
from camexp.metrics.base import MetricResult, PerImage, Row, batch_metric, settings_of
from camexp.metrics.batch import BatchContext, class_maps_cost
from camexp.metrics.localization import box_union_mask

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig

# The pointing game's rows are means over classes of per-class hit rates, not means over images: no interval.
POINTING_ALL = Row(
    "pointing_game",
    "Pointing game % (all)",
    False,
    scale=100.0,
    image_mean=False,
    show_direction=False,
    criterion="localization",
)
POINTING_DIFFICULT = Row(
    "pointing_game_difficult",
    "Pointing game % (difficult)",
    False,
    scale=100.0,
    image_mean=False,
    show_direction=False,
    criterion="localization",
)
ENERGY = Row("energy_pointing", "Energy pointing %", False, scale=100.0, criterion="localization")
NO_BOX = -1  # the class of a NaN row for an image without any box


class PointingSettings(BaseModel):
    """`pointing:` pointing_game (TorchRay) and energy_pointing (Score-CAM §4.2)."""

    model_config = ConfigDict(extra="forbid")

    tolerance: float = Field(
        15.0,
        ge=0.0,
        description="a hit: the map's maximum within this many pixels of a box "
        "of the class, in the original image's pixel coordinates",
    )
    difficult_area: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="difficult subset: the class's boxes cover "
        "less than this share of the image, another "
        "class present",
    )
    difficult_pairs: Path | None = field_if_set(
        None,
        "difficult subset: the (image, class) pairs this file flags instead of the area rule; TorchRay's "
        "format (pointing_game_ebp_voc07_difficult.txt): per line an image name and one 0/1 flag per class, in the "
        "data set's class order; an image not in the file counts in full, as in TorchRay",
    )
    energy_max_area: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="energy_pointing: images with exactly one box covering less than this share of the image",
    )

    @field_validator("difficult_pairs")
    @classmethod
    def _readable(cls, v: Path | None) -> Path | None:
        if v is not None:
            try:
                difficult_flags(v)
            except CamexpError as e:
                raise ValueError(str(e)) from None
        return v


@cache
def difficult_flags(path: Path) -> dict[str, tuple[bool, ...]]:
    """Image name -> its classes' difficult flags, from a file in TorchRay's format (read once per process)."""
    if not path.is_file():
        raise CamexpError(f"{path}: no such file (TorchRay's pointing_game_ebp_*_difficult.txt format)")
    flags: dict[str, tuple[bool, ...]] = {}
    for n, line in enumerate(read_user_text(path).splitlines(), 1):
        name, *values = line.split()
        if not values or any(v not in ("0", "1") for v in values) or name in flags:
            raise CamexpError(f"{path}:{n}: give an image name and its classes' 0/1 flags, each image once")
        flags[name] = tuple(v == "1" for v in values)
    if len({len(f) for f in flags.values()}) != 1:
        raise CamexpError(f"{path}: every line must flag the same number of classes")
    return flags


def flagged(path: Path, image_ids: list[str], pos: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """(P,) whether each (image pos, class cls) pair is difficult by the file at `path`: its flag where the file
    lists the image, True where it does not (TorchRay skips a pair only when the file says it is easy)."""
    flags = difficult_flags(path)
    width = len(next(iter(flags.values())))
    if len(cls) and int(cls.max()) >= width:
        raise CamexpError(
            f"pointing.difficult_pairs: {path} flags {width} classes; the data set has class {int(cls.max())}"
        )
    out = [flags[image_ids[p]][c] if image_ids[p] in flags else True for p, c in zip(pos.tolist(), cls.tolist())]
    return torch.tensor(out, dtype=torch.bool, device=pos.device)


def pointing_settings(cfg: ExperimentConfig) -> PointingSettings:
    return settings_of(cfg, "pointing")


@dataclass(frozen=True)
class Truth:
    """The batch's (image, ground-truth class) pairs: pos, cls (P,); `boxes` (N,4) of the visible boxes with
    `owner` (N,) their pair and `difficult` (N,) their data set's flag (VOC's); `visible` (P,) whether the pair
    has any; `classes_in_image` (P,) how many ground-truth classes its image has; `boxes_in_image` (P,) how
    many boxes; `bare` positions of images without any box; `masks` (N,H,W) the region of each visible box where
    the data set gives regions for every box of the batch (COCO), else None."""

    pos: torch.Tensor
    cls: torch.Tensor
    boxes: torch.Tensor
    owner: torch.Tensor
    difficult: torch.Tensor
    visible: torch.Tensor
    classes_in_image: torch.Tensor
    boxes_in_image: torch.Tensor
    bare: torch.Tensor
    masks: torch.Tensor | None = None


class _TensorArgs(TypedDict):
    """torch.tensor's keyword arguments for the index tensors of `Truth`."""

    dtype: torch.dtype
    device: torch.device


def truth(batch: BatchContext) -> Truth:
    """The ground-truth pairs of the batch, computed once per batch."""

    def make() -> Truth:
        device = batch.x.device
        n = len(batch.x)
        boxes = batch.batch.get("boxes") or [None] * n
        labels = batch.batch.get("box_labels") or [None] * n
        flags = batch.batch.get("box_difficult") or [None] * n
        regions = batch.batch.get("masks") or [None] * n
        shapes: list[torch.Tensor] = []
        pos: list[int] = []
        cls: list[int] = []
        kept: list[torch.Tensor] = []
        hard: list[torch.Tensor] = []
        owner: list[int] = []
        n_cls: list[int] = []
        n_box: list[int] = []
        bare: list[int] = []
        for i, (b, lab, flag, region) in enumerate(zip(boxes, labels, flags, regions)):
            if b is None or lab is None or not len(lab):
                bare.append(i)
                continue
            present = sorted(set(lab.tolist()))
            flag = torch.zeros(len(lab), dtype=torch.bool) if flag is None else flag
            for c in present:
                mine = b[lab == c]
                shown = (mine[:, 2] > mine[:, 0]) & (mine[:, 3] > mine[:, 1])
                owner += [len(pos)] * int(shown.sum())
                kept.append(mine[shown])
                hard.append(flag[lab == c][shown])
                if region is not None:
                    shapes.append(region[lab == c][shown])
                pos.append(i)
                cls.append(c)
                n_cls.append(len(present))
                n_box.append(len(lab))
        long = _TensorArgs(dtype=torch.long, device=device)
        owner_t = torch.tensor(owner, **long)
        visible = torch.zeros(len(pos), dtype=torch.bool, device=device)
        visible[owner_t] = True
        return Truth(
            torch.tensor(pos, **long),
            torch.tensor(cls, **long),
            torch.cat(kept).to(device, torch.float64)
            if kept
            else torch.zeros(0, 4, dtype=torch.float64, device=device),
            owner_t,
            torch.cat(hard).to(device) if hard else torch.zeros(0, dtype=torch.bool, device=device),
            visible,
            torch.tensor(n_cls, **long),
            torch.tensor(n_box, **long),
            torch.tensor(bare, **long),
            torch.cat(shapes).to(device) if shapes and len(shapes) == len(kept) else None,
        )

    return batch.cached("truth", make)


def box_distance(px: torch.Tensor, py: torch.Tensor, boxes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(N,) Euclidean distance from points (px, py) (N,) to boxes (N,4) xyxy, 0 inside, in original-image
    pixels: per axis, input-pixel distances divided by scale (N,2) = (sy, sx) input pixels per original pixel."""
    dx = (boxes[:, 0] - px).clamp(min=0) + (px - boxes[:, 2]).clamp(min=0)
    dy = (boxes[:, 1] - py).clamp(min=0) + (py - boxes[:, 3]).clamp(min=0)
    return torch.hypot(dx / scale[:, 1], dy / scale[:, 0])


def mask_distance(px: torch.Tensor, py: torch.Tensor, masks: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(N,) distance from points (px, py) (N,) to the nearest pixel centre of masks (N,H,W), in original-image
    pixels as `box_distance`; inf for an empty mask."""
    h, w = masks.shape[-2:]
    ys = torch.arange(h, dtype=torch.float64, device=masks.device) + 0.5
    xs = torch.arange(w, dtype=torch.float64, device=masks.device) + 0.5
    dy = ((ys[None, :] - py[:, None]) / scale[:, :1]) ** 2
    dx = ((xs[None, :] - px[:, None]) / scale[:, 1:]) ** 2
    d2 = torch.where(masks, dy[:, :, None] + dx[:, None, :], float("inf"))
    return d2.flatten(1).amin(1).sqrt()


def pointing_hits(
    maps: torch.Tensor,
    boxes: torch.Tensor,
    owner: torch.Tensor,
    scale: torch.Tensor,
    tolerance: float,
    masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """(P,) bool: the maximum of maps[p] (P,H,W) lies within `tolerance` original pixels of a box owned by p
    (of its region, where `masks` (N,H,W) gives one per box: TorchRay's COCO rule).

    boxes (N,4) with owner (N,) in 0..P-1; scale (P,2) = (sy, sx) of each pair's image."""
    w = maps.shape[-1]
    top = maps.flatten(1).argmax(1)
    px, py = (top % w).double() + 0.5, (top // w).double() + 0.5
    if masks is None:
        near = box_distance(px[owner], py[owner], boxes, scale[owner]) <= tolerance
    else:
        near = mask_distance(px[owner], py[owner], masks, scale[owner]) <= tolerance
    hits = torch.zeros(len(maps), dtype=torch.long, device=maps.device).index_add_(0, owner, near.long())
    return hits > 0


def nan_rows(batch: BatchContext, name: str, pos: torch.Tensor, cls: torch.Tensor) -> list[PerImage]:
    nan = torch.full((len(pos),), float("nan"), dtype=torch.float64, device=batch.x.device)
    return [PerImage(m, name, pos, cls, nan) for m in batch.methods] if len(pos) else []


def bare_rows(batch: BatchContext, name: str, t: Truth) -> list[PerImage]:
    return nan_rows(batch, name, t.bare, torch.full_like(t.bare, NO_BOX))


def pointing(batch: BatchContext) -> list[PerImage]:
    t = truth(batch)
    seen = t.visible.nonzero()[:, 0]
    out = bare_rows(batch, "pointing_game", t) + nan_rows(batch, "pointing_game", t.pos[~t.visible], t.cls[~t.visible])
    if not len(seen):
        return out
    settings = batch.settings("pointing")
    h, w = batch.x.shape[-2:]
    remap = torch.full((len(t.pos),), -1, dtype=torch.long, device=batch.x.device)
    remap[seen] = torch.arange(len(seen), device=batch.x.device)
    owner = remap[t.owner]
    area = box_union_mask(t.boxes, owner, len(seen), (h, w)).double().mean((1, 2))
    pos, cls = t.pos[seen], t.cls[seen]
    if settings.difficult_pairs is None:
        difficult = (area < settings.difficult_area) & (t.classes_in_image[seen] > 1)
    else:
        difficult = flagged(settings.difficult_pairs, batch.image_ids, pos, cls)
    scale = batch.batch["scale"].to(batch.x.device, torch.float64)[pos]
    for m, maps in batch.class_maps(pos, cls).items():
        hit = pointing_hits(maps, t.boxes, owner, scale, settings.tolerance, t.masks).double()
        out += [
            PerImage(m, "pointing_game", pos, cls, hit),
            PerImage(m, "pointing_game_difficult", pos[difficult], cls[difficult], hit[difficult]),
        ]
    return out


def _class_mean(rows: pd.DataFrame, methods: list[str]) -> dict[str, float]:
    """Per method: the mean over classes of the per-class hit rate, in %."""
    per_class = rows.groupby(["method", "class"])["value"].mean().groupby("method").mean() * 100
    return {m: float(per_class.get(m, float("nan"))) for m in methods}


def _difficult_rule(cfg: ExperimentConfig) -> str:
    s = pointing_settings(cfg)
    if s.difficult_pairs is not None:
        return f"the pairs {s.difficult_pairs.name} flags"
    return f"the class's boxes under {s.difficult_area:g} of the image, another class present"


def summarize_pointing(rows: pd.DataFrame, methods: list[str], cfg: ExperimentConfig) -> MetricResult:
    valid = rows.dropna(subset=["value"])
    one = rows[rows["method"] == methods[0]]
    pairs = valid[valid["method"] == methods[0]]
    difficult = pairs[pairs["metric"] == "pointing_game_difficult"]
    pairs = pairs[pairs["metric"] == "pointing_game"]
    skipped = one[one["value"].isna() & (one["class"] != NO_BOX)]
    bare = one[one["value"].isna() & (one["class"] == NO_BOX)]
    note = (
        f"Pointing game (tolerance {pointing_settings(cfg).tolerance:g} original pixels): mean over "
        f"{pairs['class'].nunique()} classes of the hit rate; {len(pairs)} (image, class) pairs, "
        f"{len(difficult)} difficult ({_difficult_rule(cfg)}); {len(skipped)} pairs skipped (every box of the "
        "class cropped away), "
        f"{len(bare)} images without boxes."
    )
    return MetricResult(
        rows={
            row.label: _class_mean(valid[valid["metric"] == row.key], methods)
            for row in (POINTING_ALL, POINTING_DIFFICULT)
        },
        notes=[note],
    )


batch_metric(
    "pointing_game",
    "pointing game (TorchRay): the map's maximum within 15 original pixels of a box of the class",
    summarize=summarize_pointing,
    rows=(POINTING_ALL, POINTING_DIFFICULT),
    settings=PointingSettings,
    settings_key="pointing",
    needs_boxes=True,
    cost=class_maps_cost("ground-truth class with a visible box"),
)(pointing)


def energy_shares(maps: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """(P,) float64 share of each map's mass (P,H,W) inside the mask `inside` (P,H,W); 0 for a map without mass."""
    total = maps.double().sum((1, 2))
    part = (maps.double() * inside).sum((1, 2))
    return torch.where(total > 0, part / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(total))


def energy(batch: BatchContext) -> list[PerImage]:
    t = truth(batch)
    h, w = batch.x.shape[-2:]
    single = (t.boxes_in_image == 1) & t.visible
    candidates = single.nonzero()[:, 0]
    box_of = torch.full((len(t.pos),), -1, dtype=torch.long, device=batch.x.device)
    box_of[t.owner] = torch.arange(len(t.owner), device=batch.x.device)
    inside = box_union_mask(
        t.boxes[box_of[candidates]], torch.arange(len(candidates), device=batch.x.device), len(candidates), (h, w)
    )
    small = inside.double().mean((1, 2)) < batch.settings("pointing").energy_max_area
    chosen, inside = candidates[small], inside[small]
    rest = torch.ones(len(batch.x), dtype=torch.bool, device=batch.x.device)
    rest[t.pos[chosen]] = False
    others = rest.nonzero()[:, 0]
    out = nan_rows(batch, "energy_pointing", others, torch.full_like(others, NO_BOX))
    if len(chosen):
        pos, cls = t.pos[chosen], t.cls[chosen]
        out += [
            PerImage(m, "energy_pointing", pos, cls, energy_shares(maps, inside))
            for m, maps in batch.class_maps(pos, cls).items()
        ]
    return out


def _energy_note(cfg: ExperimentConfig) -> str:
    return (
        f" with exactly one box covering less than {100 * pointing_settings(cfg).energy_max_area:g}% of the image "
        "(images not selected: NaN rows in per_image_metrics.csv); the map of the box's class"
    )


batch_metric(
    "energy_pointing",
    "energy-based pointing game (Score-CAM): share of the map's mass inside the box",
    rows=(ENERGY,),
    note=_energy_note,
    settings=PointingSettings,
    settings_key="pointing",
    needs_boxes=True,
    cost=class_maps_cost("image with one box, under pointing.energy_max_area"),
)(energy)
