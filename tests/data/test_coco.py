"""`kind: coco` on a hand-made instances file: listing, classes in id order, crowd RLE and polygon masks decoded to
hand-computed pixels, the missing annotation file named in one line, and the pointing game hitting the region
(TorchRay's COCO rule), not the box."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from camexp.config import DatasetConfig
from camexp.data import build_dataset, list_dataset
from camexp.data.masks import polygon_mask, rle_string_counts, segment_mask
from camexp.data.transforms import InputSpec
from camexp.errors import CamexpError
from camexp.metrics.pointing import pointing_hits


def test_polygon_rectangle_covers_the_pixels_whose_centres_it_holds():
    """COCO puts pixel (i, j)'s centre at (j, i): the rectangle (1,1)-(4,3) holds rows 1-2, columns 1-3."""
    want = np.zeros((5, 6), dtype=bool)
    want[1:3, 1:4] = True
    assert np.array_equal(polygon_mask([1, 1, 4, 1, 4, 3, 1, 3], 5, 6), want)
    # the same rectangle listed clockwise from another corner, and a union of two polygons
    assert np.array_equal(polygon_mask([4, 3, 1, 3, 1, 1, 4, 1], 5, 6), want)
    union = segment_mask([[1, 1, 4, 1, 4, 3, 1, 3], [5, 3, 6, 3, 6, 5, 5, 5]], 5, 6)
    want[3:5, 5] = True
    assert np.array_equal(union, want)


def test_rle_counts_run_down_the_columns_starting_with_zeros():
    """counts [3, 4, 5, 8] on a 4 x 5 image: pixel p is column p // 4, row p % 4; ones at p = 3..6 and 12..19."""
    want = np.zeros((4, 5), dtype=bool)
    want[3, 0] = True
    want[0:3, 1] = True
    want[:, 3:] = True
    assert np.array_equal(segment_mask({"counts": [3, 4, 5, 8], "size": [4, 5]}, 4, 5), want)
    # COCO's compressed string: '3','4','5' and then 8 - 4 = 4 stored as '4'; a negative difference -2 as 'N'
    assert rle_string_counts("3454") == [3, 4, 5, 8] and rle_string_counts("345N") == [3, 4, 5, 2]
    assert np.array_equal(segment_mask({"counts": "3454", "size": [4, 5]}, 4, 5), want)
    with pytest.raises(CamexpError, match="does not fit"):
        segment_mask({"counts": [3, 4], "size": [4, 5]}, 4, 5)


def ann(i: int, image: int, category: int, bbox: list[int], segmentation: object, crowd: int = 0) -> dict:
    return {
        "id": i,
        "image_id": image,
        "category_id": category,
        "bbox": bbox,
        "segmentation": segmentation,
        "iscrowd": crowd,
    }


def write_coco(root: Path, make_jpeg) -> Path:
    """Two 40 x 30 images (ids 7, 3: listed 3 first) and one without annotations; categories 18 (dog) and 1
    (person): class 0 is person. Image 7 has a dog polygon and a crowd person RLE."""
    for i in (3, 7, 9):
        make_jpeg(root / "val2014" / f"COCO_val2014_{i:012d}.jpg", (40, 30))
    rle = {"counts": [30 * 30, 30 * 5, 30 * 5], "size": [30, 40]}  # columns 30..34 all person
    data = {
        "images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": 40, "height": 30} for i in (7, 3, 9)],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            ann(1, 7, 18, [2, 2, 10, 8], [[2, 2, 12, 2, 12, 10, 2, 10]]),
            ann(2, 7, 1, [30, 0, 5, 30], rle, crowd=1),
            ann(3, 3, 1, [0, 0, 40, 30], [[0, 0, 39, 0, 39, 29, 0, 29]]),
        ],
    }
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    return root


def test_coco_lists_every_image_in_id_order_with_boxes_and_masks(tmp_path, make_jpeg):
    root = write_coco(tmp_path / "coco", make_jpeg)
    listing = list_dataset(DatasetConfig(kind="coco", root=root))
    assert listing.class_names == ["person", "dog"] and listing.multilabel
    assert [it.image_id for it in listing.items] == [f"COCO_val2014_{i:012d}" for i in (3, 7, 9)]
    seven = listing.items[1]
    assert seven.labels == (0, 1) and seven.box_labels == (1, 0) and seven.boxes[0] == (2.0, 2.0, 12.0, 10.0)
    assert listing.items[2].boxes == () and listing.items[2].labels == ()
    spec = InputSpec((30, 40), "bilinear", 1.0, "squash", (0.5,) * 3, (0.5,) * 3)  # identity geometry
    sample = build_dataset(DatasetConfig(kind="coco", root=root), spec)[1]
    dog, person = sample["masks"]
    assert dog.shape == (30, 40) and dog[2:10, 2:12].all() and int(dog.sum()) == 80
    assert person[:, 30:35].all() and int(person.sum()) == 150


def test_coco_names_the_missing_annotation_file(tmp_path):
    (tmp_path / "val2014").mkdir()
    with pytest.raises(CamexpError, match=r"instances_val2014\.json: COCO annotation file missing") as e:
        list_dataset(DatasetConfig(kind="coco", root=tmp_path))
    assert "\n" not in str(e.value)


def test_pointing_hits_the_region_not_its_box():
    """A diagonal region in a 20 x 20 box: the box's far corner is inside the box but 13+ pixels from the region."""
    mask = torch.zeros(1, 20, 20, dtype=torch.bool)
    mask[0, torch.arange(20), torch.arange(20)] = True
    box = torch.tensor([[0.0, 0.0, 20.0, 20.0]], dtype=torch.float64)
    corner = torch.zeros(1, 20, 20)
    corner[0, 0, 19] = 1.0  # pixel centre (19.5, 0.5): 19 / sqrt(2) = 13.4 pixels from the diagonal's centres
    scale = torch.ones(1, 2, dtype=torch.float64)
    owner = torch.zeros(1, dtype=torch.long)
    assert pointing_hits(corner, box, owner, scale, 15.0)  # the box rule: inside
    assert pointing_hits(corner, box, owner, scale, 13.5, mask)
    assert not pointing_hits(corner, box, owner, scale, 13.4, mask)
    assert pointing_hits(corner, box, owner, scale * 2, 6.8, mask)  # 13.4 input pixels = 6.7 original pixels
    assert not pointing_hits(corner, box, owner, scale / 2, 15.0, mask)  # = 26.9 original pixels
