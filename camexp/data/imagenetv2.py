"""`kind: imagenetv2`: ImageNetV2 (MatchedFrequency, Threshold0.7, TopImages) as released.

Folders `0` .. `999` hold the images of the class with that sorted-wnid index. The label is int(name):
sorting the names as strings would give folder '10' the label of '2'.
"""

from __future__ import annotations

from camexp.config import DatasetConfig
from camexp.data.base import Listing
from camexp.data.folder import class_folder_items, dataset_root, int_folder_index, sub_folders
from camexp.data.wnids import imagenet_class_names
from camexp.errors import CamexpError

NUM_CLASSES = 1000


def list_imagenetv2(cfg: DatasetConfig) -> Listing:
    """List the images of an ImageNetV2 variant; any folder other than 0..999 is an error."""
    root = dataset_root(cfg.root)
    names = sub_folders(root)
    if not names:
        raise CamexpError(f"{root}: no class folders 0..999; point dataset.root at the extracted ImageNetV2 folder")
    index = int_folder_index(root, names)
    too_big = [n for n, i in index.items() if i >= NUM_CLASSES]
    if too_big:
        raise CamexpError(f"{root / too_big[0]}: ImageNet has classes 0..{NUM_CLASSES - 1} only")
    items = class_folder_items(root, index, cfg.extensions)
    return Listing(
        items, list(imagenet_class_names()), provenance={"layout": "class_index_folders", "class_folders": len(names)}
    )
