"""`kind: coco`: MS COCO 2014 (TorchRay's pointing game on val2014) as multi-label classification with boxes and
instance masks.

Layout: `<root>/<split>/<file_name>` images and `<root>/annotations/instances_<split>.json` (or
`dataset.annotations`); split defaults to val2014. Every image of the file is listed in id order (TorchRay's
CocoDetection order); an image without annotations has no class (the pointing game leaves it a NaN row).
Classes are the 80 categories in id order (TorchRay's class index). Every annotation, crowd regions included (as
TorchRay's `coco_as_mask`), gives a box (COCO's [x, y, w, h] in pixel edges) and its segmentation, which
`camexp.data.masks.segment_mask` decodes to the image's pixels: the pointing game then hits on the class's mask,
not its boxes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from camexp.config import DatasetConfig
from camexp.data.base import Item, Listing
from camexp.data.boxes import BoxRules
from camexp.data.folder import dataset_root
from camexp.errors import CamexpError
from camexp.io import read_user_text

DEFAULT_SPLIT = "val2014"


def list_coco(cfg: DatasetConfig) -> Listing:
    """List the images of instances_<split>.json with multi-hot labels, boxes and segmentations."""
    root = dataset_root(cfg.root)
    split = cfg.split or DEFAULT_SPLIT
    ann_file = cfg.annotations or root / "annotations" / f"instances_{split}.json"
    if not ann_file.is_file():
        raise CamexpError(f"{ann_file}: COCO annotation file missing (set dataset.annotations or put it there)")
    try:
        data = json.loads(read_user_text(ann_file))
        categories = sorted(data["categories"], key=lambda c: c["id"])
        images, annotations = data["images"], data["annotations"]
    except (ValueError, KeyError, TypeError) as e:
        raise CamexpError(f"{ann_file}: not a COCO instances file ({e.__class__.__name__}: {e})") from None
    index = {c["id"]: i for i, c in enumerate(categories)}
    per_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in annotations:
        per_image[ann["image_id"]].append(ann)
    rules = BoxRules(cfg.bad_boxes)
    items = [_item(root / split, image, per_image[image["id"]], index, rules) for image in sorted(images, key=_id)]
    return Listing(
        items,
        [c["name"] for c in categories],
        multilabel=True,
        provenance={"layout": "coco", "annotations": str(ann_file), "split": split, **rules.provenance()},
    )


def _id(image: dict[str, Any]) -> int:
    return int(image["id"])


def _item(
    folder: Path, image: dict[str, Any], anns: list[dict[str, Any]], index: dict[int, int], rules: BoxRules
) -> Item:
    path = folder / image["file_name"]
    size = (int(image["width"]), int(image["height"]))
    boxes = [(x, y, x + w, y + h) for x, y, w, h in (map(float, a["bbox"]) for a in anns)]
    kept = rules.keep(boxes, size, lambda k: f"{path.name}: annotation {anns[k].get('id', k)}")
    chosen = [(a, b) for a, b, keep in zip(anns, boxes, kept) if keep]
    return Item(
        path=path,
        image_id=path.stem,
        labels=tuple(sorted({index[a["category_id"]] for a in anns})),
        boxes=tuple(b for _, b in chosen),
        box_labels=tuple(index[a["category_id"]] for a, _ in chosen),
        size=size if chosen else None,
        segments=tuple(a["segmentation"] for a, _ in chosen),
    )
