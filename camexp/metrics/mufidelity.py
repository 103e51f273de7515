"""MuFidelity (xplique 2.0's `MuFidelity`: Bhatt et al.'s faithfulness correlation on a grid of superpixels with
Spearman's correlation; docs/guide/field-metrics.md, "MuFidelity").

The input is cut into a `grid` x `grid` lattice of cells (pixel (y, x) lies in cell (⌊(y + ½)·g/H⌋, ⌊(x + ½)·g/W⌋),
nearest-neighbour resizing with half-pixel centres, as `tf.image.resize(method="nearest")`). Per image, R =
`samples` perturbations: each cell draws u ~ U[0, 1) and is removed when u ≤ `subset_percent` (xplique keeps a
cell when u > subset_percent), from a generator seeded by (runtime.seed, image key, r), the same for every
method of the image. The removed pixels take the baseline (`perturbation`'s substrates; `zero`, xplique's
default 0 in the model's input space) and the image is scored (`perturbation.score`). Per method, the value is
Spearman's correlation over the R perturbations between the score's drop f(x) − f(x') and the map's sum over
the removed pixels (ties share their mean rank). Higher is better. NaN when either is constant, where xplique
counts 0. Cost per image: R forwards, whatever the number of methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import rankdata

from camexp.explain.model_methods import seed_of
from camexp.metrics.base import PerImage, Row, batch_metric, settings_of
from camexp.metrics.batch import BatchContext
from camexp.metrics.correlation import masked_drops, pearson
from camexp.metrics.perturbation import Substrate, substrate

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig

KEY = "mufidelity"
MUFIDELITY = Row(KEY, "MuFidelity (Spearman)", False, criterion="faithfulness")


class MuFidelitySettings(BaseModel):
    """`settings.mufidelity:` xplique 2.0's defaults."""

    model_config = ConfigDict(extra="forbid")

    grid: int = Field(9, ge=2, description="g: the input is cut into g x g cells, the features removed together")
    subset_percent: float = Field(0.2, gt=0.0, lt=1.0, description="each cell's chance of being removed")
    samples: int = Field(200, ge=2, description="R: perturbations per image (one forward each)")
    baseline: Substrate = Field(
        "zero", description="what replaces a removed cell: zero (0 in the normalised tensor), blur, or [r, g, b]"
    )


def cell_of(size: tuple[int, int], grid: int) -> torch.Tensor:
    """(H*W,) int64: each pixel's cell y * grid + x under nearest resizing with half-pixel centres."""
    h, w = size
    ys = ((torch.arange(h, dtype=torch.float64) + 0.5) * grid / h).floor().long().clamp(max=grid - 1)
    xs = ((torch.arange(w, dtype=torch.float64) + 0.5) * grid / w).floor().long().clamp(max=grid - 1)
    return (ys[:, None] * grid + xs[None, :]).flatten()


def removed_cells(seed: int, key: str, samples: int, grid: int, percent: float) -> torch.Tensor:
    """(samples, grid²) bool: cell removed in perturbation r when its U[0,1) draw is ≤ percent."""
    gens = (torch.Generator().manual_seed(seed_of(seed, KEY, key, r)) for r in range(samples))
    return torch.stack([torch.rand(grid * grid, generator=g, dtype=torch.float64) <= percent for g in gens])


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's correlation along the last axis (ties share their mean rank); NaN where either is constant."""
    ranked = [torch.from_numpy(rankdata(t.detach().cpu().numpy(), axis=-1)) for t in (a, b)]
    return pearson(*ranked).to(a.device)


def _note(cfg: ExperimentConfig) -> str:
    s = settings_of(cfg, KEY)
    return f"; {s.samples} perturbations of a {s.grid}x{s.grid} grid, cells removed with chance {s.subset_percent:g}"


@batch_metric(
    KEY,
    "Spearman correlation of a map's sum over randomly removed grid cells with the score's drop (xplique's "
    "MuFidelity, after Bhatt et al. 2020): higher is better",
    rows=(MUFIDELITY,),
    settings=MuFidelitySettings,
    note=_note,
    cost="settings.mufidelity.samples forwards (200), shared by every method",
)
def mufidelity(batch: BatchContext) -> list[PerImage]:
    s = batch.settings(KEY)
    b, _, h, w = batch.x.shape
    device = batch.x.device
    cells = cell_of((h, w), s.grid).to(device)
    seed = batch.cfg.runtime.seed
    removed = torch.stack([removed_cells(seed, k, s.samples, s.grid, s.subset_percent) for k in batch.image_keys()]).to(
        device
    )  # (B, R, g²)
    drops = masked_drops(
        batch,
        s.samples,
        lambda jobs: removed[jobs // s.samples, jobs % s.samples][:, cells],
        substrate(batch, s.baseline),
    )
    maps = torch.stack([batch.maps[m].flatten(1) for m in batch.methods]).double()  # (M, B, P)
    per_cell = torch.zeros(*maps.shape[:2], s.grid * s.grid, dtype=torch.float64, device=device)
    per_cell.index_add_(2, cells, maps)  # (M, B, g²): the map's sum over each cell
    sums = torch.einsum("mbc,brc->mbr", per_cell, removed.double())
    values = spearman(sums, drops.double().expand_as(sums))
    pos = torch.arange(b, device=device)
    return [PerImage(m, KEY, pos, batch.targets, values[j]) for j, m in enumerate(batch.methods)]
