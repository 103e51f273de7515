"""Robustness metrics (docs/guide/field-metrics.md, "Robustness"): how much a map changes when the input
changes imperceptibly.

Every image x of a batch gets S = `robustness.samples` perturbed copies x' = x + u, u uniform in the L∞ ball
of radius r = `robustness.radius` in [0,1] pixel space (each pixel and channel independently in [-r, r], not
clipped), drawn by numpy's PCG64 seeded per (runtime.seed, image key) (`seed_of`), so a value
depends on neither the batch, the device nor the process that computed it, and every method sees the same
copies. All S x B copies of a batch are re-explained for the image's target in one explainer call (one
forward, one backward if a method needs gradients, every method's maps), shared by the four metrics. Maps e
are the run's (upsampled, min-max normalised), ||.|| is `robustness.norm` (l2: Euclidean over all pixels,
Quantus' default; linf) and values are float64 (the differences are taken in the maps' and images' float32,
as Quantus takes them):

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

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from camexp.accel import host_threads
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


def perturbed(
    x: torch.Tensor, keys: list[str], seed: int, samples: int, radius: float, parallel: bool | None = None
) -> torch.Tensor:
    """(S, B, 3, H, W) copies x + u of pixel images x (B,3,H,W): u = (2v - 1) * r rounded once to float32, where
    v (S,3,H,W) is `numpy.random.default_rng(seed_of(seed, key, "robustness")).random(dtype=float32)` for the
    image's key (uniform in [0, 1) on a 2^-24 grid), so the copies are the same on every device.

    numpy makes v from the top 24 bits k of each 32-bit half (low half first) of the generator's raw 64-bit
    draws, v = k / 2^24; here 2v - 1 = (k - 2^23) / 2^23 exactly, so u is the integer k - 2^23 times r / 2^23,
    rounded once. Only the raw draws (serial per image) run on the host; the rest are torch passes on x's
    device. `parallel` (default: x is not on the CPU) draws the images on the host threads at once
    (`host_threads`; numpy releases the GIL): with an accelerator the host cores are idle, but a CPU run's cores
    belong to torch's threads, which spin a while after each op, and drawing beside them was slower (4 images
    at 224², S = 5, right after a forward on 2 cores: 7.0 ms serially, 7.6-8.1 on the host threads; numpy's own
    float conversion took 9.2 there, and torch's per-image generators, before, 13-15)."""
    shape = (samples, *x.shape[1:])
    n = math.prod(shape)

    def raw(key: str) -> np.ndarray:  # an odd n uses the low half of one more draw, as numpy does
        bits = np.random.PCG64(seed_of(seed, key, KEY)).random_raw((n + 1) // 2)
        return bits.view(np.int32)[:n].reshape(shape)

    parallel = x.device.type != "cpu" if parallel is None else parallel
    noise = torch.empty((samples, len(keys), *x.shape[1:]), device=x.device)
    for i, bits in enumerate(list(host_threads().map(raw, keys)) if parallel else map(raw, keys)):
        k = torch.from_numpy(bits).to(x.device)
        k.bitwise_xor_(-(1 << 31)).bitwise_right_shift_(8)  # (k >> 8) - 2^23 of the unsigned bits, in int32
        torch.mul(k, radius / (1 << 23), out=noise[:, i])
    return noise.to(x.dtype).add_(x.contiguous()[None])


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


def change_norms(changed: torch.Tensor, base: torch.Tensor, eps: float, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, B) ||x' - x|| and ||(x - x') / x|| (element-wise, a zero of x replaced by eps: Quantus' RIS) of copies
    x' = `changed` (S, B, ...) of `base` x (1, B, ...). `changed` is overwritten: its buffer holds x' - x, then
    the relative change (x' - x is exactly -(x - x'), and norms ignore the sign), so no copy of S x B images."""
    change = changed.sub_(base)
    return norms(change, kind), norms(change.div_(torch.where(base == 0, eps, base)), kind)


def changes(batch: BatchContext) -> Changes:
    """Re-explain every copy of the batch in one explainer call and reduce the maps to `Changes` at once."""
    s = batch.settings(KEY)
    x = batch.x
    b = len(x)
    base = x.contiguous()[None]  # the copies' layout: a channels-last x would make the passes strided
    copies = perturbed(base[0], batch.image_keys(), batch.cfg.runtime.seed, s.samples, s.radius)
    ids = batch.batch.get("image_id")  # seeded methods draw the same noise on a copy as on its image
    again = batch.explainer.explain(
        copies.flatten(0, 1), batch.targets.repeat(s.samples), None if ids is None else ids * s.samples
    )
    input_change, relative_input_change = change_norms(copies, base, s.eps_min, s.norm)  # copies: explained
    map_change, relative_map_change, map_norm = {}, {}, {}
    for m in batch.methods:
        e0 = batch.maps[m][None]
        e1 = again.maps[m].view(s.samples, *e0.shape[1:])
        map_change[m], relative_map_change[m] = change_norms(e1, e0, s.eps_min, s.norm)
        map_norm[m] = norms(e0, s.norm)[0]
    return Changes(
        map_change,
        relative_map_change,
        map_norm,
        input_change,
        relative_input_change,
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
