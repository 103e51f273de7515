"""Complexity metrics (docs/guide/trustworthiness.md, "Complexity metrics"): Sparseness (Chalasani et al., ICML 2020),
Complexity (Bhatt et al., IJCAI 2020) and Effective complexity (Nguyen & Martínez 2020), defined as Quantus 0.6.0
computes them, on the run's maps alone (no model call).

Both read each method's map at the model's input resolution (the run's upsampled, min-max normalised map, as
every other metric does; Quantus also takes the attribution at input resolution). Quantus' defaults apply:
absolute values, then division by the maximum (`normalise_by_max`; a map of zeros is left as it is). With n
the map's pixels:

- Sparseness: the Gini index of the map plus 1e-7, sorted ascending (a_1 <= ... <= a_n):
  G = sum_i (2i - n - 1) a_i / (n sum_i a_i). 0 for a constant map, (n - 1)/n for a one-hot map (up to the
  1e-7); higher: the map's mass is concentrated on fewer pixels.
- Complexity: the entropy of the map divided by its sum, p = a / sum a: H = -sum_i p_i log(p_i + 1e-12).
  log n for a constant map, 0 for a one-hot map; lower: fewer pixels carry the explanation.
- Effective complexity: the number of pixels whose normalised value exceeds ε (`settings.effective_complexity.eps`,
  Quantus' 1e-5). 1 for a one-hot map, n for a constant map; lower: fewer pixels matter at all.

A constant map reaches camexp as zeros (camexp/explain/maps.py); its entropy is that of the constant map it
stands for, log n, where Quantus given the zeros divides 0 by 0 (NaN).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field

from camexp.metrics.base import MAPS_COST, PerImage, Row, batch_metric
from camexp.metrics.batch import BatchContext

SPARSENESS = Row("sparseness", "Sparseness (Gini index)", False, criterion="complexity")
COMPLEXITY = Row("complexity", "Complexity (entropy)", True, criterion="complexity")
EFFECTIVE = Row("effective_complexity", "Effective complexity (pixels above ε)", True, criterion="complexity")
GINI_EPS, LOG_EPS = 1e-7, 1e-12  # Quantus' constants (Sparseness, Complexity)


def quantus_normalise(maps: torch.Tensor) -> torch.Tensor:
    """(B,H,W) -> (B,H*W) float64: absolute values over each map's maximum (zeros left as they are)."""
    a = maps.flatten(1).double().abs()
    top = a.amax(1, keepdim=True)
    return a / torch.where(top > 0, top, torch.ones_like(top))


def gini(maps: torch.Tensor) -> torch.Tensor:
    """(B,H,W) -> (B,) Quantus' Sparseness: the Gini index of each normalised map plus 1e-7."""
    a = torch.sort(quantus_normalise(maps) + GINI_EPS, dim=1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=a.dtype, device=a.device)
    return ((2 * i - n - 1) * a).sum(1) / (n * a.sum(1))


def entropy(maps: torch.Tensor) -> torch.Tensor:
    """(B,H,W) -> (B,) Quantus' Complexity: the entropy of each normalised map over its sum; log n for a map
    of zeros (the constant map it stands for)."""
    a = quantus_normalise(maps)
    total = a.sum(1, keepdim=True)
    p = a / torch.where(total > 0, total, torch.ones_like(total))
    h = -(p * torch.log(p + LOG_EPS)).sum(1)
    return torch.where(total[:, 0] > 0, h, torch.full_like(h, math.log(a.shape[1])))


def _per_map(batch: BatchContext, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> list[PerImage]:
    """`fn` of every method's maps, one value per image."""
    pos = torch.arange(len(batch.x), device=batch.x.device)
    return [PerImage(m, name, pos, batch.targets, fn(batch.maps[m])) for m in batch.methods]


@batch_metric(
    "sparseness",
    "Gini index of the map (Chalasani et al. 2020, as Quantus): higher is more concentrated",
    rows=(SPARSENESS,),
    model_calls=False,
    cost=MAPS_COST,
)
def sparseness(batch: BatchContext) -> list[PerImage]:
    return _per_map(batch, "sparseness", gini)


@batch_metric(
    "complexity",
    "entropy of the map over its sum (Bhatt et al. 2020, as Quantus): lower is simpler",
    rows=(COMPLEXITY,),
    model_calls=False,
    cost=MAPS_COST,
)
def complexity(batch: BatchContext) -> list[PerImage]:
    return _per_map(batch, "complexity", entropy)


class EffectiveSettings(BaseModel):
    """`settings.effective_complexity:` the threshold on the normalised map (Nguyen & Martínez 2020)."""

    model_config = ConfigDict(extra="forbid")

    eps: float = Field(1e-5, ge=0.0, lt=1.0, description="ε: a pixel counts when |a| / max |a| > ε (Quantus' 1e-5)")


def effective(maps: torch.Tensor, eps: float) -> torch.Tensor:
    """(B,H,W) -> (B,) float64 the number of pixels whose normalised absolute value exceeds `eps`; a constant
    map (stored as zeros) counts every pixel, as the constant map it stands for."""
    a = quantus_normalise(maps)
    count = (a > eps).sum(1).double()
    return torch.where(a.amax(1) > 0, count, torch.full_like(count, a.shape[1]))


@batch_metric(
    "effective_complexity",
    "pixels of the map above ε of its maximum (Nguyen & Martínez 2020, as Quantus): lower is simpler",
    rows=(EFFECTIVE,),
    settings=EffectiveSettings,
    model_calls=False,
    cost=MAPS_COST,
)
def effective_complexity(batch: BatchContext) -> list[PerImage]:
    eps = batch.settings("effective_complexity").eps
    return _per_map(batch, "effective_complexity", lambda maps: effective(maps, eps))
