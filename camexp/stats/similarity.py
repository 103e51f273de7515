"""How alike two maps of one image are, by the ranks of their pixels (pure functions): the one Spearman rank
correlation and top-q IoU that the sanity checks (camexp/analyses/similarity.py) and the consistency across
backbones (camexp/consistency) both use.

A map is ranked once (`rank`) and compared with any number of others:
- Spearman: the Pearson correlation of the pixels' ranks, tied values sharing their average rank; the same
  float as scipy's `spearmanr` (its `rankdata` ranks and its `np.corrcoef`); undefined (NaN) when a map is
  constant or holds a NaN.
- Top-q region of a map with P pixels: with k = ceil(q·P), pixel p is in it when at most k pixels have a
  value ≥ its value. So the region never splits a group of tied values: it holds at most k pixels, the
  plateau at the threshold (a ReLU'd map's zeros) stays out, and a constant map's region is empty.
- Top-q IoU: |R_a ∩ R_b| / |R_a ∪ R_b| of the two regions; undefined (NaN) when both are empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ranked:
    """A map's pixels ready for comparison (flattened): average ranks (1..P, ties sharing their mean rank;
    None for a constant map or one with a NaN) and, per pixel, how many pixels have a value ≥ its value (for
    top-q regions)."""

    ranks: np.ndarray | None
    at_least: np.ndarray

    def region(self, q: float) -> np.ndarray:
        """The top-q region (module docstring) as a bool mask of the P pixels."""
        return self.at_least <= math.ceil(q * self.at_least.size)


def rank(values: np.ndarray) -> Ranked:
    """The ranks of a map's values (any shape, flattened; float64)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    uniq, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    below = np.cumsum(counts) - counts  # pixels strictly below each distinct value
    ranks = None if len(uniq) == 1 or np.isnan(uniq[-1]) else (below + (counts + 1) / 2.0)[inverse]
    return Ranked(ranks, x.size - below[inverse])


def spearman(a: Ranked, b: Ranked) -> float:
    """Spearman's rank correlation of two ranked maps of equal size; NaN when either is constant (or has a NaN)."""
    if a.ranks is None or b.ranks is None:
        return float("nan")
    return float(np.corrcoef(a.ranks, b.ranks)[1, 0])  # scipy's spearmanr: corrcoef of its ranks, entry [1, 0]


def top_iou(a: Ranked, b: Ranked, q: float) -> float:
    """IoU of the two maps' top-q regions; NaN when both are empty."""
    ra, rb = a.region(q), b.region(q)
    union = int(np.count_nonzero(ra | rb))
    return float(np.count_nonzero(ra & rb) / union) if union else float("nan")
