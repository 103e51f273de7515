"""Infidelity (Yeh et al., NeurIPS 2019; docs/guide/field-metrics.md, "Infidelity"): how far the map's linear
prediction of a perturbation's effect misses the model's.

INFD = E_I[(Iᵀ Φ − (f(x) − f(x − I)))²] with I ~ N(0, σ²) on every value of the normalised tensor (the
paper's noisy baseline; σ = `settings.infidelity.noise`), Φ the method's map broadcast to the three channels
(so Iᵀ Φ = Σ_hw Φ_hw Σ_c I_chw) and f the score (`perturbation.score`). The expectation is the mean over
`samples` draws seeded per (runtime.seed, image key, draw): the same perturbations for every method of an
image, so the forwards are shared. A map's scale is arbitrary (camexp's maps are normalised to [0,1]), so by
default (`scaled: true`) Φ is first multiplied by the β that minimises the mean, β = E[Iᵀ Φ · Δf] / E[(Iᵀ Φ)²]
(Yeh et al.'s optimal scaling; Captum's `normalize=True`); `scaled: false` takes the map as it is. Lower is
better. Cost per image: `samples` forwards, whatever the number of methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, ConfigDict, Field

from camexp.explain.model_methods import seed_of
from camexp.metrics.base import PerImage, Row, batch_metric, settings_of
from camexp.metrics.batch import BatchContext

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig

INFIDELITY = Row("infidelity", "Infidelity", True, criterion="faithfulness")


class InfidelitySettings(BaseModel):
    """`settings.infidelity:` the Gaussian perturbations (Yeh et al. 2019) and the optimal scaling."""

    model_config = ConfigDict(extra="forbid")

    samples: int = Field(50, ge=1, description="perturbations per image (one forward each)")
    noise: float = Field(0.1, gt=0.0, description="σ of the Gaussian perturbation I, in the normalised tensor")
    scaled: bool = Field(True, description="scale each map by the β that minimises its infidelity (Yeh et al.)")


def perturbation(seed: int, key: str, draw: int, shape: tuple[int, ...], noise: float) -> torch.Tensor:
    """I of draw `draw` of image `key`: (C,H,W) float32 N(0, noise²), from a generator seeded per draw."""
    g = torch.Generator().manual_seed(seed_of(seed, "infidelity", key, draw))
    return noise * torch.randn(shape, generator=g)


def infidelity_values(dots: torch.Tensor, drops: torch.Tensor, scaled: bool) -> torch.Tensor:
    """(..., S) Iᵀ Φ and (..., S) f(x) − f(x − I) -> (...) the mean squared miss, with Φ scaled by the optimal
    β = mean(dots · drops) / mean(dots²) when `scaled` (β = 0 where every dot is 0)."""
    if scaled:
        den = dots.square().mean(-1, keepdim=True)
        beta = torch.where(den > 0, (dots * drops).mean(-1, keepdim=True) / den.clamp(min=1e-300), 0.0 * den)
        dots = beta * dots
    return (dots - drops).square().mean(-1)


def _note(cfg: ExperimentConfig) -> str:
    s = settings_of(cfg, "infidelity")
    scaling = "optimally scaled maps" if s.scaled else "maps as they are"
    return f"; {s.samples} Gaussian perturbations (σ {s.noise:g}) per image, {scaling}"


@batch_metric(
    "infidelity",
    "mean squared miss of the map's linear prediction of Gaussian perturbations' effect (Yeh et al. 2019): "
    "lower is better",
    rows=(INFIDELITY,),
    settings=InfidelitySettings,
    note=_note,
    cost="settings.infidelity.samples forwards (50), shared by every method",
)
def infidelity(batch: BatchContext) -> list[PerImage]:
    s = batch.settings("infidelity")
    b, c, h, w = batch.x.shape
    keys, seed, device = batch.image_keys(), batch.cfg.runtime.seed, batch.x.device
    xn = batch.normalized()

    def noise(i: int, d: int) -> torch.Tensor:
        return perturbation(seed, keys[i], d, (c, h, w), s.noise).to(device)

    def images(jobs: torch.Tensor) -> torch.Tensor:
        return torch.stack([xn[j // s.samples] - noise(j // s.samples, j % s.samples) for j in jobs.tolist()])

    scores = batch.scores(b * s.samples, images, batch.targets.repeat_interleave(s.samples)).view(b, s.samples)
    drops = batch.full_scores()[:, None] - scores
    maps = torch.stack([batch.maps[m] for m in batch.methods]).double()  # (M, B, H, W)

    def summed(i: int) -> torch.Tensor:
        """(S, H, W) image i's draws summed over the channels."""
        return torch.stack([noise(i, d).double().sum(0) for d in range(s.samples)])

    # (M, B, S): Iᵀ Φ = Σ_hw Φ_hw Σ_c I_chw, one image's draws in memory at a time
    dots = torch.stack([torch.einsum("mhw,shw->ms", maps[:, i], summed(i)) for i in range(b)], 1)
    values = infidelity_values(dots, drops.expand_as(dots), s.scaled)
    pos = torch.arange(b, device=device)
    return [PerImage(m, "infidelity", pos, batch.targets, values[j]) for j, m in enumerate(batch.methods)]
