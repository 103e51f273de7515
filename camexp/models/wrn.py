"""Wide residual networks for CIFAR (Zagoruyko & Komodakis, BMVC 2016), registered in timm's model registry.

WRN-d-k: a 3x3 stem of 16 channels, three groups of n = (d - 4) / 6 pre-activation basic blocks of widths
16k, 32k, 64k (strides 1, 2, 2), then BN-ReLU, global average pooling and a linear classifier; a 1x1
convolution on the shortcut where a block changes width or stride. Registering `wrn_16_2`, `wrn_40_2`, ...
with `timm.models.register_model` makes `timm.create_model` (and so any camexp model spec) build them;
building any model (`camexp.models`) registers them first, so `camexp run`, `check` and `distill` all build
them. Input: 32x32 CIFAR images with the CIFAR-10 mean/std.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import register_model
from torch import nn

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
_CFG = {
    "input_size": (3, 32, 32),
    "interpolation": "bilinear",
    "crop_pct": 1.0,
    "crop_mode": "center",
    "mean": CIFAR10_MEAN,
    "std": CIFAR10_STD,
    "num_classes": 10,
    "classifier": "fc",
}


class WideBasic(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-(dropout)-conv3x3, plus the (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, drop: float):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if c_in != c_out or stride != 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = torch.relu(self.bn1(x))
        y = self.conv2(self.drop(torch.relu(self.bn2(self.conv1(o)))))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-`depth`-`widen` with timm's classifier interface (reset_classifier, forward_features/head)."""

    def __init__(self, depth: int, widen: int, num_classes: int = 10, drop_rate: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, not {depth}")
        n, widths = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.blocks = nn.Sequential(
            *[
                WideBasic(
                    widths[g] if i == 0 else widths[g + 1], widths[g + 1], (1, 2, 2)[g] if i == 0 else 1, drop_rate
                )
                for g in range(3)
                for i in range(n)
            ]
        )
        self.bn, self.act = nn.BatchNorm2d(widths[3]), nn.ReLU()
        self.num_features = widths[3]
        self.fc = nn.Linear(widths[3], num_classes)
        self.pretrained_cfg = dict(_CFG, num_classes=num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)
        self.pretrained_cfg["num_classes"] = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.blocks(self.conv1(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _wrn(depth: int, widen: int, pretrained: bool, kwargs: dict[str, Any]) -> WideResNet:
    if pretrained:
        raise ValueError(f"wrn_{depth}_{widen} has no published weights: use weights: random or a checkpoint file")
    kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}
    return WideResNet(depth, widen, **kwargs)


@register_model
def wrn_16_2(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-16-2 (about 0.7M parameters), the poster's CIFAR-10 student."""
    return _wrn(16, 2, pretrained, kwargs)


@register_model
def wrn_40_2(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-40-2 (about 2.2M parameters), the poster's CIFAR-10 teacher."""
    return _wrn(40, 2, pretrained, kwargs)


@register_model
def wrn_16_1(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-16-1 (about 0.18M parameters): a small CIFAR student for quick checks."""
    return _wrn(16, 1, pretrained, kwargs)


@register_model
def wrn_28_10(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-28-10 (about 36.5M parameters), the paper's best CIFAR model."""
    return _wrn(28, 10, pretrained, kwargs)
