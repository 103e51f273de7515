"""TorchRay 1.0's torchray/utils.py `imsmooth`, as released: the Gaussian smoothing its extremal perturbation
(zero padding) and its saliency maps (`smooth`, replicated edges) use; camexp's own is
camexp/explain/attributions.py `imsmooth`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPSILON_SINGLE = torch.tensor(1.19209290e-07, dtype=torch.float32)
SQRT_TWO_SINGLE = torch.tensor(math.sqrt(2), dtype=torch.float32)


def imsmooth(tensor, sigma, stride=1, padding=0, padding_mode="constant", padding_value=0):
    assert sigma >= 0
    width = math.ceil(4 * sigma)
    filt = torch.arange(-width, width + 1, dtype=torch.float32, device=tensor.device) / (
        SQRT_TWO_SINGLE * sigma + EPSILON_SINGLE
    )
    filt = torch.exp(-filt * filt)
    filt /= torch.sum(filt)
    num_channels = tensor.shape[1]
    width = width + padding
    if padding_mode == "constant" and padding_value == 0:
        other_padding = width
        x = tensor
    else:
        x = F.pad(tensor, (width, width, width, width), mode=padding_mode, value=padding_value)
        other_padding = 0
        padding = 0
    x = F.conv2d(
        x,
        filt.reshape((1, 1, -1, 1)).expand(num_channels, -1, -1, -1),
        padding=(other_padding, padding),
        stride=(stride, 1),
        groups=num_channels,
    )
    x = F.conv2d(
        x,
        filt.reshape((1, 1, 1, -1)).expand(num_channels, -1, -1, -1),
        padding=(padding, other_padding),
        stride=(1, stride),
        groups=num_channels,
    )
    return x
