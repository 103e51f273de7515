"""TorchRay's attribution methods beyond the CAMs (facebookresearch/TorchRay, the rows of its pointing-game table):
RISE, excitation backprop and contrastive excitation backprop, with TorchRay's settings (docs/guide/torchray.md).

Each gives a map at its own resolution: RISE at the input's (B,H,W), EBP / cEBP at TorchRay's saliency layer's
(VGG-16 pool4, ResNet-50 layer3), upsampled bilinearly like every map. EBP's rules are module hooks active only
while a method runs (no global patch of torch functions, unlike TorchRay's), so other methods are unaffected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from camexp.explain.methods import MethodInputs, method
from camexp.explain.model_methods import BLOCK_ELEMENTS, one_of, seed_of
from camexp.models import LoadedModel
from camexp.models.layers import forward_hooks

# TorchRay draws RISE's random grids and shifts in batches of this many masks (rise(batch_size=32)): drawing in
# the same blocks keeps the generator's sequence, so that the same seed gives TorchRay's masks.
RISE_DRAW = 32


def upsample_reflect(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TorchRay's `_upsample_reflect`: (N,1,h,w) grids reflection-padded by one cell, upsampled bilinearly to
    (cells + 2) * ceil(size / cells) and cropped to `size` after the first padded cell."""
    cell = [int(np.ceil(s / o)) for s, o in zip(size, x.shape[2:])]
    pad = [c * (o + 2) for c, o in zip(cell, x.shape[2:])]
    up = F.interpolate(F.pad(x, (1, 1, 1, 1), mode="reflect"), pad, mode="bilinear", align_corners=False)
    return up[:, :, cell[0] : cell[0] + size[0], cell[1] : cell[1] + size[1]]


def rise_masks(
    n: int, cells: int, p: float, size: tuple[int, int], generator: torch.Generator, group: int = RISE_DRAW
) -> Iterator[torch.Tensor]:
    """RISE's n masks (N,H,W) on the CPU in groups of `group` (a multiple of RISE_DRAW), drawn as TorchRay
    draws them: per block of 32, a cells x cells grid of cells kept with probability p (rand < p), upsampled
    with reflection to the input plus one cell, then shifted by a random offset below one cell per axis."""
    h, w = size
    cell = (int(np.ceil(h / cells)), int(np.ceil(w / cells)))
    blocks: list[torch.Tensor] = []
    for lo in range(0, n, RISE_DRAW):
        m = min(RISE_DRAW, n - lo)
        grid = (torch.rand(m, 1, cells, cells, generator=generator) < p).float()
        up = upsample_reflect(grid, (h + cell[0], w + cell[1]))
        sy = torch.randint(0, cell[0], (m,), generator=generator)
        sx = torch.randint(0, cell[1], (m,), generator=generator)
        blocks.append(torch.stack([up[i, 0, sy[i] : sy[i] + h, sx[i] : sx[i] + w] for i in range(m)]))
        if sum(len(b) for b in blocks) >= group or lo + m >= n:
            yield torch.cat(blocks)
            blocks = []


def _check_rise(p: dict[str, Any]) -> str:
    if p["n"] < 1 or p["cells"] < 2:
        return f"n must be >= 1 and cells >= 2, not n={p['n']}, cells={p['cells']}"
    if not 0 < p["p"] < 1:
        return f"p must be in (0, 1), not {p['p']}"
    return one_of("confidence", ("sigmoid", "softmax"))(p) or one_of("occlusion", ("normalized", "pixel"))(p)


@method(
    "rise",
    "RISE (TorchRay): mean of random masks weighted by the target's confidence on the masked image",
    needs_grad=False,
    needs_model=True,
    params={"n": 8000, "cells": 7, "p": 0.5, "seed": 0, "confidence": "sigmoid", "occlusion": "normalized"},
    check=_check_rise,
    cost=lambda k, p: f"{p['n']} forwards of masked images (batched, in the run's chunks)",
    source="Petsiuk et al., BMVC 2018; TorchRay's rise(): masks, sigmoid, normalised-input occlusion",
)
def rise(
    ctx: MethodInputs,
    n: int = 8000,
    cells: int = 7,
    p: float = 0.5,
    seed: int = 0,
    confidence: str = "sigmoid",
    occlusion: str = "normalized",
) -> torch.Tensor:
    """S = (1/n) sum_i s(x o M_i) M_i with s the target's confidence (sigmoid, TorchRay's, or softmax) and M_i
    TorchRay's masks (`rise_masks`), multiplying the normalised input (TorchRay: masked pixels become the mean
    colour; `occlusion: pixel` masks the [0,1] image). Every image of every batch gets the same masks, drawn
    from one generator seeded by (seed, 'rise') as TorchRay seeds one per image; masks x images go through the
    model in groups of about BLOCK_ELEMENTS floats, in passes of `Scorer.pass_chunk`, float32 whatever the amp."""
    x = ctx.x
    assert x is not None and ctx.scorer is not None
    b, size = len(x), (x.shape[-2], x.shape[-1])
    scorer = replace(ctx.scorer, kind=confidence, occlusion=occlusion, amp="off")
    per_group = max(RISE_DRAW, BLOCK_ELEMENTS // (b * size[0] * size[1]) // RISE_DRAW * RISE_DRAW)
    gen = torch.Generator().manual_seed(seed_of(seed, "rise"))
    out = torch.zeros(b, size[0] * size[1], dtype=torch.float64, device=x.device)
    for masks in rise_masks(n, cells, p, size, gen, per_group):
        masks = masks.to(x.device)
        m = len(masks)
        which = torch.arange(b, device=x.device).repeat_interleave(m)
        group = replace(scorer, chunk=ctx.scorer.pass_chunk(x, b * m))
        scores = group.masked(x, masks.repeat(b, 1, 1), which, ctx.targets).view(b, m)
        out += scores @ masks.flatten(1).double()
    ctx.count("forwards", n * b)
    return (out / n).view(b, *size).float()


# TorchRay's layers (examples/attribution_benchmark.py): architecture -> saliency layer, contrast layer, as
# timm names them (torchvision's where different, after the slash).
EBP_LAYERS = {
    "vgg16": (("features.23",), ("pre_logits.act2", "classifier.4")),  # pool4; relu7
    "resnet50": (("layer3",), ("global_pool", "avgpool")),  # res4 (layer3); the pool before fc
}
_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_NEUTRAL = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Dropout, nn.Identity, nn.Flatten)


def ebp_layers(net: nn.Module, arch: str) -> tuple[str, str] | str:
    """(saliency layer, contrast layer) of TorchRay's benchmark in `net`, or why EBP is not defined for it."""
    if arch not in EBP_LAYERS:
        return f"TorchRay defines its layers for {sorted(EBP_LAYERS)} only, not {arch!r}"
    modules = dict(net.named_modules())
    other = sorted({type(m).__name__ for m in modules.values() if not list(m.children())} - _known_leaves())
    if other:
        return f"its rules are defined for ReLU networks of convolutions, pools and batch norms; {arch} has {other}"
    found = [next((n for n in names if n in modules), None) for names in EBP_LAYERS[arch]]
    if None in found:
        return f"{arch} lacks TorchRay's layer {EBP_LAYERS[arch][found.index(None)][0]!r}"
    return found[0] or "", found[1] or ""


def _known_leaves() -> set[str]:
    return {t.__name__ for t in (*_LINEAR, *_POOLS, *_NORMS, *_NEUTRAL)} | {"FastAdaptiveAvgPool"}


def _arch(loaded: LoadedModel) -> str:
    return loaded.name.removeprefix("tv:").split(".")[0]


def _ebp_unavailable(loaded: LoadedModel) -> str:
    found = ebp_layers(loaded.model.net, _arch(loaded))
    return f"excitation backprop is not defined for {loaded.name}: {found}" if isinstance(found, str) else ""


class _Rule(torch.autograd.Function):
    """Output `y` of a module on input `x` whose backward is `rule(x, grad_y)` instead of the module's own."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor, rule: Callable[..., torch.Tensor]) -> torch.Tensor:
        ctx.x, ctx.rule = x.detach(), rule
        return y.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return ctx.rule(ctx.x, g), None, None


def excite(f: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """EBP's rule for a linear map f with non-negative weights (TorchRay's eq.): p' = x * f*(p / (f(x) + 1e-20)),
    f* the vector-Jacobian product of f."""

    def rule(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            z = f(xr)
            (grad,) = torch.autograd.grad(z, xr, g / (z + 1e-20))
        return grad * x

    return rule


def _linear_rule(
    m: nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear, negate: Callable[[], bool]
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Conv / linear: W+ = max(W, 0) (of -W while `negate()`: cEBP's contrast pass), no bias."""

    def f(x: torch.Tensor) -> torch.Tensor:
        w = (-m.weight if negate() else m.weight).clamp(min=0)
        return F.linear(x, w) if isinstance(m, nn.Linear) else m._conv_forward(x, w, None)

    return excite(f)


Hooks = list[tuple[nn.Module, Callable[..., Any]]]


def _residual_hooks(block: nn.Module) -> tuple[Hooks, Hooks]:
    """(forward hooks, forward pre-hooks) of TorchRay's EltwiseSum rule for a ResNet block out = ReLU(r + s): r
    gets g * r / t and the shortcut s gets g * s / t (t = r + s, g the gradient at t), instead of g each. r is
    the last batch norm's output; s the downsample's output, or else the block's input, whose gradient (conv
    path + g) is corrected by g * (s / t - 1). Where t <= 0 the ReLU makes g = 0."""
    last = cast(nn.Module, block.bn3 if hasattr(block, "bn3") else block.bn2)
    shortcut = cast(nn.Module | None, block.downsample)
    store: dict[str, torch.Tensor] = {}

    def ratio(v: torch.Tensor) -> torch.Tensor:
        t = store["t"]
        return torch.where(t > 0, v / torch.where(t > 0, t, 1.0), 0.0)

    def keep_g(out: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        store["g"] = g * (out > 0)
        return g

    def on_block(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        store["t"] = out.detach()
        return _Rule.apply(out, out, keep_g)

    def on_part(m: nn.Module, inputs: tuple[torch.Tensor, ...], part: torch.Tensor) -> torch.Tensor:
        return _Rule.apply(part, part, lambda v, g: g * ratio(v))

    def on_input(m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        return (_Rule.apply(inputs[0], inputs[0], lambda s, g: g + store["g"] * (ratio(s) - 1)),)

    hooks: Hooks = [(block, on_block), (last, on_part)] + ([(shortcut, on_part)] if shortcut is not None else [])
    return hooks, [] if shortcut is not None else [(block, on_input)]


@contextmanager
def excitation_rules(net: nn.Module, classifier: nn.Module, negate: Callable[[], bool]) -> Iterator[None]:
    """While active, backward passes through `net` follow EBP's rules: conv / linear layers and average pools
    `excite`, batch norms pass the gradient unchanged, ReLU and max pools keep their own gradient, and ResNet
    blocks split it by TorchRay's EltwiseSum rule. `negate()` True flips the classifier's weights (cEBP).
    The residual hooks come last, so that they see the batch norm's output after its own rule."""
    hooks: Hooks = []
    residual: Hooks = []
    pre: Hooks = []
    for m in net.modules():
        if isinstance(m, _LINEAR):
            hooks.append((m, _hook(_linear_rule(m, negate if m is classifier else lambda: False))))
        elif isinstance(m, _POOLS) or type(m).__name__ == "FastAdaptiveAvgPool":
            hooks.append((m, _hook(excite(m.forward))))  # forward: no hook inside the rule
        elif isinstance(m, _NORMS):
            hooks.append((m, _hook(lambda x, g: g)))
        elif hasattr(m, "downsample") and (hasattr(m, "bn3") or hasattr(m, "bn2")):
            post, before = _residual_hooks(m)
            residual += post
            pre += before
    handles = [module.register_forward_pre_hook(fn) for module, fn in pre]
    try:
        with forward_hooks(hooks + residual):
            yield
    finally:
        for h in handles:
            h.remove()


def _hook(rule: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        return _Rule.apply(inputs[0], out, rule)

    return hook


def classifier_of(net: nn.Module) -> nn.Module:
    """TorchRay's `_get_classifier_layer`: the last conv or linear module with a weight."""
    return [m for m in net.modules() if isinstance(m, _LINEAR)][-1]


def excitation_maps(
    net: nn.Module, x: torch.Tensor, targets: torch.Tensor, saliency: str, contrast: str | None = None
) -> torch.Tensor:
    """(B,h,w) EBP map at layer `saliency` of `net` (on its own, already normalised input x) for `targets`:
    the sum over channels of the excitation (TorchRay's `excitation_backprop`, with the pointing game's one-hot
    top gradient). With `contrast` (a later layer): cEBP, ReLU of the sum of the excitation minus the contrast
    excitation reaching `contrast` through the negated classifier (one forward, two backwards)."""
    modules = dict(net.named_modules())
    classifier = classifier_of(net)
    flip = [False]
    kept: dict[str, torch.Tensor] = {}

    def leaf(m: nn.Module, inputs: object, out: torch.Tensor) -> torch.Tensor:
        kept["saliency"] = out.detach().clone().requires_grad_(True)
        return kept["saliency"]

    def probe(m: nn.Module, inputs: object, out: torch.Tensor) -> torch.Tensor:
        kept["contrast"] = out = out.clone()
        out.register_hook(lambda g: g - kept["delta"] if "delta" in kept else g)
        return out

    hooks = [(modules[saliency], leaf)] + ([(modules[contrast], probe)] if contrast else [])
    with excitation_rules(net, classifier, lambda: flip[0]), forward_hooks(hooks), torch.enable_grad():
        logits = net(x)
        top = torch.zeros_like(logits).scatter_(1, targets[:, None], 1.0)
        if contrast:
            flip[0] = True
            (kept["delta"],) = torch.autograd.grad(logits, kept["contrast"], top, retain_graph=True)
            flip[0] = False
        (grad,) = torch.autograd.grad(logits, kept["saliency"], top)
    total = grad.sum(1)
    return total.clamp(min=0) if contrast else total


def _ebp_method(contrastive: bool) -> Callable[[MethodInputs], torch.Tensor]:
    """EBP (or cEBP) at TorchRay's layers of the run's VGG-16 / ResNet-50 (`unavailable` refused the others)."""

    def fn(ctx: MethodInputs) -> torch.Tensor:
        assert ctx.model is not None and ctx.x is not None
        net = ctx.model.net
        found = [layers for arch in EBP_LAYERS if not isinstance(layers := ebp_layers(net, arch), str)]
        assert found, "the explainer checked `unavailable` before the first image"
        saliency, contrast = found[0]
        x = ctx.model.normalize(ctx.x)
        maps = excitation_maps(net, x, ctx.targets, saliency, contrast if contrastive else None)
        ctx.count("forwards", len(x))
        ctx.count("backwards", len(x) * (2 if contrastive else 1))
        return maps.float()

    return fn


for _name, _contrastive, _summary in (
    ("excitation_backprop", False, "winning probabilities to pool4 (VGG-16) / layer3 (ResNet-50), summed"),
    ("contrastive_excitation_backprop", True, "ReLU of EBP minus the negated classifier's, subtracted at relu7 / pool"),
):
    method(
        _name,
        f"{'contrastive ' if _contrastive else ''}excitation backprop (TorchRay): {_summary}",
        needs_grad=False,
        needs_model=True,
        unavailable=_ebp_unavailable,
        cost=lambda k, p, n=1 + _contrastive: f"1 forward + {n} backward(s) to TorchRay's layers (EBP rules)",
        source=f"Zhang et al., ECCV 2016; TorchRay's {_name}() and layers",
    )(_ebp_method(_contrastive))
