"""Methods that call the model beyond the shared pass (Score-CAM, Ablation-CAM, Smooth Grad-CAM++) and the
floors that call none (random, center): docs/definitions.md, D2, and docs/guide/methods-metrics.md, "The CAM family".

Each costs what its definition needs and nothing more. Score-CAM forwards only the masked images of channels
whose map is not constant (counted as `constant_channels_skipped`); Ablation-CAM runs only the network after
the layer (`tail`) and skips channels that are all zero, whose ablation changes nothing (w_k = 0 exactly).
Both work through flat lists of (image, channel) pairs in blocks of about BLOCK_ELEMENTS floats, so the
masked images or ablated activations of several images go through the model together while memory stays
flat: nothing K x B x H x W is ever held. Seeded methods draw their noise per image from a generator seeded by
(seed, image id), on the CPU, so a map does not depend on the batch it came in nor on the device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from camexp.errors import CamexpError
from camexp.explain.maps import normalize_exact
from camexp.explain.methods import MethodInputs, gradcampp_alpha, gradcampp_weights, method, weighted_sum
from camexp.explain.scoring import target_scores

# Floats per block of masks (Score-CAM) or ablated activations (Ablation-CAM): 64 MiB in float32.
BLOCK_ELEMENTS = 1 << 24
SCORECAM_WEIGHTINGS = ("probability", "softmax_logits")


def block_size(per_item: int, chunk: int | None) -> int:
    """Items per block: about BLOCK_ELEMENTS floats, a multiple of the forward chunk when there is one (so
    that no forward but the last runs short)."""
    n = max(1, BLOCK_ELEMENTS // per_item)
    return max(chunk, n - n % chunk) if chunk else n


def image_keys(x: torch.Tensor | None, image_ids: list[str] | None) -> list[str]:
    """What identifies each image of a batch for seeding: its id; without ids (a direct Explainer call), a
    hash of its pixels. Neither depends on the batch, so batch size and resume do not change the noise."""
    if image_ids is not None:
        return list(image_ids)
    if x is None:
        raise CamexpError("image_keys: no image ids and no images to hash; give one of them")
    return [hashlib.sha256(img.detach().cpu().contiguous().numpy().tobytes()).hexdigest() for img in x]


def seed_of(seed: int, *keys: object) -> int:
    """A 64-bit seed from the run's seed and `keys` (image key, method name, ...): the one seeding rule of
    everything camexp draws at random."""
    text = "\0".join(map(str, (seed, *keys)))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def image_seeds(ctx: MethodInputs, seed: int) -> list[int]:
    """One 64-bit seed per image from (seed, image key) (`image_keys`)."""
    return [seed_of(seed, key) for key in image_keys(ctx.x, ctx.image_ids)]


def image_generators(ctx: MethodInputs, seed: int) -> list[torch.Generator]:
    """CPU generators, one per image (`image_seeds`): the same draws on every device."""
    return [torch.Generator().manual_seed(s) for s in image_seeds(ctx, seed)]


def noisy_copies(ctx: MethodInputs, n: int, spread: float, seed: int) -> Iterator[torch.Tensor]:
    """The n noisy copies x_s = x + N(0, sigma^2) of the batch's images, sigma = spread * (max x - min x) per
    image, in pixel space: copy s of image i is the s-th draw of its generator (`image_generators`), so a copy
    depends on neither the batch nor the device. Smooth Grad-CAM++ and every `smooth:` setting draw them."""
    x = ctx.x
    assert x is not None
    sigma = (spread * (x.amax((1, 2, 3)) - x.amin((1, 2, 3)))).view(-1, 1, 1, 1)
    gens = image_generators(ctx, seed)
    for _ in range(n):
        noise = torch.stack([torch.randn(tuple(x.shape[1:]), generator=g) for g in gens]).to(x.device)
        yield x + sigma * noise


def one_of(key: str, choices: tuple[str, ...]) -> Callable[[Mapping[str, Any]], str]:
    """A method's parameter check (`method(check=...)`): parameter `key` must be one of `choices`."""

    def check(p: Mapping[str, Any]) -> str:
        return "" if p[key] in choices else f"{key} must be one of {list(choices)}, not {p[key]!r}"

    return check


@method(
    "scorecam",
    "Score-CAM: w_k = target confidence on the image masked by the normalised upsampled A_k",
    needs_grad=False,
    needs_model=True,
    params={"weighting": "probability"},
    check=one_of("weighting", SCORECAM_WEIGHTINGS),
    cost=lambda k, p: f"<= {k or 'K'} forwards of masked images (one per non-constant channel)",
    source="Wang et al., CVPR-W 2020, authors' code; weighting softmax_logits: pytorch-grad-cam's",
)
def scorecam(ctx: MethodInputs, weighting: str = "probability") -> torch.Tensor:
    """w_k = p^c(x o H_k), H_k = min-max normalised bilinear upsampling of A_k to the input size, with the run's
    occlusion and confidence (softmax; sigmoid for a multi-label head); channels whose A_k is constant get
    w_k = 0 and no forward. `softmax_logits`: w = softmax over the non-constant channels of the target's
    logit on the masked images (pytorch-grad-cam). L = ReLU(sum_k w_k A_k).

    The masked forwards run in float32 whatever the run's amp: maps must not depend on a speed setting."""
    A, x = ctx.A, ctx.x
    assert x is not None and ctx.scorer is not None
    b, k = A.shape[:2]
    size = tuple(x.shape[-2:])
    flat = A.flatten(2)
    live = flat.amax(2) > flat.amin(2)  # False for constant channels (and for NaN ones: the map shows NaN)
    pairs = live.nonzero()
    ctx.count("forwards", len(pairs))
    ctx.count("constant_channels_skipped", b * k - len(pairs))
    scorer = replace(ctx.scorer, kind=ctx.scorer.kind if weighting == "probability" else "logit", amp="off")
    scores = torch.zeros(b, k, dtype=torch.float64, device=A.device)
    for part in pairs.split(block_size(size[0] * size[1], scorer.chunk)):
        i, c = part.unbind(1)
        # in A's dtype, as the masks: maps.upsample would cast to float32 (and normalize add a tolerance)
        up = F.interpolate(A[i, c][:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        scores[i, c] = scorer.masked(x, normalize_exact(up), i, ctx.targets)
    if weighting == "softmax_logits":  # rows without a live channel are all -inf: NaN, replaced by 0
        scores = torch.where(live, torch.where(live, scores, float("-inf")).softmax(1), 0.0)
    return weighted_sum(scores.to(A.dtype), A).relu()


ABLATION_DENOMINATORS = ("score", "abs")


@method(
    "ablationcam",
    "Ablation-CAM: w_k = relative drop of the target score when channel k is set to 0",
    needs_grad=False,
    needs_model=True,
    params={"denominator": "score"},
    check=one_of("denominator", ABLATION_DENOMINATORS),
    cost=lambda k, p: f"<= {k or 'K'} passes of the network after the layer (one per channel not all zero)",
    notes={
        "negative_score_images": "the target's score y was negative on {n} image(s) explained by this "
        "invocation, where w_k = (y - y_k) / y turns every weight's sign (the paper "
        "assumes y > 0; docs/definitions.md D2): `params: {{denominator: abs}}` divides by |y|, "
        "`score: softmax` makes y positive"
    },
    source="Desai & Ramaswamy, WACV 2020; denominator abs: camexp's variant for negative scores",
)
def ablationcam(ctx: MethodInputs, denominator: str = "score") -> torch.Tensor:
    """w_k = (y^c - y^c_k) / y^c with y^c the run's score (logit, or softmax probability) from the network after
    the layer, y^c_k the same with channel k of A zeroed; w = 0 for every channel where y^c = 0 (the map is
    then constant: zeros, flagged). Channels that are all zero are not ablated: zeroing them changes nothing,
    so their w_k is 0 exactly. y^c comes from the same tail as y^c_k, so both carry the same rounding.
    L = ReLU(sum_k w_k A_k).

    The paper assumes y^c > 0. A negative logit (a head whose biases are all shifted down keeps the same top-1
    and softmax) turns the sign of every w_k, so the map keeps the channels whose removal *raises* the score;
    such images are counted (`negative_score_images`). `denominator: abs` divides by |y^c| instead (nothing
    flips, nothing is counted), which leaves every positive-score image's map unchanged and gives a shifted head
    the same maps as the unshifted one (y^c - y^c_k does not move with a shared bias)."""
    A, t, tail = ctx.A, ctx.targets, ctx.tail
    assert tail is not None  # the Explainer gives model-calling methods a tail
    b, k = A.shape[:2]
    kind = "logit" if ctx.score == "logit" else "softmax"

    def score(a: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        return target_scores(tail(a, which), t[which], kind)

    y = score(A, torch.arange(b, device=A.device))
    pairs = A.flatten(2).ne(0).any(2).nonzero()
    ctx.count("tail_passes", len(pairs))
    ctx.count("zero_channels_skipped", b * k - len(pairs))
    if denominator == "score" and (negative := int((y < 0).sum())):
        ctx.count("negative_score_images", negative)
    drop = torch.zeros(b, k, dtype=torch.float64, device=A.device)
    for part in pairs.split(block_size(A[0].numel(), None)):
        i, c = part.unbind(1)
        ablated = A[i]
        ablated[torch.arange(len(part), device=A.device), c] = 0
        drop[i, c] = y[i] - score(ablated, i)
    below = torch.where(y == 0, 1.0, y.abs() if denominator == "abs" else y)
    w = torch.where(y[:, None] != 0, drop / below[:, None], 0.0)
    return weighted_sum(w.to(A.dtype), A).relu()


def _check_smooth(p: Mapping[str, Any]) -> str:
    if p["n"] < 1:
        return f"n must be at least 1, not {p['n']}"
    if p["spread"] < 0:
        return f"spread must be >= 0, not {p['spread']}"
    return ""


@method(
    "smoothgradcam++",
    "Smooth Grad-CAM++: Grad-CAM++ weights (exact alpha) averaged over n noisy copies",
    needs_model=True,
    params={"n": 8, "spread": 0.15, "seed": 0},
    check=_check_smooth,
    cost=lambda k, p: f"{p['n']} forwards + {p['n']} head backwards",
    source="Omeiza et al., 2019 (weights averaged per copy; torchcam averages gradient powers)",
)
def smoothgradcam_pp(ctx: MethodInputs, n: int = 8, spread: float = 0.15, seed: int = 0) -> torch.Tensor:
    """x_s = x + N(0, sigma^2), sigma = spread * (max x - min x) per image, in pixel space (the model's input);
    w_k = mean over the n copies of each copy's Grad-CAM++ weights (exact alpha of its own A_s, G_s);
    L = ReLU(sum_k w_k A_k) with A of the clean image. Copy s of image i is the s-th draw of its generator."""
    x, A = ctx.x, ctx.A
    assert x is not None and ctx.grads is not None
    w = torch.zeros(A.shape[:2], dtype=A.dtype, device=A.device)
    for x_s in noisy_copies(ctx, n, spread, seed):
        a_s, g_s = ctx.grads(x_s, ctx.targets)
        w += gradcampp_weights(gradcampp_alpha(a_s, g_s), g_s)
    ctx.count("forwards", n * len(x))
    ctx.count("head_backwards", n * len(x))
    return weighted_sum(w / n, A).relu()


@method(
    "random",
    "floor: uniform noise at the layer's resolution, seeded per image",
    needs_grad=False,
    class_agnostic=True,
    floor=True,
    params={"seed": 0},
    cost=lambda k, p: "0 (no model)",
    source="floor baseline (pytorch-grad-cam's RandomCAM draws channel weights instead)",
)
def random_map(ctx: MethodInputs, seed: int = 0) -> torch.Tensor:
    h, w = ctx.A.shape[-2:]
    return torch.stack([torch.rand(h, w, generator=g) for g in image_generators(ctx, seed)]).to(ctx.A.device)


@method(
    "center",
    "floor: isotropic Gaussian centred on the image, sigma = 1/4 of the shorter side, on the layer's grid (odd sides)",
    needs_grad=False,
    class_agnostic=True,
    floor=True,
    cost=lambda k, p: "0 (no model)",
    source="floor baseline (TorchRay's center)",
)
def center(ctx: MethodInputs) -> torch.Tensor:
    """The Gaussian at the centres of the cells of the layer's h x w grid over the H x W input, each even side
    one cell more: like every map, it is then upsampled and kept (`output.maps`) at that small size, and the
    odd grid's centre cell puts the upsampled map's maximum on the image centre, where TorchRay's baseline
    points (an even grid would tie its four central cells into a plateau whose first pixel is off centre)."""
    assert ctx.x is not None
    size = ctx.x.shape[-2:]
    sigma = min(size) / 4
    device = ctx.x.device

    def axis(cells: int, pixels: int) -> torch.Tensor:
        """Squared distance of each cell centre to the image centre, in input pixels."""
        return ((torch.arange(cells, dtype=torch.float64, device=device) + 0.5) * pixels / cells - pixels / 2) ** 2

    h, w = (n + 1 - n % 2 for n in ctx.A.shape[-2:])
    g = torch.exp(-(axis(h, size[0])[:, None] + axis(w, size[1])[None, :]) / (2 * sigma**2))
    return g.to(ctx.A.dtype).expand(len(ctx.x), h, w)
