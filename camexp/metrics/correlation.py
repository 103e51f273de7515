"""Faithfulness correlation (Bhatt et al., IJCAI 2020; docs/guide/field-metrics.md, "Faithfulness correlation,
IROF, infidelity"): do the pixels a map calls important move the score when they are removed?

Per image, R = `subsets` random subsets S_r of `subset_size` pixels are drawn (uniformly, without replacement
within a subset, seeded by (runtime.seed, image key, r): the same subsets for every method of the image, so
that methods are compared on the same perturbations and the R forwards are shared). Each subset's pixels
(every channel) are replaced by the baseline (`perturbation`'s substrates: `zero`, the data set's mean
colour in the normalised tensor; `blur`; an [r, g, b] colour) and the image is scored (`perturbation.score`).
Per method, the value is Pearson's correlation over the R subsets between the map's sum over S_r and the
score's drop f(x) − f(x with S_r replaced); NaN where either is constant. Higher is better.

Quantus 0.6 (`FaithfulnessCorrelation`) draws its subsets among the C·H·W values of the input tensor (each
channel of a pixel apart) where the paper's features are pixels; tests/metrics/test_correlation.py gives
Quantus pixel features and the same subsets and finds our values, and docs/guide/field-metrics.md records the
difference of its default. Cost per image: R forwards, whatever the number of methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, ConfigDict, Field

from camexp.explain.model_methods import seed_of
from camexp.metrics.base import PerImage, Row, batch_metric, settings_of
from camexp.metrics.batch import BatchContext
from camexp.metrics.perturbation import Substrate, substrate

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig

KEY = "faithfulness_correlation"
CORRELATION = Row(KEY, "Faithfulness correlation (Pearson)", False, criterion="faithfulness")


class CorrelationSettings(BaseModel):
    """`settings.faithfulness_correlation:` the random subsets (Bhatt et al. 2020; Quantus' defaults)."""

    model_config = ConfigDict(extra="forbid")

    subsets: int = Field(100, ge=2, description="R: random subsets per image (one forward each)")
    subset_size: int = Field(224, ge=1, description="|S|: pixels per subset, each replaced in every channel")
    baseline: Substrate = Field(
        "zero", description="what replaces a subset's pixels: zero (the mean colour), blur, or [r, g, b] in [0,1]"
    )


def _check(s: CorrelationSettings, size: tuple[int, int]) -> str | None:
    pixels = size[0] * size[1]
    if s.subset_size < pixels:
        return None
    return (
        f"settings.{KEY}.subset_size: {s.subset_size} pixels leave none of the model's {size[0]}x{size[1]} "
        f"input ({pixels} pixels) unchanged; use fewer than {pixels}"
    )


def random_subsets(seed: int, key: str, count: int, size: int, pixels: int) -> torch.Tensor:
    """(count, size) int64 pixel indices: subset r holds `size` pixels drawn uniformly without replacement from
    a generator seeded by (seed, image key, r), so a subset depends neither on the batch nor on the others."""
    gens = (torch.Generator().manual_seed(seed_of(seed, KEY, key, r)) for r in range(count))
    return torch.stack([torch.randperm(pixels, generator=g)[:size] for g in gens])


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson's correlation along the last axis of float64 tensors of one shape; NaN where either is constant."""
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    den = (a.square().sum(-1) * b.square().sum(-1)).sqrt()
    return torch.where(den > 0, (a * b).sum(-1) / den, torch.full_like(den, float("nan")))


def correlations(maps: torch.Tensor, subsets: torch.Tensor, drops: torch.Tensor) -> torch.Tensor:
    """(M, B, P) maps, (B, R, S) pixel indices of the subsets, (B, R) score drops -> (M, B) Pearson over r of
    the map's sum over subset r and its drop."""
    m, (b, r, size) = len(maps), subsets.shape
    idx = subsets.reshape(1, b, r * size).expand(m, -1, -1)
    sums = maps.double().gather(2, idx).view(m, b, r, size).sum(-1)
    return pearson(sums, drops.double().expand_as(sums))


def masked_drops(
    batch: BatchContext, count: int, removed: Callable[[torch.Tensor], torch.Tensor], base: torch.Tensor
) -> torch.Tensor:
    """(B, count) drop of the score f(x) − f(x with the pixels `removed(jobs)` ((n, H*W) bool for job numbers
    i * count + r: perturbation r of image i) replaced by `base` (B,3,H,W)); every image's perturbations are
    scored in chunks of one stream."""
    b = len(batch.x)
    xn = batch.normalized()
    h, w = xn.shape[-2:]

    def images(jobs: torch.Tensor) -> torch.Tensor:
        i = jobs // count
        return torch.where(removed(jobs).view(-1, 1, h, w), base[i], xn[i])

    targets = batch.targets.repeat_interleave(count)
    return batch.full_scores()[:, None] - batch.scores(b * count, images, targets).view(b, count)


def subset_drops(batch: BatchContext, subsets: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """(B, R) drops of `masked_drops` where perturbation r of image i removes subset r (B, R, S pixel indices)."""
    r = subsets.shape[1]
    pixels = batch.x.shape[-2] * batch.x.shape[-1]

    def removed(jobs: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(len(jobs), pixels, dtype=torch.bool, device=jobs.device)
        return mask.scatter_(1, subsets[jobs // r, jobs % r], True)

    return masked_drops(batch, r, removed, base)


def _note(cfg: ExperimentConfig) -> str:
    s = settings_of(cfg, KEY)
    return f"; {s.subsets} random subsets of {s.subset_size} pixels per image, baseline {s.baseline}"


@batch_metric(
    KEY,
    "Pearson correlation of a map's sum over random pixel subsets with the score's drop when they are "
    "replaced (Bhatt et al. 2020): higher is better",
    rows=(CORRELATION,),
    settings=CorrelationSettings,
    check=_check,
    note=_note,
    cost="settings.faithfulness_correlation.subsets forwards (100), shared by every method",
)
def faithfulness_correlation(batch: BatchContext) -> list[PerImage]:
    s = batch.settings(KEY)
    b, _, h, w = batch.x.shape
    seed = batch.cfg.runtime.seed
    subsets = torch.stack([random_subsets(seed, k, s.subsets, s.subset_size, h * w) for k in batch.image_keys()])
    subsets = subsets.to(batch.x.device)
    drops = subset_drops(batch, subsets, substrate(batch, s.baseline))
    values = correlations(torch.stack([batch.maps[m].flatten(1) for m in batch.methods]), subsets, drops)
    pos = torch.arange(b, device=batch.x.device)
    return [PerImage(m, KEY, pos, batch.targets, values[j]) for j, m in enumerate(batch.methods)]
