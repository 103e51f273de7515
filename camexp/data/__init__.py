"""Datasets: a registry from `dataset.kind` to a function listing `Item`s, and the DataLoader factory.

A new kind is one function `(DatasetConfig) -> Listing` registered here, or a plug-in named by import path
(`kind: mypkg.data:list_mine`) or entry point (group `camexp.datasets`)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import replace

from camexp.config import DatasetConfig, SubsetConfig
from camexp.data.base import ImageDataset, Item, Listing, collate
from camexp.data.cifar10 import list_cifar10
from camexp.data.coco import list_coco
from camexp.data.folder import list_folder
from camexp.data.imagenet import list_imagenet_val
from camexp.data.imagenetv2 import list_imagenetv2
from camexp.data.transforms import InputSpec, PixelTransform
from camexp.data.voc import list_voc
from camexp.errors import CamexpError
from camexp.registry import Registry, callable_entry


def _folder(cfg: DatasetConfig) -> Listing:
    """Images under `root`; labels from a CSV (`labels`) or from sub-folders named 0..999 or by wnid."""
    return Listing(list_folder(cfg.root, cfg.extensions, cfg.labels))


Loader = Callable[[DatasetConfig], Listing]
LOADERS: Registry[Loader] = Registry(
    "dataset kind", callable_entry("a function (DatasetConfig) -> Listing"), group="camexp.datasets"
)
for _kind, _loader in (
    ("folder", _folder),
    ("imagenet_val", list_imagenet_val),
    ("imagenetv2", list_imagenetv2),
    ("voc", list_voc),
    ("cifar10", list_cifar10),
    ("coco", list_coco),
):
    LOADERS.register(_kind, _loader)


def select_subset(n: int, subset: SubsetConfig) -> list[int]:
    """Indices (ascending) of the deterministic subset of `n` listed items."""
    if subset.every is not None:
        return list(range(0, n, subset.every))
    assert subset.random is not None
    return sorted(random.Random(subset.seed).sample(range(n), min(subset.random, n)))


def list_dataset(cfg: DatasetConfig) -> Listing:
    """Run the loader named by `cfg.kind`, apply `subset` then `limit`, and record what was selected.

    `provenance` ends with what the runner writes to run.json: counts before and after selection, the
    subset and limit used, and a hash of the selected image ids.
    """
    try:
        loader = LOADERS.get(cfg.kind)
    except CamexpError as e:
        raise CamexpError(f"dataset.kind: {e}") from None
    listing = loader(cfg)
    items = listing.items
    if cfg.subset is not None:
        items = [items[i] for i in select_subset(len(items), cfg.subset)]
    if cfg.limit is not None:
        items = items[: cfg.limit]
    ids = hashlib.sha256("\n".join(it.image_id for it in items).encode()).hexdigest()[:16]
    provenance = {
        "kind": cfg.kind,
        "root": str(cfg.root),
        "root_resolved": str(cfg.root.resolve()),  # what reports match runs by: the same images by any path
        **listing.provenance,
        "listed": len(listing.items),
        "subset": cfg.subset.model_dump(exclude_none=True) if cfg.subset else None,
        "limit": cfg.limit,
        "selected": len(items),
        "ids_sha256": ids,
    }
    return replace(listing, items=items, provenance=provenance)


def build_dataset(cfg: DatasetConfig, spec: InputSpec) -> ImageDataset:
    listing = list_dataset(cfg)
    return ImageDataset(
        listing.items,
        PixelTransform(spec),
        class_names=listing.class_names,
        multilabel=listing.multilabel,
        skip_bad=cfg.skip_bad_images,
        provenance=listing.provenance,
    )


__all__ = [
    "ImageDataset",
    "InputSpec",
    "Item",
    "Listing",
    "LOADERS",
    "PixelTransform",
    "build_dataset",
    "collate",
    "list_dataset",
    "select_subset",
]
