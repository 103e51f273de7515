"""`kind: folder`: class-index or wnid sub-folders, or a flat folder with an optional `image_id,label` CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from camexp.data.base import Item
from camexp.data.wnids import imagenet_wnid_index
from camexp.errors import CamexpError


def list_images(folder: Path, extensions: list[str]) -> list[Path]:
    """Entries of `folder` named like images, sorted by name: files, and also broken or looping symbolic
    links, which then fail to decode like any unreadable image (an error naming them, or skipped, counted
    and listed with `skip_bad_images`) instead of vanishing from the data set unnoticed."""
    exts = {e.lower() for e in extensions}
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in exts and not p.is_dir())


def list_folder(root: Path, extensions: list[str], labels_csv: Path | None = None) -> list[Item]:
    """List the images under `root` with their labels (class index in the model's space, or -1)."""
    subdirs = sub_folders(dataset_root(root))
    flat = list_images(root, extensions)
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


def dataset_root(root: Path) -> Path:
    """`root`, or a clear error when it is not an existing folder."""
    if not root.is_dir():
        raise CamexpError(f"{root}: dataset root is not a folder (check dataset.root)")
    return root


def sub_folders(root: Path) -> list[str]:
    """Names of the non-hidden sub-folders of `root`, sorted."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_wnid(name: str) -> bool:
    return name.startswith("n") and name[1:].isdigit()


def int_folder_index(root: Path, names: list[str]) -> dict[str, int]:
    """Folder name -> int(name). int, never string order: sorting strings would put '10' before '2'."""
    bad = [n for n in names if not (n.isdigit() and str(int(n)) == n)]
    if bad:
        raise CamexpError(f"{root}: sub-folder {bad[0]!r} is not a class index (folders must be named 0, 1, ... 999)")
    return {n: int(n) for n in names}


def wnid_folder_index(root: Path, names: list[str]) -> dict[str, int]:
    """Folder name (an ImageNet wnid) -> its position in sorted-wnid order, the index timm models use."""
    wnid_index = imagenet_wnid_index()
    unknown = [n for n in names if n not in wnid_index]
    if unknown:
        raise CamexpError(f"{root}: folder {unknown[0]!r} is not an ImageNet-1k wnid (n01440764 ...)")
    return {n: wnid_index[n] for n in names}


def _class_folders(root: Path, names: list[str], extensions: list[str]) -> list[Item]:
    if all(n.isdigit() for n in names):
        index = int_folder_index(root, names)
    elif all(is_wnid(n) for n in names):
        index = wnid_folder_index(root, names)
    else:
        raise CamexpError(
            f"{root}: sub-folders must all be class indices (0..999) or ImageNet wnids "
            f"(n01440764 ...); found e.g. {names[0]!r}"
        )
    return class_folder_items(root, index, extensions)


def class_folder_items(root: Path, index: dict[str, int], extensions: list[str]) -> list[Item]:
    """Items of the sub-folders of `root` named in `index` (folder name -> class index), sorted by folder."""
    items: list[Item] = []
    for name in sorted(index):
        items += [Item(path=p, image_id=p.stem, label=index[name]) for p in list_images(root / name, extensions)]
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
