"""The dataset contract every loader follows, and the batch collation.

A loader only has to list its `Item`s (file, id, label and optional boxes in original pixels); decoding,
RGB conversion, the pixel transform, box mapping and bad-image handling live here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from camexp.data.images import BadImageError, load_rgb
from camexp.data.masks import segment_mask
from camexp.data.transforms import PixelTransform
from camexp.errors import CamexpError


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
    segments: tuple[Any, ...] = ()


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

    def __init__(
        self,
        items: list[Item],
        transform: PixelTransform,
        *,
        class_names: list[str] | None = None,
        multilabel: bool = False,
        skip_bad: bool = False,
        provenance: dict[str, Any] | None = None,
    ):
        self.items = items
        self.provenance = provenance or {}
        self.transform = transform
        self.class_names = class_names
        self.multilabel = multilabel
        self.skip_bad = skip_bad
        self.encoded = False  # True: JPEGs leave as their file's bytes, decoded in batches on the device

    @property
    def has_labels(self) -> bool:
        return any(it.label >= 0 or it.labels for it in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample(index, self.encoded)

    def sample(self, index: int, encoded: bool = False) -> dict[str, Any]:
        """Item `index` as a sample; `encoded`: a JPEG's bytes under `encoded` instead of `image` (None)."""
        it = self.items[index]
        sample: dict[str, Any] = {"image_id": it.image_id, "index": index, "label": it.label, "bad": False}
        boxes = torch.tensor(it.boxes, dtype=torch.float32).reshape(-1, 4) if it.boxes else None
        try:
            jpeg = read_jpeg(it) if encoded else None
            if jpeg is None:
                image = decode(it)
                (sample["image"], mapped), (width, height) = self.transform(image, boxes), image.size
            else:
                (sample["encoded"], (width, height)), sample["image"] = jpeg, None
                mapped = None if boxes is None else self.transform.map_boxes(boxes, height, width)
            sample["scale"] = torch.tensor(self.transform.scale(height, width), dtype=torch.float64)
        except BadImageError:
            if not self.skip_bad:
                raise
            h, w = self.transform.spec.size
            sample.update(image=torch.zeros(3, h, w), bad=True, scale=torch.ones(2, dtype=torch.float64))
            mapped = boxes
        if encoded:
            sample.setdefault("encoded", None)
        if self.class_names is not None and self.multilabel:
            multi_hot = torch.zeros(len(self.class_names))
            multi_hot[list(it.labels)] = 1.0
            sample["labels"] = multi_hot
        if it.boxes:
            sample["boxes"] = mapped
            sample["box_labels"] = torch.tensor(it.box_labels, dtype=torch.long)
            sample["box_difficult"] = torch.tensor(it.box_difficult or [False] * len(it.boxes), dtype=torch.bool)
        if it.segments:
            sample["masks"] = self.masks(it, sample["bad"])
        return sample

    def masks(self, item: Item, skip: bool) -> torch.Tensor:
        """(N,H,W) bool: each segment of `item` decoded at its annotated size and moved through the image's resize and
        crop (nearest neighbour); all False for an image that was not decoded as the annotation says (`skip`)."""
        assert item.size is not None  # a loader that gives segments gives the size they belong to
        w, h = item.size
        masks = torch.from_numpy(np.stack([segment_mask(seg, h, w) for seg in item.segments]))
        return self.transform.map_masks(masks, skip)


def decode(item: Item) -> Image.Image:
    """The item's image as the run sees it (RGB, fully decoded). An image whose size differs from the one
    its boxes were checked against is refused: the boxes would be mapped onto the wrong pixels."""
    image = load_rgb(item.path)
    _check_size(item, image.size)
    return image


def _check_size(item: Item, size: tuple[int, int]) -> None:
    if item.boxes and item.size and size != item.size:
        (w, h), (aw, ah) = size, item.size
        raise CamexpError(
            f"{item.path}: the image is {w}x{h} but its annotation gives {aw}x{ah}, so its boxes "
            "would be misplaced; fix the annotation"
        )


def read_jpeg(item: Item) -> tuple[torch.Tensor, tuple[int, int]] | None:
    """The file's bytes and (width, height) when it is an RGB or grayscale JPEG that a JPEG decoder can take as
    it is (checked from the header alone), else None: other files go through `decode`. Size rule as `decode`."""
    try:
        with Image.open(item.path) as im:
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
            size = im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None  # `decode` names the problem
    _check_size(item, size)
    return torch.frombuffer(bytearray(item.path.read_bytes()), dtype=torch.uint8), size


_LIST_KEYS = ("image_id", "boxes", "box_labels", "box_difficult", "encoded", "masks")


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep ids, variable-length box tensors, encoded files and any key that some sample
    lacks a value for (images left to decode on the device) as lists."""
    out: dict[str, Any] = {}
    for key in samples[0].keys() | {k for s in samples for k in s}:
        values = [s.get(key) for s in samples]
        if key in _LIST_KEYS or any(v is None for v in values):
            out[key] = values
        elif isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(cast(list[torch.Tensor], values))  # no None: checked above
        else:
            out[key] = torch.tensor(values)
    return out
