"""The dataset contract every loader follows, and the batch collation.

A loader only has to list its `Item`s (file, id, label and optional boxes in original pixels); decoding,
RGB conversion, the pixel transform, box mapping and bad-image handling live here once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from camexp.data.images import BadImageError, load_rgb
from camexp.errors import CamexpError
from camexp.data.transforms import PixelTransform


@dataclass(frozen=True)
class Item:
    """One image as listed by a loader. `label` is the class index in the model's space (-1: unknown).

    `labels` (multi-label sets, e.g. VOC) and `boxes` (with `box_labels`) are optional. Boxes are xyxy in
    original-image pixel *edges*, 0-based: a box covers pixels x0 .. x1-1, so a whole W-pixel-wide image
    is (0, W). Loaders convert their format's convention into this one. `size` (width, height) is the
    image size the boxes were checked against (camexp/data/boxes.py); the decoded image must match it.
    """

    path: Path
    image_id: str
    label: int = -1
    labels: tuple[int, ...] = ()
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    box_labels: tuple[int, ...] = ()
    box_difficult: tuple[bool, ...] = field(default=())
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class Listing:
    """What a loader returns: the items, what the items mean, and where they came from.

    `provenance` records the layout, annotation files and selection (subset, limit) so a run can state
    exactly which images it used.
    """

    items: list[Item]
    class_names: list[str] | None = None
    multilabel: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)


class ImageDataset(Dataset):
    """Items -> samples: dicts with `image` (3,H,W in [0,1]), `image_id`, `index`, `label`, `bad`, `scale`
    ((sy, sx) input pixels per original pixel, for tolerances stated in original pixels), ...

    With `skip_bad=True` an unreadable file yields a zero image flagged `bad=True` (the runner counts and
    drops it); otherwise it raises `BadImageError` naming the file.
    """

    def __init__(self, items: list[Item], transform: PixelTransform, *, class_names: list[str] | None = None,
                 multilabel: bool = False, skip_bad: bool = False, provenance: dict[str, Any] | None = None):
        self.items = items
        self.provenance = provenance or {}
        self.transform = transform
        self.class_names = class_names
        self.multilabel = multilabel
        self.skip_bad = skip_bad

    @property
    def has_labels(self) -> bool:
        return any(it.label >= 0 or it.labels for it in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        it = self.items[index]
        sample: dict[str, Any] = {"image_id": it.image_id, "index": index, "label": it.label, "bad": False}
        boxes = torch.tensor(it.boxes, dtype=torch.float32).reshape(-1, 4) if it.boxes else None
        try:
            image = decode(it)
            sample["image"], mapped = self.transform(image, boxes)
            sample["scale"] = torch.tensor(self.transform.scale(image.height, image.width), dtype=torch.float64)
        except BadImageError:
            if not self.skip_bad:
                raise
            h, w = self.transform.spec.size
            sample.update(image=torch.zeros(3, h, w), bad=True, scale=torch.ones(2, dtype=torch.float64))
            mapped = boxes
        if self.class_names is not None and self.multilabel:
            multi_hot = torch.zeros(len(self.class_names))
            multi_hot[list(it.labels)] = 1.0
            sample["labels"] = multi_hot
        if it.boxes:
            sample["boxes"] = mapped
            sample["box_labels"] = torch.tensor(it.box_labels, dtype=torch.long)
            sample["box_difficult"] = torch.tensor(it.box_difficult or [False] * len(it.boxes), dtype=torch.bool)
        return sample


def decode(item: Item) -> Image.Image:
    """The item's image as the run sees it (RGB, fully decoded). An image whose size differs from the one
    its boxes were checked against is refused: the boxes would be mapped onto the wrong pixels."""
    image = load_rgb(item.path)
    if item.boxes and item.size and image.size != item.size:
        (w, h), (aw, ah) = image.size, item.size
        raise CamexpError(f"{item.path}: the image is {w}x{h} but its annotation gives {aw}x{ah}, so its boxes "
                          "would be misplaced; fix the annotation")
    return image


_LIST_KEYS = ("image_id", "boxes", "box_labels", "box_difficult")


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep ids and variable-length box tensors as lists."""
    out: dict[str, Any] = {}
    for key in samples[0].keys() | {k for s in samples for k in s}:
        values = [s.get(key) for s in samples]
        if key in _LIST_KEYS:
            out[key] = values
        elif isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        else:
            out[key] = torch.tensor(values)
    return out
