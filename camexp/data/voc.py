"""`kind: voc`: PASCAL VOC 2007/2012 as multi-label classification with boxes.

Layout: `VOCdevkit/VOC20xx/{JPEGImages,Annotations,ImageSets/Main}`. `dataset.root` may be the VOCdevkit
folder, its parent, or the VOC20xx folder itself; `dataset.year` picks one when several are present.

Box convention: VOC XML boxes are 1-based inclusive pixel indices (xmin=1 is the first column). They
become 0-based pixel edges, (xmin - 1, ymin - 1, xmax, ymax), the convention of `Item`: a box spanning
the whole W x H image is (0, 0, W, H). Boxes are checked (camexp/data/boxes.py) against the size the XML
declares (else the image's header), and the decoded image must have that size.

Difficult objects: `difficult: keep` (default) keeps them in labels and boxes, flagged in
`box_difficult`; `drop` removes them from both, as VOC's classification ground truth marks a class seen
only in difficult objects as "ignore" (0), not present.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

from camexp.config import DatasetConfig
from camexp.data.base import Item, Listing
from camexp.data.boxes import Box, BoxRules
from camexp.data.folder import dataset_root
from camexp.data.images import image_size
from camexp.errors import CamexpError
from camexp.io import read_user_text

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_YEARS = (2007, 2012)
DEFAULT_SPLIT = "val"
_PARTS = ("JPEGImages", "Annotations", "ImageSets/Main")


def list_voc(cfg: DatasetConfig) -> Listing:
    """List the images of `ImageSets/Main/<split>.txt` with multi-hot labels and boxes from their XML."""
    voc, year = find_voc_dir(dataset_root(cfg.root), cfg.year)
    split = cfg.split or DEFAULT_SPLIT
    ids_file = voc / "ImageSets" / "Main" / f"{split}.txt"
    if not ids_file.is_file():
        known = sorted(p.stem for p in ids_file.parent.glob("*.txt") if "_" not in p.stem)
        raise CamexpError(f"{ids_file}: split {split!r} not found; splits here: {known}")
    ids = [line.split()[0] for line in read_user_text(ids_file).splitlines() if line.strip()]
    rules = BoxRules(cfg.bad_boxes)
    items = [_item(voc, image_id, cfg.difficult == "drop", rules) for image_id in ids]
    return Listing(
        items,
        list(VOC_CLASSES),
        multilabel=True,
        provenance={
            "layout": "voc",
            "voc_dir": str(voc),
            "year": year,
            "split": split,
            "difficult": cfg.difficult,
            **rules.provenance(),
        },
    )


def find_voc_dir(root: Path, year: int | None) -> tuple[Path, int | None]:
    """The one VOC20xx folder that `root` is, or holds directly or under VOCdevkit/."""
    years = [year] if year else list(VOC_YEARS)
    candidates = [root] + [base / f"VOC{y}" for base in (root, root / "VOCdevkit") for y in years]
    found = [c for c in candidates if all((c / part).is_dir() for part in _PARTS)]
    if root in found:
        match = re.fullmatch(r"VOC(\d{4})", root.name)
        found_year = int(match.group(1)) if match else None
        if year and found_year and year != found_year:
            raise CamexpError(f"{root}: this is VOC{found_year} but dataset.year is {year}")
        return root, year or found_year
    if len(found) != 1:
        want = f"VOC{year}" if year else "VOC2007 or VOC2012"
        fix = "set dataset.year" if found else f"point dataset.root at the VOCdevkit folder holding {want}"
        raise CamexpError(f"{root}: {len(found)} {want} folders with {', '.join(_PARTS)} found; {fix}")
    return found[0], int(found[0].name[3:])


class VocObject(NamedTuple):
    """One `<object>` of a VOC XML file; `box` in 0-based pixel edges, `text` as the file writes it."""

    label: int
    box: Box
    difficult: bool
    text: str


def _item(voc: Path, image_id: str, drop_difficult: bool, rules: BoxRules) -> Item:
    image = voc / "JPEGImages" / f"{image_id}.jpg"
    if not image.is_file():
        raise CamexpError(f"{image}: image listed in the split file is missing")
    xml = voc / "Annotations" / f"{image_id}.xml"
    objects, size = parse_annotation(xml)
    if drop_difficult:
        objects = [o for o in objects if not o.difficult]
    size = size or image_size(image)
    kept = rules.keep([o.box for o in objects], size, lambda k: f"{xml}: object {k + 1} ({objects[k].text})")
    boxed = [o for o, keep in zip(objects, kept) if keep]
    return Item(
        path=image,
        image_id=image_id,
        label=-1,
        labels=tuple(sorted({o.label for o in objects})),
        boxes=tuple(o.box for o in boxed),
        box_labels=tuple(o.label for o in boxed),
        box_difficult=tuple(o.difficult for o in boxed),
        size=size if boxed else None,
    )


def parse_annotation(path: Path) -> tuple[list[VocObject], tuple[int, int] | None]:
    """Every object of one VOC XML file, and the image size (width, height) it declares, if it does."""
    if not path.is_file():
        raise CamexpError(f"{path}: annotation file missing for an image listed in the split")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise CamexpError(f"{path}: not valid XML ({e})") from None
    objects = []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise CamexpError(f"{path}: object class {name!r} is not one of the 20 VOC classes")
        try:
            x0, y0, x1, y1 = (float(obj.findtext(f"bndbox/{k}", "")) for k in _BOX_KEYS)
        except ValueError:
            raise CamexpError(f"{path}: a {name!r} object lacks a numeric bndbox xmin/ymin/xmax/ymax") from None
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        text = f"{name!r}, " + " ".join(f"{k}={v:g}" for k, v in zip(_BOX_KEYS, (x0, y0, x1, y1)))
        objects.append(VocObject(VOC_CLASSES.index(name), (x0 - 1, y0 - 1, x1, y1), difficult, text))
    return objects, _declared_size(root)


_BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


def _declared_size(root: ET.Element) -> tuple[int, int] | None:
    """`<size><width>W</width><height>H</height>`, when present and positive."""
    try:
        w, h = int(root.findtext("size/width", "")), int(root.findtext("size/height", ""))
    except ValueError:
        return None
    return (w, h) if w > 0 and h > 0 else None
