"""mLoc (docs/definitions.md, D5) against masks and boxes worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from camexp.analyses.localization import MLOC_CSV, mloc_result
from camexp.metrics.localization import box_union_mask, class_box_masks, localization

DELTAS = torch.tensor([0.0, 0.25, 0.5])


def test_box_mask_covers_pixels_whose_centre_is_inside() -> None:
    mask = box_union_mask(torch.tensor([[1.0, 0.0, 3.0, 2.0]]), torch.tensor([0]), 1, (4, 5))[0]
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[0:2, 1:3] = True
    assert torch.equal(mask, expected)


def test_box_touching_the_border_covers_the_edge_pixels() -> None:
    mask = box_union_mask(torch.tensor([[2.0, 1.0, 5.0, 4.0]]), torch.tensor([0]), 1, (4, 5))[0]
    assert mask[1:, 2:].all() and mask.sum() == 3 * 3
    whole = box_union_mask(torch.tensor([[0.0, 0.0, 5.0, 4.0]]), torch.tensor([0]), 1, (4, 5))[0]
    assert whole.all()


def test_two_boxes_of_one_class_are_united_and_boxes_go_to_their_image() -> None:
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [3.0, 3.0, 4.0, 4.0]])
    masks = box_union_mask(boxes, torch.tensor([0, 0, 1]), 2, (4, 4))
    assert masks[0].sum() == 4 + 4 - 1  # overlap pixel (1,1) counted once
    assert masks[0, 1, 1] and masks[0, 2, 2] and not masks[0, 3, 3]
    assert masks[1].sum() == 1 and masks[1, 3, 3]


def test_loc_by_hand() -> None:
    box = torch.zeros(1, 4, 4, dtype=torch.bool)
    box[0, :2, :2] = True  # |box| = 4
    m = torch.zeros(1, 4, 4)
    m[0, 0, 0], m[0, 0, 1], m[0, 3, 3], m[0, 2, 2] = 1.0, 0.4, 0.3, 0.1
    loc = localization(m, box, DELTAS)[0]
    # δ=0: on = 4 pixels, 2 inside, 2 outside -> 2 / (4 + 2); δ=0.25: 2 inside, 1 outside -> 2/5;
    # δ=0.5: 1 inside, 0 outside -> 1/4
    assert torch.allclose(loc, torch.tensor([2 / 6, 2 / 5, 1 / 4], dtype=torch.float64))


def test_zero_map_scores_zero_at_delta_zero() -> None:
    box = torch.ones(1, 3, 3, dtype=torch.bool)
    assert torch.equal(localization(torch.zeros(1, 3, 3), box, DELTAS), torch.zeros(1, 3, dtype=torch.float64))


def test_perfect_map_scores_one() -> None:
    box = torch.zeros(1, 3, 3, dtype=torch.bool)
    box[0, 1:, 1:] = True
    assert torch.equal(localization(box.float(), box, DELTAS), torch.ones(1, 3, dtype=torch.float64))


def test_class_box_masks_picks_the_class_and_leaves_classless_images_empty() -> None:
    boxes = [torch.tensor([[0.0, 0.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0]]), torch.tensor([[0.0, 0.0, 4.0, 4.0]]), None]
    labels = [torch.tensor([3, 7]), torch.tensor([3]), None]
    masks = class_box_masks(boxes, labels, torch.tensor([7, 5, 3]), (4, 4))
    assert masks[0].sum() == 4 and masks[0, 3, 3] and not masks[0, 0, 0]
    assert not masks[1].any()  # a class with no box
    assert not masks[2].any()  # an image without boxes


def test_mloc_summary_means_pairs_drops_stale_rows_and_counts_skipped(tmp_path: Path) -> None:
    rows = [  # index, image_id, class, rank, method, delta, loc
        (0, "a", 3, 0, "gradcam", 0.0, 0.9),  # superseded by the resumed run's row below
        (0, "a", 3, 0, "gradcam", 0.0, 0.2),
        (0, "a", 5, 1, "gradcam", 0.0, 0.4),
        (1, "b", 3, 0, "gradcam", 0.0, 0.6),
        (7, "h", 3, 0, "gradcam", 0.0, 0.0),  # image without final records (killed mid-batch): ignored
    ]
    pd.DataFrame(rows, columns=["index", "image_id", "class", "rank", "method", "delta", "loc"]).to_csv(
        tmp_path / MLOC_CSV, index=False
    )
    records = pd.DataFrame({"index": [0, 1, 2]})
    res = mloc_result(tmp_path, records, ["gradcam"])
    assert res.rows == {"mLoc δ=0": {"gradcam": pytest.approx((0.2 + 0.4 + 0.6) / 3)}}
    assert "3 (image, class) pairs from 2 images" in res.notes[0] and "1 of 3 images skipped" in res.notes[0]
