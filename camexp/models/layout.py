"""The feature-map adapter between a model and the explainer: every layer output becomes (B, K, h, w).

CAM methods read A and G as (batch, channel, height, width). Backbones lay their activations out in three
ways: NCHW (CNNs), NHWC (timm's Swin stages, which declare `output_fmt = 'NHWC'`) and token sequences
(B, N, D) with `num_prefix_tokens` class/distillation/register tokens before the h*w patch tokens of
`patch_embed.grid_size` (ViT, DeiT). The adapter maps the layer's output to maps and back, so that the
explainer's leaf tensor (and hence G) is in map layout. A layout that cannot be determined is an error,
never a guess: reading (B, 7, 7, 768) as NCHW would give 7 "channels" of 7x768 maps and wrong numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from camexp.errors import CamexpError

LAYOUTS = ("auto", "nchw", "nhwc", "tokens")


@dataclass(frozen=True)
class FeatureLayout:
    """How a layer's output is laid out: `nchw`, `nhwc`, or `tokens` with `prefix` tokens and a `grid`."""

    kind: str
    grid: tuple[int, int] | None = None
    prefix: int = 0

    def to_maps(self, out: torch.Tensor) -> torch.Tensor:
        """Native layer output -> (B, K, h, w) (a view where possible; prefix tokens are left out)."""
        if self.kind == "nchw":
            return out
        if self.kind == "nhwc":
            return out.permute(0, 3, 1, 2)
        assert self.grid is not None
        return out[:, self.prefix:].unflatten(1, self.grid).permute(0, 3, 1, 2)

    def to_native(self, maps: torch.Tensor, like: torch.Tensor, which: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, h, w) -> the layer's own layout; token layouts take their prefix tokens from `like` (row which[n]
        of it for row n of `maps`; default: row n). Only those tokens are gathered, never the whole of `like`."""
        if self.kind == "nchw":
            return maps
        if self.kind == "nhwc":
            return maps.permute(0, 2, 3, 1)
        patches = maps.permute(0, 2, 3, 1).flatten(1, 2)
        prefix = like[:, :self.prefix] if which is None else like[which, :self.prefix]
        return torch.cat([prefix.to(patches.dtype), patches], 1)

    def describe(self) -> str:
        return f"tokens (grid {self.grid}, {self.prefix} prefix token(s))" if self.kind == "tokens" else self.kind.upper()


def detect_layout(net: nn.Module, layer_name: str, out: object, declared: str = "auto") -> FeatureLayout:
    """The layout of `out`, the output of `layer_name` on a probe; `declared` (model.layout) overrides auto."""
    if not isinstance(out, torch.Tensor) or out.dim() not in (3, 4):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CamexpError(f"model.layer {layer_name!r} outputs {shape}, not a feature map (B,K,h,w), (B,h,w,K) "
                          "or a token sequence (B,N,D): choose another layer")
    kind = declared if declared != "auto" else ("tokens" if out.dim() == 3 else _grid_layout(net, layer_name, out))
    if kind == "tokens":
        return _token_layout(net, layer_name, out)
    if out.dim() != 4:
        raise CamexpError(f"model.layer {layer_name!r} outputs {tuple(out.shape)}: model.layout {kind!r} needs a 4-D output")
    return FeatureLayout(kind)


def _grid_layout(net: nn.Module, layer_name: str, out: torch.Tensor) -> str:
    if getattr(net, "output_fmt", "NCHW") == "NHWC":
        return "nhwc"
    _, c, h, w = out.shape
    if c == h and w != c:
        raise CamexpError(f"model.layer {layer_name!r} outputs {tuple(out.shape)}, which looks channels-last "
                          f"(B,h,w,K = {w}) as much as NCHW (K = {c}): set model.layout to nchw or nhwc")
    return "nchw"


def _token_layout(net: nn.Module, layer_name: str, out: torch.Tensor) -> FeatureLayout:
    if out.dim() != 3:
        raise CamexpError(f"model.layer {layer_name!r} outputs {tuple(out.shape)}: model.layout 'tokens' needs (B,N,D)")
    grid = getattr(getattr(net, "patch_embed", None), "grid_size", None)
    prefix = int(getattr(net, "num_prefix_tokens", 0) or 0)
    n = out.shape[1]
    if grid is None or n != prefix + grid[0] * grid[1]:
        raise CamexpError(f"model.layer {layer_name!r} outputs {n} tokens, which is not {prefix} prefix token(s) + "
                          f"a patch grid {tuple(grid) if grid else '(unknown: no patch_embed.grid_size)'}: choose a "
                          "layer whose tokens are the patch grid (for ViT-style models, blocks.N.norm1)")
    return FeatureLayout("tokens", (int(grid[0]), int(grid[1])), prefix)
