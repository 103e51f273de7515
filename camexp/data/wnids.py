"""ImageNet-1k class identities: wnid <-> index (sorted-wnid order, the one timm models use)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from timm.data import ImageNetInfo


@lru_cache(maxsize=1)
def _info() -> ImageNetInfo:
    from timm.data import ImageNetInfo  # here, not above: timm.data loads torchvision, which `camexp methods` needs not

    return ImageNetInfo()


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 wnids in sorted order; position = class index (n01440764 = 0)."""
    return tuple(_info().label_names())


@lru_cache(maxsize=1)
def imagenet_wnid_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """Short human names of the ImageNet-1k classes (first synonym), by class index."""
    info = _info()
    return tuple(info.index_to_description(i).split(",")[0] for i in range(1000))
