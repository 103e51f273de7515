"""A third-party layout: MLP-Mixer's patch tokens (B, N, D), whose grid is `stem.grid_size` (timm's Mixer has
no `patch_embed`, so the built-in `tokens` layout cannot read it)."""

from __future__ import annotations

import torch
from torch import nn

from camexp.models.layout import FeatureLayout, LayerProbe, Layout


class StemTokens(FeatureLayout):
    """(B, h*w, D) patch tokens in row-major order, no class token."""

    def __init__(self, grid: tuple[int, int]) -> None:
        self.grid = grid

    def to_maps(self, out: torch.Tensor) -> torch.Tensor:
        return out.unflatten(1, self.grid).permute(0, 3, 1, 2)

    def to_native(self, maps: torch.Tensor, like: torch.Tensor, which: torch.Tensor | None = None) -> torch.Tensor:
        return maps.flatten(2).transpose(1, 2)

    def describe(self) -> str:
        return f"stem tokens (grid {self.grid})"


def _bind(probe: LayerProbe) -> StemTokens:
    grid = getattr(getattr(probe.net, "stem", None), "grid_size", None)
    if grid is None or probe.out.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"{probe.out.shape[1]} tokens are not the grid of stem.grid_size ({grid})")
    return StemTokens((int(grid[0]), int(grid[1])))


def _mixer_layer(net: nn.Module) -> str | None:
    return "norm" if type(net).__name__ == "MlpMixer" else None


stem_tokens = Layout(
    name="stem_tokens",
    summary="MLP-Mixer's patch tokens on stem.grid_size",
    rank=3,
    shape="(B,N,D)",
    bind=_bind,
    auto_layer=_mixer_layer,
)
