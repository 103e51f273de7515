"""Extremal perturbation (Fong, Patrick & Vedaldi, ICCV 2019) with TorchRay's pointing-game settings
(docs/guide/torchray.md): for each target area a, a smooth mask that keeps about a of the image sharp and blurs the
rest, optimised so that the target's score on the perturbed image is as large as possible.

TorchRay optimises one image at a time (its areas together); camexp optimises every (image, area) mask of a batch as
one tensor, one forward and one backward of all the perturbed images per step, on the device (cut only by the run's
forward chunks, `accel.chunks`, whose gradients add up to the step's). The masks do not interact (the energy is a sum
over masks, SGD is element-wise), so a map depends neither on its batch nor on the chunks. Every
constant below is TorchRay 1.0's (torchray/attribution/extremal_perturbation.py and its benchmark's call).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from camexp.accel import chunks
from camexp.explain.attributions import _score_kind, imsmooth
from camexp.explain.methods import MethodInputs, method
from camexp.explain.scoring import target_scores

# TorchRay's optimiser and area constraint, fixed in its code: SGD (lr 0.01, momentum 0.9, dampening 0.9), masks
# clamped to [0, 1] after each step, the area penalty's weight 300 growing by 1.0035 per step, the smooth-max
# pooling's coldness 20.
LEARNING_RATE, MOMENTUM = 0.01, 0.9
AREA_WEIGHT, AREA_GROWTH = 300.0, 1.0035
COLDNESS = 20.0
# The pointing game's areas: VOC 2007 (the default); COCO 2014 uses [0.018, 0.025, 0.05, 0.1].
VOC_AREAS = [0.025, 0.05, 0.1, 0.2]


def blur_pyramid(x: torch.Tensor, levels: int, max_blur: float) -> torch.Tensor:
    """(B,L,C,H,W) TorchRay's `Perturbation` of each image: level l is x blurred by sigma_max (1 - l / (L - 1)), so
    level 0 is the most blurred and level L-1 the image itself."""
    return torch.stack([imsmooth(x, (1 - s) * max_blur) for s in torch.linspace(0, 1, levels)], 1)


def perturb(pyramid: torch.Tensor, masks: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) images of TorchRay's `Perturbation.apply`: mask n (N,1,H,W) in [0,1] picks, per pixel, a level of
    image which[n]'s pyramid, linearly interpolated between the two nearest levels (1: the image, 0: most blurred)."""
    b, levels, c, h, w = pyramid.shape
    flat = pyramid.reshape(b * levels, c, h, w)
    pos = masks * (levels - 1)
    k = pos.floor()
    frac = pos - k
    base = (which * levels).view(-1, 1, 1, 1)
    lo = base + k.long()
    y0 = torch.gather(flat, 0, lo.expand(-1, c, -1, -1))
    y1 = torch.gather(flat, 0, (base + (k.long() + 1).clamp(max=levels - 1)).expand(-1, c, -1, -1))
    return (1 - frac) * y0 + frac * y1


class MaskGenerator:
    """TorchRay's `MaskGenerator` (softmax pooling, clamped): a (N,1,ceil(H/step),ceil(W/step)) parameter grid
    becomes smooth masks (N,1,H',W') with a margin of `sigma` pixels on each side; `crop` cuts out the image's."""

    def __init__(self, shape: tuple[int, int], step: int, sigma: float, device: torch.device):
        self.shape, self.step, self.margin = shape, step, sigma
        self.padding = 1 + math.ceil((self.margin + sigma) / step)
        self.radius = 1 + math.ceil(sigma / step)
        self.shape_in = [math.ceil(z / step) for z in shape]
        self.shape_mid = [z + 2 * self.padding - (2 * self.radius + 1) + 1 for z in self.shape_in]
        self.shape_up = [step * z for z in self.shape_mid]
        self.shape_out = [z - step + 1 for z in self.shape_up]
        side = 2 * self.radius + 1
        inv = [
            torch.tensor(m, dtype=torch.float32) / torch.tensor(u, dtype=torch.float32)
            for m, u in zip(self.shape_mid, self.shape_up)
        ]
        uy, ux = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in self.shape_out), indexing="ij")
        k = torch.arange(side, dtype=torch.float32)
        iy = torch.floor(inv[0] * uy) + k.view(-1, 1, 1, 1) - self.padding  # (side,1,H',W'): kernel row ky's cell
        ix = torch.floor(inv[1] * ux) + k.view(1, -1, 1, 1) - self.padding  # (1,side,H',W'): kernel column kx's
        delta = torch.sqrt((uy - (self.margin + step * iy)) ** 2 + (ux - (self.margin + step * ix)) ** 2)
        z = delta / sigma
        self.weight = torch.exp(-2 * ((z - 0.5).clamp(min=0) ** 2)).reshape(1, side * side, *self.shape_out)
        self.weight = self.weight.to(device)

    def generate(self, params: torch.Tensor) -> torch.Tensor:
        """(N,1,H',W') masks with their margin, in [0,1]: each pixel the smooth max (softmax weights, coldness 20)
        over the (2 radius + 1)^2 nearest parameters, each times a Gaussian-like kernel of its distance."""
        side = 2 * self.radius + 1
        m = F.unfold(params, (side, side), padding=(self.padding,) * 2)
        m = m.reshape(len(params), -1, *self.shape_mid)
        m = F.interpolate(m, size=self.shape_up, mode="nearest")
        m = F.pad(m, (0, -self.step + 1, 0, -self.step + 1))
        m = self.weight * m
        m = (m * F.softmax(COLDNESS * m, dim=1)).sum(dim=1, keepdim=True)
        return m.clamp(min=0, max=1)

    def crop(self, masks: torch.Tensor) -> torch.Tensor:
        """The image's part (N,1,H,W) of masks with margin."""
        m = round(self.margin)
        return masks[:, :, m : m + self.shape[0], m : m + self.shape[1]]


def _check(p: Mapping[str, Any]) -> str:
    areas = p["areas"]
    if not areas or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and 0 < a < 1 for a in areas):
        return f"areas must be a non-empty list of numbers in (0, 1), not {areas!r}"
    for key, low in (("max_iter", 1), ("num_levels", 2), ("step", 1)):
        if p[key] < low:
            return f"{key} must be at least {low}, not {p[key]!r}"
    for key in ("sigma", "max_blur"):
        if not p[key] > 0:
            return f"{key} must be > 0, not {p[key]!r}"
    return "" if p["smoothing"] >= 0 else f"smoothing must be >= 0, not {p['smoothing']!r}"


def _cost(k: int | None, p: Mapping[str, Any]) -> str:
    n = p["max_iter"] * len(p["areas"])
    return (
        f"{n} forwards + {n} backwards ({p['max_iter']} steps x {len(p['areas'])} areas; "
        "all masks of a batch in one forward + backward per step)"
    )


@method(
    "extremal_perturbation",
    "extremal perturbation (TorchRay): sum over areas of the blur-preserving masks that maximise the target's score",
    needs_grad=False,
    needs_model=True,
    params={
        "areas": VOC_AREAS,
        "max_iter": 800,
        "num_levels": 8,
        "step": 7,
        "sigma": 21.0,
        "max_blur": 20.0,
        "jitter": True,
        "smoothing": 0.09,
    },
    check=_check,
    cost=_cost,
    source="Fong, Patrick & Vedaldi, ICCV 2019; TorchRay's extremal_perturbation() and pointing-game settings",
)
def extremal_perturbation(
    ctx: MethodInputs,
    areas: list[float] = VOC_AREAS,
    max_iter: int = 800,
    num_levels: int = 8,
    step: int = 7,
    sigma: float = 21.0,
    max_blur: float = 20.0,
    jitter: bool = True,
    smoothing: float = 0.09,
) -> torch.Tensor:
    """L = sum over areas a of smooth(m_a), m_a the preservation mask of area a after `max_iter` steps, as
    TorchRay's pointing game: the masks (parameters on a `step`-pixel grid, smoothed by `sigma`) select per pixel a
    level of a `num_levels` blur pyramid (sigma up to `max_blur`) of the normalised image; the energy of each mask
    is the target's score (the run's `score`) on that perturbed image (flipped left-right on even steps with
    `jitter`) minus the area penalty w_t mean((sort(m) - r_a)^2), r_a the sorted mask of area a over the mask with
    its margin. `smoothing` (TorchRay's `smooth`; `smooth:` is camexp's noise wrapper) blurs each final mask by
    sigma = smoothing * its shorter side (zero padding) before the sum. The mask returned is the one of the last
    step, before its update (TorchRay's)."""
    x, model = ctx.x, ctx.model
    assert x is not None and model is not None
    b, n_areas, size = len(x), len(areas), (x.shape[-2], x.shape[-1])
    which = torch.arange(b, device=x.device).repeat_interleave(n_areas)  # row = image-major (image, area)
    targets, kind = ctx.targets[which], _score_kind(ctx)
    with torch.no_grad():
        pyramid = blur_pyramid(model.normalize(x), num_levels, max_blur)
    gen = MaskGenerator(size, step, sigma, x.device)
    params = torch.ones(b * n_areas, 1, *gen.shape_in, device=x.device, requires_grad=True)
    full = math.prod(gen.shape_out)
    reference = torch.ones(n_areas, full, device=x.device)
    for i, a in enumerate(areas):
        reference[i, : int(full * (1 - a))] = 0
    reference = reference.repeat(b, 1)
    optimizer = torch.optim.SGD([params], lr=LEARNING_RATE, momentum=MOMENTUM, dampening=MOMENTUM)
    weight = AREA_WEIGHT
    chunk = ctx.scorer.chunk if ctx.scorer is not None else None
    final = torch.empty(b * n_areas, 1, *size, device=x.device)
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):  # float32 whatever the run's amp
        for t in range(max_iter):
            grad = torch.zeros_like(params)
            for span in chunks(len(params), chunk):
                masks = gen.generate(params[span])
                final[span] = gen.crop(masks).detach()
                images = perturb(pyramid, gen.crop(masks), which[span])
                if jitter and t % 2 == 0:
                    images = torch.flip(images, dims=(3,))
                reward = target_scores(model.net(images), targets[span], kind)
                sorted_masks = masks.reshape(len(masks), -1).sort(dim=1)[0]
                area = -((sorted_masks - reference[span]) ** 2).mean(dim=1) * weight
                grad += torch.autograd.grad(-(reward + area).sum(), params)[0]
            params.grad = grad
            optimizer.step()
            with torch.no_grad():
                params.clamp_(0, 1)
            weight *= AREA_GROWTH
    if smoothing > 0:
        final = imsmooth(final, smoothing * min(size))
    ctx.count("forwards", b * n_areas * max_iter)
    ctx.count("backwards", b * n_areas * max_iter)
    return final.view(b, n_areas, *size).sum(1)
