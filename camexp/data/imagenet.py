"""`kind: imagenet_val`: ILSVRC2012 val in the three layouts met in the wild (docs/guide/data.md, 'Real data sets').

- `wnid_folders`: one folder per wnid (torchvision's layout).
- `kaggle_csv`: flat `ILSVRC2012_val_*.JPEG` + Kaggle's `LOC_val_solution.csv` (with boxes).
- `devkit`: flat images + the devkit's `ILSVRC2012_validation_ground_truth.txt` and `meta.mat`.

Labels are always the wnid's position in sorted-wnid order (what timm models use). The devkit's ILSVRC
IDs are in a different order, so they are mapped ID -> wnid -> index and never used as an index.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import NamedTuple

import numpy as np

from camexp.config import DatasetConfig
from camexp.data.base import Item, Listing
from camexp.data.boxes import BoxRules
from camexp.data.folder import class_folder_items, dataset_root, is_wnid, list_images, sub_folders, wnid_folder_index
from camexp.data.images import image_size
from camexp.data.wnids import imagenet_class_names, imagenet_wnid_index
from camexp.errors import CamexpError
from camexp.io import read_user_text

KAGGLE_CSV = "LOC_val_solution.csv"
DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "meta.mat"
_DEVKIT_DATA = Path("ILSVRC2012_devkit_t12") / "data"
_ANNOTATION_FILES = {"kaggle_csv": KAGGLE_CSV, "devkit": DEVKIT_TRUTH}


class Truth(NamedTuple):
    """One image's ground truth: class index and boxes (pixel edges, see `Item`) with their class indices."""

    label: int
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    box_labels: tuple[int, ...] = ()
    where: str = ""  # "file: line N", to name a malformed box


def list_imagenet_val(cfg: DatasetConfig) -> Listing:
    """List ILSVRC2012 val images with sorted-wnid labels, whichever layout `cfg.root` uses."""
    root = dataset_root(cfg.root)
    layout, annotations = _detect_layout(root, cfg)
    provenance: dict[str, object] = {"layout": layout, "annotations": str(annotations) if annotations else None}
    if layout == "wnid_folders":
        items = class_folder_items(root, wnid_folder_index(root, sub_folders(root)), cfg.extensions)
    else:
        assert annotations is not None
        truth = read_kaggle_csv(annotations) if layout == "kaggle_csv" else read_devkit_truth(annotations)
        rules = BoxRules(cfg.bad_boxes)
        items = _pair(_flat_image_dir(root, cfg.extensions), truth, annotations, cfg.extensions, rules)
        provenance.update(labels_without_image=len(truth) - len(items), **rules.provenance())
    return Listing(items, list(imagenet_class_names()), provenance=provenance)


def _detect_layout(root: Path, cfg: DatasetConfig) -> tuple[str, Path | None]:
    """The layout (named in the config, or detected) and its annotation file."""
    layout: str = cfg.layout
    if layout == "auto":
        if cfg.annotations is not None:
            layout = "kaggle_csv" if cfg.annotations.suffix.lower() == ".csv" else "devkit"
        elif (names := sub_folders(root)) and all(is_wnid(n) for n in names):
            layout = "wnid_folders"
        else:
            found = [name for name, file in _ANNOTATION_FILES.items() if _find_beside(root, file)]
            if len(found) != 1:
                why = "both" if found else "neither"
                raise CamexpError(
                    f"{root}: found {why} of {KAGGLE_CSV} and {DEVKIT_TRUTH} beside the images and no "
                    "wnid sub-folders; set dataset.layout (and dataset.annotations)"
                )
            layout = found[0]
    if layout == "wnid_folders":
        return layout, None
    annotations = cfg.annotations or _find_beside(root, _ANNOTATION_FILES[layout])
    if annotations is None or not annotations.is_file():
        where = annotations or f"{_ANNOTATION_FILES[layout]} in {root} or {root.parent}"
        raise CamexpError(f"{where}: annotations for layout {layout!r} not found; set dataset.annotations to the file")
    return layout, annotations


def _find_beside(root: Path, name: str) -> Path | None:
    """`name` in the image folder, its parent, or their devkit `data/` folder."""
    for folder in (root, root.parent, root / _DEVKIT_DATA, root.parent / _DEVKIT_DATA):
        if (folder / name).is_file():
            return folder / name
    return None


def _flat_image_dir(root: Path, extensions: list[str]) -> Path:
    """The folder holding the flat val images: `root`, or its `images/` or `val/` sub-folder."""
    for folder in (root, root / "images", root / "val"):
        if folder.is_dir() and list_images(folder, extensions):
            return folder
    raise CamexpError(f"{root}: no images with extensions {extensions} here nor in images/ or val/")


def _pair(
    folder: Path, truth: dict[str, Truth], annotations: Path, extensions: list[str], rules: BoxRules
) -> list[Item]:
    """One item per image file; an image without a label is an error (the wrong annotations file). Boxes
    are checked against the image's size, read from its header."""
    items = []
    for path in list_images(folder, extensions):
        t = truth.get(path.stem)
        if t is None:
            raise CamexpError(f"{path}: image has no label in {annotations}; is that the right annotations file?")
        size = image_size(path) if t.boxes else None
        kept = rules.keep(t.boxes, size, lambda k: f"{t.where}: box {k + 1} of {path.name}")  # noqa: B023 (called now)
        boxes = tuple(b for b, keep in zip(t.boxes, kept) if keep)
        items.append(
            Item(
                path=path,
                image_id=path.stem,
                label=t.label,
                boxes=boxes,
                box_labels=tuple(c for c, keep in zip(t.box_labels, kept) if keep),
                size=size if boxes else None,
            )
        )
    return items


def read_kaggle_csv(path: Path) -> dict[str, Truth]:
    """`ImageId,PredictionString` rows, groups of `wnid xmin ymin xmax ymax` (0-based inclusive pixels).

    Boxes become pixel edges (xmax + 1, ymax + 1); the label is the first group's wnid.
    """
    wnid_index = imagenet_wnid_index()
    truth: dict[str, Truth] = {}
    rows = csv.reader(io.StringIO(read_user_text(path), newline=""))
    if next(rows, None) != ["ImageId", "PredictionString"]:
        raise CamexpError(f"{path}: line 1: expected the header 'ImageId,PredictionString' (Kaggle's {KAGGLE_CSV})")
    for line, row in enumerate(rows, start=2):
        fields = row[1].split() if len(row) == 2 else []
        if not fields or len(fields) % 5 or row[0] in truth:
            raise CamexpError(
                f"{path}: line {line}: malformed row (want 'ImageId,wnid xmin ymin xmax ymax ...', each ImageId once)"
            )
        groups = [fields[i : i + 5] for i in range(0, len(fields), 5)]
        unknown = [g[0] for g in groups if g[0] not in wnid_index]
        if unknown:
            raise CamexpError(f"{path}: line {line}: unknown wnid {unknown[0]!r} (not an ImageNet-1k class)")
        try:
            boxes = tuple((float(x0), float(y0), float(x1) + 1, float(y1) + 1) for _, x0, y0, x1, y1 in groups)
        except ValueError:
            raise CamexpError(f"{path}: line {line}: box coordinates must be numbers") from None
        labels = tuple(wnid_index[g[0]] for g in groups)
        truth[row[0]] = Truth(labels[0], boxes, labels, f"{path}: line {line}")
    return truth


def read_devkit_truth(path: Path) -> dict[str, Truth]:
    """Line i of the ground-truth file holds the ILSVRC ID of ILSVRC2012_val_<i>; meta.mat sits beside it."""
    id_to_index = read_devkit_meta(path.parent / DEVKIT_META)
    lines = read_user_text(path).rstrip().splitlines()
    truth = {}
    for n, text in enumerate(lines, start=1):
        ilsvrc_id = int(text) if text.strip().isdigit() else None
        if ilsvrc_id not in id_to_index:
            raise CamexpError(
                f"{path}: line {n}: {text.strip()!r} is not an ILSVRC2012 ID listed in {path.parent / DEVKIT_META}"
            )
        truth[f"ILSVRC2012_val_{n:08d}"] = Truth(id_to_index[ilsvrc_id])
    return truth


def read_devkit_meta(path: Path) -> dict[int, int]:
    """ILSVRC2012_ID (1..1000) -> sorted-wnid class index, from the devkit's `synsets` struct array."""
    from scipy.io import loadmat

    if not path.is_file():
        raise CamexpError(f"{path}: the devkit's {DEVKIT_META} must sit beside {DEVKIT_TRUTH}")
    try:
        synsets = loadmat(path, squeeze_me=True)["synsets"]
        ids, wnids = np.ravel(synsets["ILSVRC2012_ID"]), np.ravel(synsets["WNID"])
    except Exception as e:  # not a .mat file, no `synsets`, missing fields: all "not the devkit's meta.mat"
        raise CamexpError(
            f"{path}: not the devkit's meta.mat (need a 'synsets' struct with ILSVRC2012_ID and WNID; "
            f"{e.__class__.__name__}: {e})"
        ) from None
    wnid_index = imagenet_wnid_index()
    leaves = {int(i): str(w) for i, w in zip(ids, wnids) if 1 <= int(i) <= 1000}
    unknown = [w for w in leaves.values() if w not in wnid_index]
    if unknown:
        raise CamexpError(f"{path}: unknown wnid {unknown[0]!r} (not an ImageNet-1k class)")
    return {i: wnid_index[w] for i, w in leaves.items()}
