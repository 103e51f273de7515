"""Robustness metrics (docs/guide/field-metrics.md, "Robustness"): how much a map changes when the input
changes imperceptibly.

Every image x of a batch gets S = `robustness.samples` perturbed copies x' = x + u, u uniform in the L∞ ball
of radius r = `robustness.radius` in [0,1] pixel space (each pixel and channel independently in [-r, r], not
clipped), drawn from a generator seeded per (runtime.seed, image key) (`seed_of`), so a value depends on
neither the batch nor the process that computed it, and every method sees the same copies. All S x B copies
of a batch are re-explained for the image's target in one explainer call (one forward, one backward if a
method needs gradients, every method's maps), shared by the four metrics. Maps e are the run's (upsampled,
min-max normalised), ||.|| is `robustness.norm` (l2: Euclidean over all pixels, Quantus' default; linf) and
values are float64 (the differences are taken in the maps' and images' float32, as Quantus takes them):

- `max_sensitivity` (Yeh et al., NeurIPS 2019): max over the copies of ||e(x') - e(x)|| / ||e(x)||.
- `avg_sensitivity` (Yeh et al. 2019): the mean over the copies of the same ratio.
- `local_lipschitz` (Alvarez-Melis & Jaakkola 2018): max over the copies of ||e(x) - e(x')|| / ||x - x'||.
- `relative_input_stability` (Agarwal et al. 2022): max over the copies that keep the model's top-1
  prediction of ||(e(x) - e(x')) / e(x)|| / max(||(x - x') / x||, eps_min), the divisions element-wise with a
  zero of e(x) or x replaced by eps_min = `robustness.eps_min` (as Quantus); NaN when every copy changes the
  prediction.

A map that is constant (zeros in camexp) has no relative change: its sensitivities and RIS are NaN, counted
as skipped. Lower is better for all four.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from camexp.explain.model_methods import seed_of
from camexp.metrics.base import PerImage, Row, batch_metric, settings_of
from camexp.metrics.batch import BatchContext

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig

KEY = "robustness"
MAX_SENS = Row("max_sensitivity", "Max-sensitivity", True, criterion="robustness")
AVG_SENS = Row("avg_sensitivity", "Avg-sensitivity", True, criterion="robustness")
LIPSCHITZ = Row("local_lipschitz", "Local Lipschitz estimate", True, criterion="robustness")
RIS = Row("relative_input_stability", "Relative input stability", True, criterion="robustness")


class RobustnessSettings(BaseModel):
    """`settings.robustness:` the perturbed copies every robustness metric re-explains."""

    model_config = ConfigDict(extra="forbid")

    samples: int = Field(
        10, ge=1, le=1000, description="S: perturbed copies per image, re-explained in one call per batch"
    )
    radius: float = Field(
        0.02, gt=0.0, le=1.0, description="r: each pixel moves by u ~ U[-r, r] in [0,1] pixel space (the L∞ ball)"
    )
    norm: Literal["l2", "linf"] = Field(
        "l2", description="the norm of map and input differences: l2 (Euclidean over all values) or linf (max |.|)"
    )
    eps_min: float = Field(1e-6, gt=0.0, description="RIS: stands for a zero divisor (Agarwal et al.'s ε_min)")


def robustness_settings(cfg: ExperimentConfig) -> RobustnessSettings:
    return settings_of(cfg, KEY)


def norms(v: torch.Tensor, kind: str) -> torch.Tensor:
    """(S, B, ...) -> (S, B) float64 norm of each copy's values (`robustness.norm`), reduced in the values'
    own dtype (float32: torch's cascade summation keeps ~1e-7 relative; no float64 copy of S x B images)."""
    return torch.linalg.vector_norm(v.flatten(2), ord=torch.inf if kind == "linf" else 2, dim=-1).double()


def perturbed(x: torch.Tensor, keys: list[str], seed: int, samples: int, radius: float) -> torch.Tensor:
    """(S, B, 3, H, W) copies x + u of pixel images x (B,3,H,W), u ~ U[-r, r] drawn on the CPU from one
    generator per image seeded by (seed, image key), so the copies are the same on every device."""
    noise = torch.empty((samples, len(keys), *x.shape[1:]))
    for i, key in enumerate(keys):
        g = torch.Generator().manual_seed(seed_of(seed, key, KEY))
        noise[:, i] = torch.rand((samples, *x.shape[1:]), generator=g)
    noise.mul_(2).sub_(1).mul_(radius)  # (u * 2 - 1) * r, same roundings: 3 passes over all copies, not 3 per image
    return x[None] + noise.to(x.device, x.dtype)


@dataclass
class Changes:
    """One batch's per-copy terms, (S, B) float64 unless said: ||e(x') - e(x)|| and the relative map change
    per method, ||e(x)|| (B,) per method, ||x' - x||, the relative input change, and whether the copy keeps
    the model's top-1 prediction (bool)."""

    map_change: dict[str, torch.Tensor]
    relative_map_change: dict[str, torch.Tensor]
    map_norm: dict[str, torch.Tensor]
    input_change: torch.Tensor
    relative_input_change: torch.Tensor
    same_prediction: torch.Tensor


def relative(base: torch.Tensor, other: torch.Tensor, eps: float) -> torch.Tensor:
    """(base - other) / base element-wise, a zero of `base` replaced by eps (Quantus' RIS)."""
    return (base - other).div_(torch.where(base == 0, eps, base))


def changes(batch: BatchContext) -> Changes:
    """Re-explain every copy of the batch in one explainer call and reduce the maps to `Changes` at once."""
    s = batch.settings(KEY)
    x = batch.x
    b = len(x)
    copies = perturbed(x, batch.image_keys(), batch.cfg.runtime.seed, s.samples, s.radius)
    ids = batch.batch.get("image_id")  # seeded methods draw the same noise on a copy as on its image
    again = batch.explainer.explain(
        copies.flatten(0, 1), batch.targets.repeat(s.samples), None if ids is None else ids * s.samples
    )
    base = x[None]
    map_change, relative_map_change, map_norm = {}, {}, {}
    for m in batch.methods:
        e0 = batch.maps[m][None]
        e1 = again.maps[m].view(s.samples, *e0.shape[1:])
        map_change[m] = norms(e1 - e0, s.norm)
        relative_map_change[m] = norms(relative(e0, e1, s.eps_min), s.norm)
        map_norm[m] = norms(e0, s.norm)[0]
    return Changes(
        map_change,
        relative_map_change,
        map_norm,
        norms(copies - base, s.norm),
        norms(relative(base, copies, s.eps_min), s.norm),
        again.logits.argmax(1).view(s.samples, b) == batch.logits.argmax(1)[None],
    )


def _values(batch: BatchContext, key: str, value: dict[str, torch.Tensor]) -> list[PerImage]:
    pos = torch.arange(len(batch.x), device=batch.x.device)
    return [PerImage(m, key, pos, batch.targets, value[m]) for m in batch.methods]


def _shared(batch: BatchContext) -> Changes:
    return batch.cached(KEY, lambda: changes(batch))


def _sensitivity(c: Changes, m: str) -> torch.Tensor:
    """(S, B) ||e(x') - e(x)|| / ||e(x)||, NaN for a map of zeros (a constant map)."""
    norm = c.map_norm[m]
    return c.map_change[m] / torch.where(norm > 0, norm, torch.nan)[None]


def _note(cfg: ExperimentConfig) -> str:
    s = robustness_settings(cfg)
    return f"; {s.samples} copies per image, uniform in the L∞ ball of radius {s.radius:g} (pixel space), {s.norm} norm"


COST = (
    "S = robustness.samples re-explanations of every method (one call per batch: S forwards, S backwards "
    "with a gradient method, plus each method's own model calls on S copies), shared by the four robustness metrics"
)
META: dict[str, Any] = dict(settings=RobustnessSettings, settings_key=KEY, note=_note, cost=COST)


@batch_metric("max_sensitivity", "max-sensitivity (Yeh et al. 2019): max relative map change", rows=(MAX_SENS,), **META)
def max_sensitivity(batch: BatchContext) -> list[PerImage]:
    c = _shared(batch)
    return _values(batch, MAX_SENS.key, {m: _sensitivity(c, m).amax(0) for m in batch.methods})


@batch_metric(
    "avg_sensitivity", "avg-sensitivity (Yeh et al. 2019): mean relative map change", rows=(AVG_SENS,), **META
)
def avg_sensitivity(batch: BatchContext) -> list[PerImage]:
    c = _shared(batch)
    return _values(batch, AVG_SENS.key, {m: _sensitivity(c, m).mean(0) for m in batch.methods})


@batch_metric(
    "local_lipschitz",
    "local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018): max map change over input change",
    rows=(LIPSCHITZ,),
    **META,
)
def local_lipschitz(batch: BatchContext) -> list[PerImage]:
    c = _shared(batch)
    return _values(batch, LIPSCHITZ.key, {m: (c.map_change[m] / c.input_change).amax(0) for m in batch.methods})


def _ris(c: Changes, m: str, eps: float) -> torch.Tensor:
    """(B,) RIS: the max over the copies that keep the prediction; NaN where none does or the map is constant."""
    ratio = c.relative_map_change[m] / c.relative_input_change.clamp(min=eps)
    kept = torch.where(c.same_prediction, ratio, -torch.inf).amax(0)
    return torch.where(c.same_prediction.any(0) & (c.map_norm[m] > 0), kept, torch.nan)


@batch_metric(
    "relative_input_stability",
    "relative input stability (Agarwal et al. 2022): max relative map change over relative input change",
    rows=(RIS,),
    **META,
)
def relative_input_stability(batch: BatchContext) -> list[PerImage]:
    c = _shared(batch)
    eps = batch.settings(KEY).eps_min
    return _values(batch, RIS.key, {m: _ris(c, m, eps) for m in batch.methods})
