"""The feature-map adapter between a model and the explainer: every layer output becomes (B, K, h, w).

CAM methods read A and G as (batch, channel, height, width). Backbones lay their activations out in several
ways; each way is a registered `Layout` (camexp/registry.py, pluggable like methods: an import path
`package.module:attr` in `model.layout`, or the entry-point group `camexp.layouts`). A layout says

- `bind`: how it reads a layer's output (a `FeatureLayout` mapping it to maps and back), or why it cannot
  (wrong rank, a grid that does not have the input image's shape, a token count that is not the patch grid);
- `detect`: what makes it certain beyond the output's shape: the layer's module (a 2-D conv or norm layer is
  NCHW) or the model's declaration (timm's `output_fmt = 'NHWC'`);
- `auto_layer`: the papers' layer for the model families it serves.

Built in: `nchw` (CNNs), `nhwc` (timm's Swin) and `tokens` ((B, N, D) with `num_prefix_tokens` class /
distillation / register tokens before the h*w patch tokens of `patch_embed.grid_size`: ViT, DeiT). A layout
that cannot be determined is an error, never a guess, and a declared `model.layout` that the layer
contradicts is refused: reading (B, 1280, 7, 7) as NHWC would give 7 "channels" of 1280x7 maps and a wrong
number at the end of a run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from camexp.errors import CamexpError
from camexp.registry import Registry

# How sure a layout's evidence is: the layer's own module, the model's declaration, or only the output's shape.
MODULE, MODEL, SHAPE = 2, 1, 0
_NCHW_MODULES = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.GroupNorm,
    nn.MaxPool2d,
    nn.AvgPool2d,
)


@dataclass(frozen=True)
class LayerProbe:
    """The explained layer on the probe image: the model, the layer's name and module, its output, and the
    probe's (H, W) (a layout's grid must have the image's shape)."""

    net: nn.Module
    name: str
    module: nn.Module
    out: torch.Tensor
    image_size: tuple[int, int]


@dataclass(frozen=True)
class Evidence:
    """Why a layer's output is in a layout, and how sure that is (`MODULE` or `MODEL`)."""

    strength: int
    why: str


class FeatureLayout:
    """A layout bound to one layer: its output -> (B, K, h, w) maps, and maps -> its output. The base class is
    the identity (NCHW); a layout overrides both directions and `describe` (what run.json records)."""

    def to_maps(self, out: torch.Tensor) -> torch.Tensor:
        """Native layer output -> (B, K, h, w) (a view where possible)."""
        return out

    def to_native(self, maps: torch.Tensor, like: torch.Tensor, which: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, h, w) -> the layer's own layout. `like` is the layer's native output on the batch and row which[n]
        of it belongs to row n of `maps` (default: row n): the source of anything the maps leave out."""
        return maps

    def describe(self) -> str:
        return "NCHW"


class ChannelsLast(FeatureLayout):
    """(B, h, w, K), as timm's Swin stages."""

    def to_maps(self, out: torch.Tensor) -> torch.Tensor:
        return out.permute(0, 3, 1, 2)

    def to_native(self, maps: torch.Tensor, like: torch.Tensor, which: torch.Tensor | None = None) -> torch.Tensor:
        return maps.permute(0, 2, 3, 1)

    def describe(self) -> str:
        return "NHWC"


@dataclass(frozen=True)
class Tokens(FeatureLayout):
    """(B, N, D): `prefix` tokens, then the patch tokens of a `grid` in row-major order."""

    grid: tuple[int, int]
    prefix: int = 0

    def to_maps(self, out: torch.Tensor) -> torch.Tensor:
        """Prefix tokens are left out of the maps."""
        return out[:, self.prefix :].unflatten(1, self.grid).permute(0, 3, 1, 2)

    def to_native(self, maps: torch.Tensor, like: torch.Tensor, which: torch.Tensor | None = None) -> torch.Tensor:
        """The prefix tokens come from `like`; only those tokens are gathered, never the whole of `like`."""
        patches = maps.permute(0, 2, 3, 1).flatten(1, 2)
        if not self.prefix:
            return patches
        prefix = like[:, : self.prefix] if which is None else like[which, : self.prefix]
        return torch.cat([prefix.to(patches.dtype), patches], 1)

    def describe(self) -> str:
        return f"tokens (grid {self.grid}, {self.prefix} prefix token(s))"


def _no_evidence(probe: LayerProbe) -> Evidence | None:
    return None


def _no_layer(net: nn.Module) -> str | None:
    return None


@dataclass(frozen=True)
class Layout:
    """A registered layout. `rank`: the dimensions of the outputs it reads, `shape` their description (for
    errors); `bind(probe)` reads the layer's output (raises ValueError saying why it cannot); `detect(probe)`
    gives evidence beyond the shape (None: none); `auto_layer(net)` names the layer to explain for the model
    families it serves (None: not one of them)."""

    name: str
    summary: str
    rank: int
    shape: str
    bind: Callable[[LayerProbe], FeatureLayout]
    detect: Callable[[LayerProbe], Evidence | None] = _no_evidence
    auto_layer: Callable[[nn.Module], str | None] = _no_layer


def _as_layout(name: str, obj: object) -> Layout:
    if not isinstance(obj, Layout):
        raise TypeError(f"a layout must be a camexp.models.layout.Layout, not {type(obj).__name__}")
    return obj


LAYOUTS: Registry[Layout] = Registry("layout", _as_layout)


def grid_fits(grid: tuple[int, int], image_size: tuple[int, int]) -> bool:
    """Whether an h x w grid has the H x W image's shape (aspect ratio within a factor 1.5: strides round)."""
    (h, w), (hi, wi) = grid, image_size
    return max(h * wi, w * hi) <= 1.5 * min(h * wi, w * hi)


def _grid(probe: LayerProbe, grid: tuple[int, int], channels: int) -> None:
    if not grid_fits(grid, probe.image_size):
        raise ValueError(
            f"it would read {channels} channel(s) of {grid[0]}x{grid[1]} maps, which do not have the "
            f"shape of the {probe.image_size[0]}x{probe.image_size[1]} input"
        )


def _bind_nchw(probe: LayerProbe) -> FeatureLayout:
    _, k, h, w = probe.out.shape
    _grid(probe, (h, w), k)
    return FeatureLayout()


def _bind_nhwc(probe: LayerProbe) -> FeatureLayout:
    _, h, w, k = probe.out.shape
    _grid(probe, (h, w), k)
    return ChannelsLast()


def _layer_norm_dim(probe: LayerProbe) -> int | None:
    """The one dimension (1 or 3) a LayerNorm layer normalises over, when its output tells them apart."""
    m, shape = probe.module, probe.out.shape
    if not isinstance(m, nn.LayerNorm) or len(m.normalized_shape) != 1 or shape[1] == shape[3]:
        return None
    return 3 if m.normalized_shape[0] == shape[3] else 1 if m.normalized_shape[0] == shape[1] else None


def _detect_nchw(probe: LayerProbe) -> Evidence | None:
    if isinstance(probe.module, _NCHW_MODULES):
        return Evidence(MODULE, f"it is a {type(probe.module).__name__}, a 2-D conv/norm layer (NCHW by definition)")
    if _layer_norm_dim(probe) == 1:
        return Evidence(MODULE, f"it is a {type(probe.module).__name__} over dimension 1 (channels first)")
    return None


def _detect_nhwc(probe: LayerProbe) -> Evidence | None:
    if _layer_norm_dim(probe) == 3:
        return Evidence(
            MODULE,
            f"it is a {type(probe.module).__name__} over the last dimension "
            f"({probe.out.shape[3]} features, channels last)",
        )
    if getattr(probe.net, "output_fmt", None) == "NHWC":
        return Evidence(MODEL, "the model declares output_fmt 'NHWC'")
    return None


def _bind_tokens(probe: LayerProbe) -> FeatureLayout:
    grid = getattr(getattr(probe.net, "patch_embed", None), "grid_size", None)
    prefix = int(getattr(probe.net, "num_prefix_tokens", 0) or 0)
    n = probe.out.shape[1]
    if grid is None or n != prefix + grid[0] * grid[1]:
        raise ValueError(
            f"{n} tokens are not {prefix} prefix token(s) + a patch grid "
            f"{tuple(grid) if grid else '(unknown: no patch_embed.grid_size)'}: choose a layer whose "
            "tokens are the patch grid (for ViT-style models, blocks.N.norm1)"
        )
    return Tokens((int(grid[0]), int(grid[1])), prefix)


def _vgg_layer(net: nn.Module) -> str | None:
    """VGG/AlexNet: the last ReLU of `features` (conv5_3 after its ReLU, the papers' layer)."""
    features = getattr(net, "features", None)
    if type(net).__name__ in ("VGG", "AlexNet") and isinstance(features, nn.Sequential):
        relus = [i for i, m in enumerate(features) if isinstance(m, nn.ReLU)]
        return f"features.{relus[-1]}" if relus else None
    return None


def _swin_layer(net: nn.Module) -> str | None:
    """Swin (timm, output_fmt NHWC): the last stage's output."""
    stages = getattr(net, "layers", None)
    if getattr(net, "output_fmt", None) == "NHWC" and isinstance(stages, (nn.Sequential, nn.ModuleList)) and stages:
        return f"layers.{len(stages) - 1}"
    return None


def _vit_layer(net: nn.Module) -> str | None:
    """ViT-style token models: the last block's first norm (pytorch-grad-cam's choice)."""
    blocks = getattr(net, "blocks", None)
    if (
        hasattr(net, "patch_embed")
        and hasattr(net, "num_prefix_tokens")
        and isinstance(blocks, (nn.Sequential, nn.ModuleList))
        and len(blocks)
        and hasattr(blocks[-1], "norm1")
    ):
        return f"blocks.{len(blocks) - 1}.norm1"
    return None


LAYOUTS.register("nchw", Layout("nchw", "(B, K, h, w): CNNs", 4, "(B,K,h,w)", _bind_nchw, _detect_nchw, _vgg_layer))
LAYOUTS.register(
    "nhwc",
    Layout(
        "nhwc", "(B, h, w, K): timm's Swin (output_fmt 'NHWC')", 4, "(B,h,w,K)", _bind_nhwc, _detect_nhwc, _swin_layer
    ),
)
LAYOUTS.register(
    "tokens",
    Layout(
        "tokens",
        "(B, N, D): prefix tokens + the patch grid of patch_embed (ViT, DeiT)",
        3,
        "(B,N,D)",
        _bind_tokens,
        auto_layer=_vit_layer,
    ),
)


def resolve_layout(probe: LayerProbe, declared: str = "auto") -> FeatureLayout:
    """The layout of the probe's output: the one the evidence singles out (`declared` 'auto'), or the declared
    one (model.layout) unless the layer contradicts it. Every refusal is one line naming the layer and the fix."""
    entry = None if declared == "auto" else LAYOUTS.get(declared)
    where, out = f"model.layer {probe.name!r}", probe.out
    if not isinstance(out, torch.Tensor) or out.dim() not in {e.rank for _, e in LAYOUTS.items()}:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        shapes = sorted({e.shape for _, e in LAYOUTS.items()})
        raise CamexpError(
            f"{where} outputs {shape}, not a feature map or token sequence ({', '.join(shapes)}): choose another layer"
        )
    shape = tuple(out.shape)
    bound: dict[str, tuple[FeatureLayout, Evidence]] = {}
    problems: dict[str, str] = {}
    for name, e in LAYOUTS.items():
        if e.rank != out.dim():
            continue
        try:
            bound[name] = e.bind(probe), e.detect(probe) or Evidence(SHAPE, f"its shape {shape} reads as {e.shape}")
        except ValueError as err:
            problems[name] = str(err)
    if entry is not None:
        return _declared(declared, entry, bound, problems, where, shape)
    if not bound:
        why = "; ".join(f"as {n}: {p}" for n, p in problems.items())
        raise CamexpError(f"{where} outputs {shape}, which no layout reads ({why}): choose another layer")
    best = max(ev.strength for _, ev in bound.values())
    top = [n for n, (_, ev) in bound.items() if ev.strength == best]
    if len(top) > 1:
        why = "; ".join(f"{n}: {bound[n][1].why}" for n in top)
        raise CamexpError(
            f"{where} outputs {shape}, which reads as {' or '.join(top)} ({why}): set model.layout to one of them"
        )
    return bound[top[0]][0]


def _declared(
    name: str,
    entry: Layout,
    bound: dict[str, tuple[FeatureLayout, Evidence]],
    problems: dict[str, str],
    where: str,
    shape: tuple[int, ...],
) -> FeatureLayout:
    """The declared layout's reading, unless it cannot read the output or stronger evidence says otherwise."""
    if len(shape) != entry.rank:
        raise CamexpError(f"{where} outputs {shape}: model.layout {name!r} needs {entry.shape}")
    own = bound[name][1].strength if name in bound else -1
    others = sorted(((ev.strength, n, ev.why) for n, (_, ev) in bound.items() if n != name), reverse=True)
    stronger = [(n, why) for strength, n, why in others if strength > own and (strength >= MODEL or own < 0)]
    fix = f"set model.layout to {stronger[0][0]} or auto" if stronger else "choose another layer"
    said = f"; it is {stronger[0][0]}: {stronger[0][1]}" if stronger else ""
    if name in problems:
        why = problems[name]
        raise CamexpError(f"{where} outputs {shape}: model.layout {name!r} cannot read it ({why}){said}; {fix}")
    if stronger:
        raise CamexpError(f"model.layout {name!r} contradicts {where}{said}; {fix}")
    return bound[name][0]
