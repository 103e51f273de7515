"""The reference pixel attributions beside the CAMs: gradient, gradient x input, integrated and expected gradients,
occlusion, guided backprop and the deconvnet (docs/guide/methods-metrics.md, "Reference attributions").

Each computes a (B,3,H,W) attribution of the target's score (the run's `score`: logit, or softmax probability) with
respect to the pixel-space [0,1] image, then reduces it over the colour channels by its `reduce` parameter (the
reduction is the method's documented default, recorded with its parameters in run.json). The maps are at input
resolution, so the explainer's upsampling leaves them as they are.

Steps, samples and windows never go through the model one image at a time: every (image, step) pair of the batch is
one row of a flat list, cut into passes of near-equal sizes (`Scorer.pass_chunk`: on the CPU as many as 1/4 of
memory holds, else `runtime.forward_chunk`), and the gradients are summed back per image.
Gradients and occlusion scores run in the images' dtype (float32 in a run) whatever the run's amp. Seeded
draws (uniform baselines, references) come from per-image generators seeded by (seed, image id), so a map depends on
neither its batch nor the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from camexp.accel import chunks
from camexp.explain.guided import deconv_relus, guided_relus, no_relu_modules
from camexp.explain.methods import MethodInputs, method
from camexp.explain.model_methods import block_size, image_generators, image_keys, one_of, seed_of
from camexp.explain.scoring import Scorer, target_scores
from camexp.models import LoadedModel

# How a (B,3,H,W) attribution becomes a (B,H,W) map. NO_REDUCTION is internal: `smooth:` takes the moments of the
# attribution itself (as SmoothGrad and Captum's NoiseTunnel do) and reduces after.
REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sum": lambda a: a.sum(1),
    "abs_sum": lambda a: a.abs().sum(1),
    "max_abs": lambda a: a.abs().amax(1),
    "mean": lambda a: a.mean(1),
}
NO_REDUCTION = "none"
BASELINES = ("black", "blur", "uniform")
REFERENCES = ("uniform", "batch")
Rule = Callable[[nn.Module], AbstractContextManager[Any]]


def reduce_channels(attr: torch.Tensor, how: str) -> torch.Tensor:
    """The method's map of a (B,3,H,W) attribution by reduction `how` (REDUCTIONS); NO_REDUCTION keeps it."""
    return attr if how == NO_REDUCTION else REDUCTIONS[how](attr)


def _checks(*checks: Callable[[Mapping[str, Any]], str]) -> Callable[[Mapping[str, Any]], str]:
    """One parameter check of several: the first problem found."""
    return lambda p: next((why for c in checks if (why := c(p))), "")


def _at_least(key: str, low: int) -> Callable[[Mapping[str, Any]], str]:
    return lambda p: "" if p[key] >= low else f"{key} must be at least {low}, not {p[key]!r}"


_reduce_ok = one_of("reduce", tuple(REDUCTIONS))


def _score_kind(ctx: MethodInputs) -> str:
    """The confidence whose gradient or drop a method attributes: the logit, or with `score: softmax` the
    probability (as the CAMs' G)."""
    return "logit" if ctx.score == "logit" else "softmax"


def gradient_sum(
    ctx: MethodInputs,
    which: torch.Tensor,
    points: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
    rule: Rule | None = None,
) -> torch.Tensor:
    """sum over the rows p with which[p] = i of f_p * d score / d image at point p, per image i: (B,3,H,W).

    Rows are pairs (image, step or sample) of a flat list of len(which), cut into the scorer's passes
    (`Scorer.pass_chunk`); `points(rows)` gives the images of a chunk's rows and their factors f (None: 1); `rule`
    (guided_relus, deconv_relus) rewrites the backward pass meanwhile. Counts one forward and backward per row."""
    assert ctx.x is not None and ctx.model is not None
    model, kind = ctx.model, _score_kind(ctx)
    chunk = ctx.scorer.pass_chunk(ctx.x, len(which)) if ctx.scorer is not None else None
    total = torch.zeros_like(ctx.x)
    with rule(model) if rule is not None else nullcontext(), torch.enable_grad():
        for span in chunks(len(which), chunk):
            rows = torch.arange(span.start, span.stop, device=which.device)
            images, factor = points(rows)
            leaf = Scorer._layout(images).detach().requires_grad_(True)
            scores = target_scores(model(leaf), ctx.targets[which[rows]], kind)
            (g,) = torch.autograd.grad(scores.sum(), leaf)
            total.index_add_(0, which[rows], g if factor is None else factor * g)
    ctx.count("forwards", len(which))
    ctx.count("backwards", len(which))
    return total


def _repeat_rows(b: int, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, k) of the b * n rows of a flat list, image-major: row p is image p // n, step p % n."""
    rows = torch.arange(b * n, device=device)
    return rows // n, rows % n


def input_gradient(ctx: MethodInputs, rule: Rule | None = None) -> torch.Tensor:
    """d score / d x of the batch's images (B,3,H,W), its backward rewritten by `rule` if any."""
    x = ctx.x
    assert x is not None
    return gradient_sum(ctx, torch.arange(len(x), device=x.device), lambda r: (x[r], None), rule)


def _one_pass(k: int | None, p: Mapping[str, Any]) -> str:
    return "1 forward + 1 backward of the whole network"


PIXEL = {"needs_grad": False, "needs_model": True, "pixel": True, "check": _reduce_ok, "cost": _one_pass}


def _smoothing_ok(p: Mapping[str, Any]) -> str:
    return "" if p["smoothing"] >= 0 else f"smoothing must be >= 0, not {p['smoothing']!r}"


# The input-gradient maps TorchRay's pointing game smooths (`smooth=0.02`): reduced, then `smooth_saliency`.
SALIENCY = {**PIXEL, "params": {"reduce": "max_abs", "smoothing": 0.0}, "check": _checks(_reduce_ok, _smoothing_ok)}


@method(
    "gradient",
    "gradient (saliency): max over channels of |d score / d pixel|",
    source="Simonyan et al., ICLR-W 2014; reduction and smoothing as TorchRay's gradient_to_saliency / saliency",
    **SALIENCY,
)
def gradient(ctx: MethodInputs, reduce: str = "max_abs", smoothing: float = 0.0) -> torch.Tensor:
    """L = max_c |dS/dx_c| with S the target's score and x the pixel-space image (Simonyan et al.'s saliency map;
    TorchRay's reduction), smoothed by a Gaussian of sigma `smoothing` x the larger side (TorchRay's pointing
    game: 0.02)."""
    return smooth_saliency(reduce_channels(input_gradient(ctx), reduce), smoothing)


@method(
    "gradient_x_input",
    "gradient x input: sum over channels of x * d score / d x (pixel space)",
    params={"reduce": "sum"},
    source="Shrikumar et al., 2016; Ancona et al., ICLR 2018 (sum over channels)",
    **PIXEL,
)
def gradient_x_input(ctx: MethodInputs, reduce: str = "sum") -> torch.Tensor:
    """L = sum_c x_c * dS/dx_c, x the [0,1] pixel-space image: integrated gradients from a black image in one
    step. Signed; the sum is what Captum's users apply to InputXGradient."""
    assert ctx.x is not None
    return reduce_channels(ctx.x * input_gradient(ctx), reduce)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B,3,H,W) blurred by a separable Gaussian of `sigma` pixels (radius ceil(3 sigma), reflected edges, the
    radius capped below the image's side)."""
    radius = min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    out = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(
        F.pad(out, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c
    )


def imsmooth(x: torch.Tensor, sigma: float | torch.Tensor, padding: str = "constant") -> torch.Tensor:
    """TorchRay's `imsmooth`: (N,C,H,W) convolved with a separable float32 Gaussian of half-width ceil(4 sigma),
    f_i ~ exp(-(i / (sqrt(2) sigma + eps))^2) normalised to sum 1, vertical pass first; the edges padded with
    zeros (`constant`) or by repeating the border (`replicate`, as TorchRay smooths saliency maps)."""
    sqrt2, eps = torch.tensor(math.sqrt(2), dtype=torch.float32), torch.tensor(1.1920929e-07, dtype=torch.float32)
    width = math.ceil(4 * sigma)
    filt = torch.arange(-width, width + 1, dtype=torch.float32, device=x.device) / (sqrt2 * sigma + eps).to(x.device)
    filt = torch.exp(-filt * filt)
    filt /= filt.sum()
    c, pad = x.shape[1], width
    if padding != "constant":
        x, pad = F.pad(x, (width,) * 4, mode=padding), 0
    x = F.conv2d(x, filt.view(1, 1, -1, 1).expand(c, -1, -1, -1), padding=(pad, 0), groups=c)
    return F.conv2d(x, filt.view(1, 1, 1, -1).expand(c, -1, -1, -1), padding=(0, pad), groups=c)


def smooth_saliency(maps: torch.Tensor, smoothing: float) -> torch.Tensor:
    """(B,H,W) maps smoothed as TorchRay smooths a saliency map (`smooth`): sigma = smoothing x the larger side,
    replicated edges; 0 leaves them as they are. An attribution not yet reduced (B,3,H,W: the copies of the
    `smooth:` wrapper, which reduces their moments) is left as it is: its map is smoothed once formed."""
    if smoothing <= 0 or maps.dim() == 4:
        return maps
    return imsmooth(maps[:, None].float(), smoothing * max(maps.shape[-2:]), "replicate")[:, 0].to(maps.dtype)


def ig_baseline(ctx: MethodInputs, baseline: str, blur_sigma: float, seed: int) -> torch.Tensor:
    """The integrated-gradients baseline x' of each image: black (0), its Gaussian blur, or uniform noise in
    [0,1] drawn from its own generator."""
    x = ctx.x
    assert x is not None
    if baseline == "black":
        return torch.zeros_like(x)
    if baseline == "blur":
        return gaussian_blur(x, blur_sigma) if blur_sigma > 0 else x.clone()
    return torch.stack([torch.rand(tuple(x.shape[1:]), generator=g) for g in image_generators(ctx, seed)]).to(x)


def _ig_cost(k: int | None, p: Mapping[str, Any]) -> str:
    return f"{p['steps']} forwards + {p['steps']} backwards of the whole network (one per step)"


@method(
    "integrated_gradients",
    "integrated gradients: (x - x') * mean of the gradients along the straight path from a baseline x'",
    params={"baseline": "black", "steps": 50, "blur_sigma": 10.0, "seed": 0, "reduce": "sum"},
    check=_checks(
        one_of("baseline", BASELINES),
        _at_least("steps", 1),
        _reduce_ok,
        lambda p: "" if p["blur_sigma"] >= 0 else f"blur_sigma must be >= 0, not {p['blur_sigma']!r}",
        _at_least("seed", 0),
    ),
    cost=_ig_cost,
    needs_grad=False,
    needs_model=True,
    pixel=True,
    source="Sundararajan et al., ICML 2017 (right Riemann sum); blur/uniform baselines: Sturmfels et al., Distill 2020",
)
def integrated_gradients(
    ctx: MethodInputs,
    baseline: str = "black",
    steps: int = 50,
    blur_sigma: float = 10.0,
    seed: int = 0,
    reduce: str = "sum",
) -> torch.Tensor:
    """L = sum_c (x - x')_c * (1/m) sum_{k=1..m} dS/dx_c at x' + (k/m)(x - x'): the right Riemann sum of m = steps
    (the paper's eq.; Captum's default is Gauss-Legendre, its `riemann_right` is this). Baselines x': black (0),
    a Gaussian blur of sigma `blur_sigma` pixels, uniform noise seeded per image. Signed, summed over channels."""
    x = ctx.x
    assert x is not None
    base = ig_baseline(ctx, baseline, blur_sigma, seed)
    which, k = _repeat_rows(len(x), steps, x.device)
    alpha = ((k + 1).double() / steps).to(x.dtype).view(-1, 1, 1, 1)
    diff = x - base
    total = gradient_sum(ctx, which, lambda r: (base[which[r]] + alpha[r] * diff[which[r]], None))
    return reduce_channels(diff * total / steps, reduce)


def _eg_cost(k: int | None, p: Mapping[str, Any]) -> str:
    return f"{p['samples']} forwards + {p['samples']} backwards of the whole network (one per sample)"


@method(
    "expected_gradients",
    "expected gradients: mean of (x - r) * gradient at r + a(x - r), r a random reference, a ~ U(0,1)",
    params={"samples": 32, "reference": "uniform", "seed": 0, "reduce": "sum"},
    check=_checks(_at_least("samples", 1), one_of("reference", REFERENCES), _reduce_ok, _at_least("seed", 0)),
    cost=_eg_cost,
    needs_grad=False,
    needs_model=True,
    pixel=True,
    source="Erion et al., Nature Machine Intelligence 2021 (Captum: GradientShap without noise)",
)
def expected_gradients(
    ctx: MethodInputs, samples: int = 32, reference: str = "uniform", seed: int = 0, reduce: str = "sum"
) -> torch.Tensor:
    """L = sum_c (1/n) sum_s (x - r_s)_c * dS/dx_c at r_s + a_s (x - r_s), n = samples, a_s ~ U(0,1) and the
    reference r_s: `uniform`, a uniform-noise image in [0,1]; `batch`, one of the batch's images (itself included:
    the expectation is over the data), which makes the map depend on its batch-mates. Sample s of an image draws
    a_s, then r_s, from a CPU generator seeded by (seed, image key, s), so samples are drawn chunk by chunk."""
    x = ctx.x
    assert x is not None
    b, shape = len(x), tuple(x.shape[1:])
    keys = image_keys(x, ctx.image_ids)
    which, _ = _repeat_rows(b, samples, x.device)

    def points(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alphas, refs = [], []
        for p in rows.tolist():
            g = torch.Generator().manual_seed(seed_of(seed, keys[p // samples], p % samples))
            alphas.append(torch.rand((), generator=g))
            refs.append(
                x[int(torch.randint(b, (), generator=g))] if reference == "batch" else torch.rand(shape, generator=g)
            )
        alpha, ref = torch.stack(alphas).to(x).view(-1, 1, 1, 1), torch.stack([r.to(x) for r in refs])
        diff = x[which[rows]] - ref
        return ref + alpha * diff, diff

    total = gradient_sum(ctx, which, points)
    return reduce_channels(total / samples, reduce)


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Where the windows along one side start: 0, stride, ... up to the first that reaches the edge (Captum's
    ceil((size - window) / stride) + 1 positions; the last is cut at the edge), so every pixel is covered."""
    return [k * stride for k in range(math.ceil(max(size - window, 0) / stride) + 1)]


def _occlusion_cost(k: int | None, p: Mapping[str, Any]) -> str:
    n = len(window_starts(224, p["window"], p["stride"])) ** 2
    return f"1 + one forward per {p['window']}px window at stride {p['stride']} ({n + 1} at 224x224); no backward"


def _occlusion_check(p: Mapping[str, Any]) -> str:
    if p["window"] < 1 or p["stride"] < 1:
        return f"window and stride must be at least 1, not window={p['window']!r}, stride={p['stride']!r}"
    return "" if p["stride"] <= p["window"] else f"stride ({p['stride']}) must not exceed window ({p['window']})"


@method(
    "occlusion",
    "occlusion: mean drop of the target score over the sliding windows that black out each pixel",
    params={"window": 32, "stride": 16, "reduce": "mean"},
    check=_checks(_occlusion_check, _reduce_ok),
    cost=_occlusion_cost,
    needs_grad=False,
    needs_model=True,
    pixel=True,
    source="Zeiler & Fergus, ECCV 2014; windows and averaging as Captum's Occlusion",
)
def occlusion(ctx: MethodInputs, window: int = 32, stride: int = 16, reduce: str = "mean") -> torch.Tensor:
    """L_ij = mean over the window x window squares (starts every `stride` pixels, the last cut at the edge) that
    contain pixel (i, j) of S(x) - S(x with the square occluded), occluded by the run's `occlusion` rule (pixel: black;
    normalized: the mean colour) for all channels at once; so the 3 channels are equal and `mean` keeps them."""
    x, t = ctx.x, ctx.targets
    assert x is not None and ctx.scorer is not None
    b, (h, w) = len(x), x.shape[-2:]
    boxes = [(i, j) for i in window_starts(h, window, stride) for j in window_starts(w, window, stride)]
    chunk = ctx.scorer.pass_chunk(x, b * len(boxes))
    scorer = replace(ctx.scorer, kind=_score_kind(ctx), amp="off", chunk=chunk)
    holes = torch.zeros(len(boxes), h, w, dtype=x.dtype, device=x.device)
    for n, (i, j) in enumerate(boxes):
        holes[n, i : i + window, j : j + window] = 1
    full = scorer.images(x, t)
    drop = torch.zeros(b, h, w, dtype=torch.float64, device=x.device)
    pairs = torch.cartesian_prod(torch.arange(b, device=x.device), torch.arange(len(boxes), device=x.device))
    for part in pairs.split(block_size(h * w, scorer.chunk)):
        i, n = part.unbind(1)
        diff = full[i] - scorer.masked(x, 1 - holes[n], i, t)
        drop.index_add_(0, i, diff.view(-1, 1, 1) * holes[n])
    ctx.count("forwards", b * (len(boxes) + 1))
    attr = (drop / holes.sum(0)).to(x.dtype)
    return reduce_channels(attr[:, None].expand(-1, 3, -1, -1), reduce)


def _relu_rule_method(name: str, rule: Rule, summary: str, source: str, doc: str) -> None:
    """Register the input gradient with `rule` rewriting every ReLU/ReLU6 module's backward, reduced by max_abs
    (TorchRay's), unavailable on a network without such modules."""

    def fn(ctx: MethodInputs, reduce: str = "max_abs", smoothing: float = 0.0) -> torch.Tensor:
        return smooth_saliency(reduce_channels(input_gradient(ctx, rule), reduce), smoothing)

    def unavailable(loaded: LoadedModel) -> str:
        return no_relu_modules(loaded.model, f"method {name!r}")

    fn.__doc__ = doc
    method(name, summary, unavailable=unavailable, source=source, **SALIENCY)(fn)


_relu_rule_method(
    "guided_backprop",
    guided_relus,
    "guided backprop: max over channels of |gradient| with every ReLU passing only positive gradients",
    "Springenberg et al., ICLR-W 2015; reduction as TorchRay's",
    """The input gradient with each ReLU/ReLU6 module's backward keeping only positive gradients where its input
    was positive; L = max_c |.| (TorchRay), smoothed as `gradient`'s. Not defined without ReLU modules.""",
)
_relu_rule_method(
    "deconvnet",
    deconv_relus,
    "deconvnet: max over channels of |gradient| with every ReLU back-propagating ReLU(gradient)",
    "Zeiler & Fergus, ECCV 2014; reduction as TorchRay's",
    """The input gradient with each ReLU/ReLU6 module's backward replaced by ReLU of the incoming gradient, whatever
    its forward input's sign; L = max_c |.| (TorchRay), smoothed as `gradient`'s. Not defined without ReLU modules.""",
)


def pixel_rows(ctx: MethodInputs, copies: Iterator[torch.Tensor], per_block: int) -> Iterator[MethodInputs]:
    """Contexts of `per_block` copies of the batch at a time, stacked copy-major (copy s of image i is row s * B + i),
    for a pixel method on noisy copies."""
    block: list[torch.Tensor] = []
    for x_s in copies:
        block.append(x_s)
        if len(block) == per_block:
            yield _stacked(ctx, block)
            block = []
    if block:
        yield _stacked(ctx, block)


def _stacked(ctx: MethodInputs, block: list[torch.Tensor]) -> MethodInputs:
    n = len(block)
    ids = None if ctx.image_ids is None else ctx.image_ids * n
    return replace(ctx, x=torch.cat(block), targets=ctx.targets.repeat(n), image_ids=ids, logits=None, at=None)
