"""Perturbation metrics (docs/guide/field-metrics.md, "The field's other metrics"): insertion / deletion AUC (RISE) and
the kept-fraction drop.

Insertion and deletion. The pixels of each normalised, upsampled map are ranked once (a stable descending
sort, `pixel_ranks`); with S = `perturbation.steps`, n = ceil(H*W / S) pixels change per step and after step s
the pixels of rank < min(s*n, H*W) have changed. Deletion starts from the image and replaces changed pixels
by the deletion substrate; insertion starts from the insertion substrate and puts the image's pixels back.
Everything happens in model space (the mean/std normalised tensor), as RISE does. The step images of both
curves, every method, image and step of a batch are jobs of one chunked loop: a chunk's images are
`where(rank < count, end, start)` for its jobs (an O(H*W) select per image, which a copy of the previous
step's image would cost too), scored in one forward; nothing is re-sorted. p_s is the target's score
after step s; AUC = (sum_s p_s - p_0/2 - p_S/2) / S. The two ends of a curve are shared: the full image's
score is the run's own (from the explanation's logits), the all-substrate image is scored once per image
for every method (once for both curves when they share the substrate). Cost per image: 2 + 2 * M * (S - 1)
forwards for M methods, both curves.

Kept fraction (`avg_drop@keep`, `increase@keep`, Score-CAM §4.1): keep the round(q * H * W) top-ranked
pixels (ties by pixel index, as above), mute the rest by the run's occlusion rule, score the image with the
run's `confidence` and apply docs/definitions.md D4's average drop and increase to it. `binary` keeps the
kept pixels at full strength, `weighted` multiplies them by the map (E = L * 1[kept] * I).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from camexp.metrics.base import PerImage, Row, batch_metric, settings_of
from camexp.metrics.batch import BatchContext

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig

BLUR_SIZE, BLUR_SIGMA = 11, 5.0
INSERTION = Row("insertion", "Insertion AUC", False, criterion="faithfulness")
DELETION = Row("deletion", "Deletion AUC", True, criterion="faithfulness")
KEEP_DROP = Row("avg_drop@keep", "Average drop % @keep", True, scale=100.0, criterion="faithfulness")
KEEP_INCREASE = Row("increase@keep", "% increase in confidence @keep", False, scale=100.0, criterion="faithfulness")


def _colour(v: Any) -> Any:
    if isinstance(v, tuple) and not all(0.0 <= c <= 1.0 for c in v):
        raise ValueError("a constant colour is [r, g, b] in [0,1] pixel space")
    return v


# what replaces pixels: zero (0 in the normalised tensor), blur, or an (r, g, b) colour in [0,1] (validated)
Substrate = Annotated[Literal["zero", "blur"] | tuple[float, float, float], AfterValidator(_colour)]


class PerturbationSettings(BaseModel):
    """`perturbation:` insertion/deletion (RISE): steps, what replaces pixels, and the score (also ROAD's)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(
        100,
        ge=1,
        description="S: ceil(H*W/S) pixels change per step; S + 1 points per curve; at most the input's pixel count",
    )
    deletion_substrate: Substrate = Field(
        "zero",
        description="zero: 0 in the normalised tensor (the mean colour, RISE); blur: RISE's Gaussian blur; "
        "[r, g, b]: a constant colour in [0,1] pixel space",
    )
    insertion_substrate: Substrate = Field(
        "blur", description="what insertion starts from and puts the pixels back into; the same choices as deletion's"
    )
    score: Literal["confidence", "softmax", "sigmoid", "logit"] = Field(
        "confidence",
        description="the target's score after each step: the run's `confidence` (softmax unless set), "
        "or softmax / sigmoid / logit explicitly; also ROAD's score",
    )
    curves: bool = Field(
        False,
        exclude=True,
        description="also write every curve per image to per_image_curves.csv "
        "(a figure of the mean curves follows); no effect on any "
        "value, so not fingerprinted",
    )


class KeepSettings(BaseModel):
    """`keep:` avg_drop@keep / increase@keep (Score-CAM §4.1): keep the top `fraction` of the map's pixels."""

    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(0.5, gt=0.0, le=1.0, description="the top fraction q of the map's pixels kept")
    mode: Literal["binary", "weighted"] = Field(
        "binary", description="binary: kept pixels at full strength (E = 1[kept] * I); weighted: E = L * 1[kept] * I"
    )


def perturbation_settings(cfg: ExperimentConfig) -> PerturbationSettings:
    return settings_of(cfg, "perturbation")


def writes_curves(cfg: ExperimentConfig) -> bool:
    """Whether the run writes every per-batch metric's per-image curves (`perturbation.curves`)."""
    return perturbation_settings(cfg).curves


def _check_steps(s: PerturbationSettings, size: tuple[int, int]) -> str | None:
    """More steps than pixels only repeats the last image (and costs 2 forwards per image, method and step)."""
    pixels = size[0] * size[1]
    if s.steps <= pixels:
        return None
    return (
        f"perturbation.steps: {s.steps} steps exceed the {pixels} pixels of the model's {size[0]}x{size[1]} "
        f"input (each step changes at least one pixel); use at most {pixels}"
    )


def step_counts(pixels: int, steps: int) -> torch.Tensor:
    """(S+1,) pixels changed after each step s = 0..S: min(s * ceil(pixels / S), pixels)."""
    n = math.ceil(pixels / steps)
    return torch.clamp(torch.arange(steps + 1, dtype=torch.long) * n, max=pixels)


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under (..., S+1) curves sampled at changed fractions 0, 1/S, ..., 1."""
    steps = curve.shape[-1] - 1
    return (curve.sum(-1) - curve[..., 0] / 2 - curve[..., -1] / 2) / steps


def rise_kernel() -> torch.Tensor:
    """RISE's blur kernel: scipy.ndimage.gaussian_filter (sigma 5, default mode 'reflect') of an 11x11 array
    that is 1 at its centre (it sums to 1)."""
    from scipy.ndimage import gaussian_filter

    delta = np.zeros((BLUR_SIZE, BLUR_SIZE))
    delta[BLUR_SIZE // 2, BLUR_SIZE // 2] = 1.0
    return torch.from_numpy(gaussian_filter(delta, BLUR_SIGMA))


def rise_blur(images: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) convolved per channel with `rise_kernel`, zero padding 5 (RISE's `blur`)."""
    c = images.shape[1]
    kernel = rise_kernel().to(images)[None, None].expand(c, 1, BLUR_SIZE, BLUR_SIZE)
    return F.conv2d(images, kernel, padding=BLUR_SIZE // 2, groups=c)


def substrate(batch: BatchContext, kind: str | tuple[float, float, float]) -> torch.Tensor:
    """(B,3,H,W) model-space substrate: `zero` (0 after normalisation: the mean colour), `blur` (RISE's blur
    of the normalised image) or an (r, g, b) colour in [0,1] pixel space."""
    xn = batch.normalized()
    if kind == "zero":
        return torch.zeros_like(xn)
    if kind == "blur":
        return batch.cached("blur", lambda: rise_blur(xn))
    colour = torch.tensor(kind, dtype=batch.x.dtype, device=batch.x.device).view(1, 3, 1, 1).expand_as(batch.x)
    return batch.scorer.model.normalize(colour).float()


def _setting(name: str, batch: BatchContext) -> str | tuple[float, float, float]:
    p = batch.settings("perturbation")
    return p.deletion_substrate if name == "deletion" else p.insertion_substrate


def rise_curves(batch: BatchContext, name: str) -> torch.Tensor:
    """(M, B, S+1) scores of curve `name` (insertion or deletion). Both curves of the run are scored
    together, so that chunks are full: every job of the batch (substrate images, then curve x method x
    image x interior step) is one stream."""
    names = tuple(k for k in ("deletion", "insertion") if k == name or k in batch.cfg.metrics)
    return batch.cached(("rise", names), lambda: _rise(batch, names))[name]


def _rise(batch: BatchContext, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Deletion goes from the image to its substrate, insertion from its substrate to the image: step s
    shows the path's end at the pixels of rank < count_s and its start elsewhere. The image's own score is
    the run's; each distinct substrate image is scored once per image, for every method and both curves."""
    b, _, h, w = batch.x.shape
    device, methods = batch.x.device, batch.methods
    xn = batch.normalized()
    kinds = list(dict.fromkeys(_setting(n, batch) for n in names))  # distinct substrates
    subs = torch.cat([substrate(batch, k) for k in kinds])  # (len(kinds) * B, 3, H, W)
    of = {n: kinds.index(_setting(n, batch)) for n in names}
    starts = torch.stack([xn if n == "deletion" else subs[of[n] * b : (of[n] + 1) * b] for n in names])
    ends = torch.stack([subs[of[n] * b : (of[n] + 1) * b] if n == "deletion" else xn for n in names])
    inner = step_counts(h * w, batch.settings("perturbation").steps).to(device)[1:-1]
    ranks = torch.stack([batch.ranks(m) for m in methods])  # (M, B, H*W)
    n_sub, per_image = len(subs), len(inner)
    per_curve = len(methods) * b * per_image

    def images(jobs: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(jobs), *xn.shape[1:], dtype=xn.dtype, device=device)
        is_sub = jobs < n_sub
        out[is_sub] = subs[jobs[is_sub]]
        j = jobs[~is_sub] - n_sub
        c, rest = j // per_curve, j % per_curve
        m, rest = rest // (b * per_image), rest % (b * per_image)
        i, s = rest // per_image, rest % per_image
        changed = (ranks[m, i] < inner[s, None]).view(-1, 1, h, w)
        out[~is_sub] = torch.where(changed, ends[c, i], starts[c, i])
        return out

    image_of_job = torch.cat(
        [
            torch.arange(b, device=device).repeat(len(kinds)),
            torch.arange(b, device=device).repeat_interleave(per_image).repeat(len(methods) * len(names)),
        ]
    )
    scores = batch.scores(n_sub + per_curve * len(names), images, batch.targets[image_of_job])
    sub_scores = scores[:n_sub].view(len(kinds), 1, b, 1).expand(-1, len(methods), -1, -1)
    inner_scores = scores[n_sub:].view(len(names), len(methods), b, per_image)
    full = batch.full_scores().view(1, b, 1).expand(len(methods), -1, -1)
    out = {}
    for c, n in enumerate(names):
        first, last = (full, sub_scores[of[n]]) if n == "deletion" else (sub_scores[of[n]], full)
        out[n] = torch.cat([first, inner_scores[c], last], dim=2)
    return out


def _curve_values(batch: BatchContext, name: str) -> list[PerImage]:
    scores = rise_curves(batch, name)
    pos = torch.arange(len(batch.x), device=batch.x.device)
    return [PerImage(m, name, pos, batch.targets, auc(scores[j]), scores[j]) for j, m in enumerate(batch.methods)]


def _steps_note(cfg: ExperimentConfig) -> str:
    p = perturbation_settings(cfg)
    score = cfg.confidence if p.score == "confidence" else p.score
    return (
        f"; S = {p.steps} steps, deletion substrate {p.deletion_substrate}, insertion substrate "
        f"{p.insertion_substrate}, score {score}"
    )


def _keep_note(cfg: ExperimentConfig) -> str:
    keep = settings_of(cfg, "keep")
    return f"; top {100 * keep.fraction:g}% of the pixels kept, {keep.mode}"


CURVE_COST = (
    "M x (S - 1) forwards (M methods, S = perturbation.steps, 100) and one forward of its substrate image, "
    "shared by every method (and by both curves when they share a substrate); the full image's score is the run's own"
)
CURVE_META: dict[str, Any] = dict(
    note=_steps_note, settings=PerturbationSettings, settings_key="perturbation", check=_check_steps, cost=CURVE_COST
)
KEEP_META: dict[str, Any] = dict(
    note=_keep_note,
    settings=KeepSettings,
    settings_key="keep",
    cost="M forwards (each method's kept image), shared by avg_drop@keep and increase@keep",
)


@batch_metric(
    "deletion", "deletion AUC (RISE): remove the top-ranked pixels step by step", rows=(DELETION,), **CURVE_META
)
def deletion(batch: BatchContext) -> list[PerImage]:
    return _curve_values(batch, "deletion")


@batch_metric(
    "insertion",
    "insertion AUC (RISE): put the top-ranked pixels back into the substrate step by step",
    rows=(INSERTION,),
    **CURVE_META,
)
def insertion(batch: BatchContext) -> list[PerImage]:
    return _curve_values(batch, "insertion")


def kept_confidence(batch: BatchContext) -> torch.Tensor:
    """(M, B) the run's confidence of the target on each image with only its top-q pixels kept."""

    def compute() -> torch.Tensor:
        b, _, h, w = batch.x.shape
        keep = batch.settings("keep")
        n = math.floor(keep.fraction * h * w + 0.5)
        masks = torch.cat(
            [
                (batch.ranks(m) < n).view(b, h, w).to(batch.x.dtype)
                * (batch.explanation.maps[m] if keep.mode == "weighted" else 1.0)
                for m in batch.methods
            ]
        )
        which = torch.arange(b, device=batch.x.device).repeat(len(batch.methods))
        return batch.scorer.masked(batch.x, masks, which, batch.targets).view(len(batch.methods), b)

    return batch.cached("kept", compute)


def _kept(
    batch: BatchContext, name: str, value: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> list[PerImage]:
    y, o = batch.full_scores(batch.cfg.confidence), kept_confidence(batch)
    pos = torch.arange(len(batch.x), device=batch.x.device)
    return [PerImage(m, name, pos, batch.targets, value(y, o[j])) for j, m in enumerate(batch.methods)]


@batch_metric(
    "avg_drop@keep",
    "average drop % with only the top `keep.fraction` of the map's pixels kept (Score-CAM §4.1)",
    rows=(KEEP_DROP,),
    **KEEP_META,
)
def avg_drop_keep(batch: BatchContext) -> list[PerImage]:
    return _kept(batch, "avg_drop@keep", lambda y, o: (y - o).clamp(min=0) / y)


@batch_metric(
    "increase@keep",
    "% increase in confidence with only the top `keep.fraction` of the map's pixels kept",
    rows=(KEEP_INCREASE,),
    **KEEP_META,
)
def increase_keep(batch: BatchContext) -> list[PerImage]:
    return _kept(batch, "increase@keep", lambda y, o: (o > y).double())
