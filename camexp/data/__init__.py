"""Datasets: a registry from `dataset.kind` to a function listing `Item`s, and the DataLoader factory."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from camexp.config import DatasetConfig
from camexp.data.base import ImageDataset, Item, collate
from camexp.data.folder import list_folder
from camexp.data.transforms import InputSpec, PixelTransform
from camexp.errors import CamexpError


@dataclass(frozen=True)
class Listing:
    """What a loader returns: the items plus what the items mean."""

    items: list[Item]
    class_names: list[str] | None = None
    multilabel: bool = False


def _folder(cfg: DatasetConfig) -> Listing:
    return Listing(list_folder(cfg.root, cfg.extensions, cfg.labels))


LOADERS: dict[str, Callable[[DatasetConfig], Listing]] = {"folder": _folder}


def list_dataset(cfg: DatasetConfig) -> Listing:
    """Run the loader named by `cfg.kind` and apply `limit`."""
    if cfg.kind not in LOADERS:
        raise CamexpError(f"dataset.kind {cfg.kind!r} is not known; known kinds: {sorted(LOADERS)}")
    listing = LOADERS[cfg.kind](cfg)
    if cfg.limit is not None:
        listing = Listing(listing.items[: cfg.limit], listing.class_names, listing.multilabel)
    return listing


def build_dataset(cfg: DatasetConfig, spec: InputSpec) -> ImageDataset:
    listing = list_dataset(cfg)
    return ImageDataset(listing.items, PixelTransform(spec), class_names=listing.class_names,
                        multilabel=listing.multilabel, skip_bad=cfg.skip_bad_images)


__all__ = ["ImageDataset", "InputSpec", "Item", "Listing", "LOADERS", "PixelTransform", "build_dataset", "collate",
           "list_dataset"]
