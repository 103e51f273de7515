"""Average precision against hand values and scikit-learn's definition."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import average_precision_score

from camexp.stats.ap import average_precision, per_class_ap


def test_ap_by_hand() -> None:
    # ranking: +, -, +  -> precisions at the positives 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    ap = average_precision(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([True, False, True]))
    assert ap == pytest.approx((1 + 2 / 3) / 2)


def test_ap_perfect_no_positive_and_ties() -> None:
    assert average_precision(torch.tensor([0.9, 0.1]), torch.tensor([True, False])) == 1.0
    assert math.isnan(average_precision(torch.tensor([0.9, 0.1]), torch.tensor([False, False])))
    # all scores tied: one threshold, precision 1/2 at recall 1
    assert average_precision(torch.tensor([0.5, 0.5]), torch.tensor([True, False])) == 0.5


def test_matches_scikit_learn() -> None:
    g = torch.Generator().manual_seed(0)
    scores = (torch.rand(200, 5, generator=g) * 10).round() / 10  # many ties
    targets = (torch.rand(200, 5, generator=g) < 0.3).float()
    ours = per_class_ap(scores, targets)
    theirs = [average_precision_score(targets[:, c].numpy(), scores[:, c].numpy()) for c in range(5)]
    assert torch.allclose(ours, torch.tensor(theirs, dtype=torch.float64))
