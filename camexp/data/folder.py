"""`kind: folder`: class-index or wnid sub-folders, or a flat folder with an optional `image_id,label` CSV."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from camexp.data.base import Item
from camexp.data.wnids import imagenet_wnid_index
from camexp.errors import CamexpError


def _images(folder: Path, extensions: list[str]) -> list[Path]:
    exts = {e.lower() for e in extensions}
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)


def list_folder(root: Path, extensions: list[str], labels_csv: Path | None = None) -> list[Item]:
    """List the images under `root` with their labels (class index in the model's space, or -1)."""
    if not root.is_dir():
        raise CamexpError(f"{root}: dataset root is not a folder")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    flat = _images(root, extensions)
    if subdirs and not flat:
        return _class_folders(root, subdirs, extensions)
    if not flat:
        raise CamexpError(f"{root}: no images with extensions {extensions} found")
    labels = _read_labels(labels_csv) if labels_csv else {}
    items = [Item(path=p, image_id=p.stem, label=labels.get(p.stem, -1)) for p in flat]
    if labels_csv:
        missing = [it.image_id for it in items if it.label < 0]
        if missing:
            raise CamexpError(f"{labels_csv}: no label for {len(missing)} image(s), e.g. {missing[0]!r}")
    return items


def _class_folders(root: Path, subdirs: list[Path], extensions: list[str]) -> list[Item]:
    names = [d.name for d in subdirs]
    if all(n.isdigit() for n in names):
        index = {n: int(n) for n in names}  # int(name): string sorting would put '10' before '2'
    elif all(n.startswith("n") and n[1:].isdigit() for n in names):
        wnid_index = imagenet_wnid_index()
        unknown = [n for n in names if n not in wnid_index]
        if unknown:
            raise CamexpError(f"{root}: folder {unknown[0]!r} is not an ImageNet-1k wnid")
        index = {n: wnid_index[n] for n in names}
    else:
        raise CamexpError(f"{root}: sub-folders must all be class indices (0..999) or ImageNet wnids "
                          f"(n01440764 ...); found e.g. {names[0]!r}")
    items: list[Item] = []
    for d in subdirs:
        items += [Item(path=p, image_id=p.stem, label=index[d.name]) for p in _images(d, extensions)]
    if not items:
        raise CamexpError(f"{root}: class folders contain no images with extensions {extensions}")
    return items


def _read_labels(path: Path) -> dict[str, int]:
    if not path.is_file():
        raise CamexpError(f"{path}: labels file not found")
    try:
        df = pd.read_csv(path, dtype={"image_id": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise CamexpError(f"{path}: cannot parse labels CSV ({e})") from None
    if list(df.columns[:2]) != ["image_id", "label"]:
        raise CamexpError(f"{path}: labels CSV needs the header 'image_id,label', found {list(df.columns)}")
    if not pd.api.types.is_integer_dtype(df["label"]) or (df["label"] < 0).any():
        raise CamexpError(f"{path}: column 'label' must hold non-negative integer class indices")
    return dict(zip(df["image_id"], df["label"].astype(int)))
