"""Average precision for multi-label classification, as pure tensor functions.

Our own ~15 lines rather than a dependency: scikit-learn (the reference definition) is a large runtime
dependency for one function, and torchmetrics is not otherwise needed. The tests check these values
against scikit-learn's `average_precision_score`. It is the non-interpolated AP; the VOC devkit's 11-point
(2007) and interpolated-envelope (2010+) variants differ from it slightly.
"""

from __future__ import annotations

import torch


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """AP = Σ_k (R_k − R_{k−1}) P_k over the distinct score thresholds, high to low (tied scores enter
    together); NaN when there is no positive."""
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = scores.argsort(descending=True, stable=True)
    s, tp = scores[order], positive[order].double().cumsum(0)
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]  # the last row of each distinct score
    ranks = torch.arange(1, len(s) + 1, dtype=torch.float64)[last]
    tp = tp[last]
    recall_gain = torch.diff(tp / n_pos, prepend=torch.zeros(1, dtype=torch.float64))
    return float((recall_gain * tp / ranks).sum())


def per_class_ap(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(C,) AP of every column of `scores` (N, C) against multi-hot `targets` (N, C); NaN: no positive."""
    return torch.tensor(
        [average_precision(scores[:, c], targets[:, c] > 0) for c in range(scores.shape[1])], dtype=torch.float64
    )
