"""TorchRay's methods against TorchRay's released formulas written out here (TorchRay 1.0 imports
`torchvision.models.resnet` internals and `importlib.resources.open_text`, and was last released for torch 1.x, so
it is not installed): RISE as TorchRay's rise() code on the same seed, EBP / cEBP as Zhang et al.'s marginal
winning probability recursion over explicit weight matrices, with TorchRay's choices (one-hot top gradient,
batch norm passed through, ReLU and max pool by their gradient, EltwiseSum for residual blocks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck

from camexp.explain import model_methods
from camexp.explain.core import Explainer
from camexp.explain.methods import METHODS
from camexp.explain.model_methods import seed_of
from camexp.explain.scoring import Scorer
from camexp.explain.torchray import ebp_layers, excitation_maps
from tests.explain.conftest import SIZE


def torchray_rise(model, input, seed, num_masks, num_cells, p, batch_size=32):
    """TorchRay 1.0's rise() (torchray/attribution/rise.py), its mask generation and accumulation as released
    (resize and filter_masks dropped): every class's saliency (B, C, H, W)."""

    def _upsample_reflect(x, size):
        orig_size = x.shape[2:]
        cell_size = [int(np.ceil(s / orig_size[i])) for i, s in enumerate(size)]
        pad_size = [int(cell_size[i] * (orig_size[i] + 2)) for i in range(len(orig_size))]
        x_padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        x_up = F.interpolate(x_padded, pad_size, mode="bilinear", align_corners=False)
        return x_up[:, :, cell_size[0] : cell_size[0] + size[0], cell_size[1] : cell_size[1] + size[1]]

    with torch.no_grad():
        height, width = input.shape[2:]
        num_classes = model(input).shape[1]
        saliency = torch.zeros(len(input), num_classes, height, width)
        cell_size = tuple(int(np.ceil(s / num_cells)) for s in input.shape[2:])
        up_size = tuple(input.shape[2 + i] + cell_size[i] for i in range(2))
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        for chunk in range((num_masks + batch_size - 1) // batch_size):
            mask_bs = min(num_masks - batch_size * chunk, batch_size)
            grid = (torch.rand(mask_bs, 1, num_cells, num_cells) < p).float()
            masks_up = _upsample_reflect(grid, up_size)
            masks = torch.empty(mask_bs, 1, height, width)
            shift_x = torch.randint(0, cell_size[0], (mask_bs,))
            shift_y = torch.randint(0, cell_size[1], (mask_bs,))
            for i in range(mask_bs):
                masks[i] = masks_up[i, :, shift_x[i] : shift_x[i] + height, shift_y[i] : shift_y[i] + width]
            for i, inp in enumerate(input):
                out = torch.sigmoid(model(inp.unsqueeze(0) * masks))
                sal = torch.matmul(out.data.transpose(0, 1), masks.view(mask_bs, height * width))
                saliency[i] = saliency[i] + sal.view((num_classes, height, width))
        saliency /= num_masks
        torch.set_rng_state(state)
    return saliency


def test_rise_is_torchrays_rise_on_the_same_seed(tiny, images, monkeypatch):
    """Same masks -> same map, whatever the groups of masks and the forward chunks; 40 masks: a last short draw."""
    ctx = Explainer(tiny, ["rise"], scorer=Scorer(tiny.model, chunk=16)).activations(images)[1]
    ours = METHODS["rise"](ctx, n=40)
    theirs = torchray_rise(tiny.model.net, tiny.model.normalize(images), seed_of(0, "rise"), 40, 7, 0.5)
    want = theirs[torch.arange(2), ctx.targets]
    assert ours.shape == (2, SIZE, SIZE) and want.abs().min() > 0
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=0)
    assert ctx.counts["forwards"] == 80
    monkeypatch.setattr(model_methods, "BLOCK_ELEMENTS", 64 * SIZE * SIZE)  # groups of 32 masks per image
    from camexp.explain import torchray

    monkeypatch.setattr(torchray, "BLOCK_ELEMENTS", 64 * SIZE * SIZE)
    torch.testing.assert_close(METHODS["rise"](ctx, n=40), ours, rtol=1e-6, atol=0)


def test_rise_refuses_bad_settings():
    assert "p must be" in METHODS["rise"].param_problem({"p": 1.5})
    assert "cells" in METHODS["rise"].param_problem({"cells": 1})
    assert "confidence" in METHODS["rise"].param_problem({"confidence": "logit"})


# ---- EBP: the marginal winning probability recursion, P_in = a * W+^T (P_out / (W+ a)), on explicit matrices


def dense(f, shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix (out, in) of a linear map f of inputs of `shape` (one image), column j = f(e_j)."""
    n = int(np.prod(shape))
    return f(torch.eye(n, dtype=torch.float64).view(n, *shape)).reshape(n, -1).T


def winning(a: torch.Tensor, w_plus: torch.Tensor, p_out: torch.Tensor) -> torch.Tensor:
    """Zhang et al.'s eq. (7)-(8) as TorchRay writes it: P(a_j) = sum_i a_j w+_ij / (sum_k a_k w+_ik) P(a_i)."""
    flat = a.reshape(-1).double()
    return (flat * (w_plus.T @ (p_out.reshape(-1) / (w_plus @ flat + 1e-20)))).view(a.shape)


def conv_plus(conv: nn.Conv2d, shape: tuple[int, ...]) -> torch.Tensor:
    w = conv.weight.double().clamp(min=0)
    return dense(lambda e: F.conv2d(e, w, None, conv.stride, conv.padding), shape)


def max_route(a: torch.Tensor, p_out: torch.Tensor) -> torch.Tensor:
    """Max pooling 2x2 passes each cell's probability to its maximum (its gradient)."""
    _, idx = F.max_pool2d(a[None], 2, return_indices=True)
    return torch.zeros(a.numel(), dtype=torch.float64).index_add_(0, idx.flatten() + 0, p_out.flatten()).view(a.shape)


class Tiny(nn.Module):
    """conv-relu-maxpool | conv-bn-relu-avgpool-fc: the saliency layer is the max pool, the contrast the pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 3, padding=1)
        self.bn, self.fc = nn.BatchNorm2d(5), nn.Linear(5, 3)
        self.pool, self.gap = nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pool(F.relu(self.conv1(x)))
        return self.fc(self.gap(F.relu(self.bn(self.conv2(a)))).flatten(1))


def _randomize(net: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return net.eval().requires_grad_(False)


def tiny_recursion(net: Tiny, x: torch.Tensor, target: int, contrastive: bool) -> torch.Tensor:
    """EBP (or cEBP) at the max pool's output for one image x (3,8,8), by the recursion."""
    z1 = F.relu(net.conv1(x[None]))[0]
    a = F.max_pool2d(z1[None], 2)[0]  # the saliency layer (4,4,4)
    pre = net.bn(net.conv2(a[None]))[0]
    r = F.relu(pre)  # (5,4,4)
    g = r.mean((1, 2))  # the contrast layer (5,)
    gap = dense(lambda e: e.mean((2, 3)), tuple(r.shape))
    top = torch.zeros(3, dtype=torch.float64)
    top[target] = 1.0

    def down(p_g: torch.Tensor) -> torch.Tensor:
        p_r = winning(r, gap.clamp(min=0), p_g) * (pre > 0)  # ReLU: its gradient; batch norm: passed through
        return winning(a, conv_plus(net.conv2, tuple(a.shape)), p_r)

    p_g = winning(g, net.fc.weight.double().clamp(min=0), top)
    if contrastive:
        p_g = p_g - winning(g, (-net.fc.weight.double()).clamp(min=0), top)
        return down(p_g).sum(0).clamp(min=0)
    return down(p_g).sum(0)


@pytest.mark.parametrize("contrastive", [False, True])
def test_ebp_is_the_winning_probability_recursion(contrastive):
    net = _randomize(Tiny())
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 2])
    ours = excitation_maps(net, x, targets, "pool", "gap" if contrastive else None)
    want = torch.stack([tiny_recursion(net, x[i], int(targets[i]), contrastive) for i in range(2)]).float()
    assert want.abs().max() > 0
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-7)


class Res(nn.Module):
    """conv-relu (the saliency layer) | torchvision Bottleneck (identity shortcut) | Bottleneck (downsample) |
    avgpool-fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        down = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
        self.b1, self.b2 = Bottleneck(8, 2), Bottleneck(8, 4, stride=2, downsample=down)
        self.gap, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gap(self.b2(self.b1(self.stem(x)))).flatten(1))


def bottleneck_recursion(block: Bottleneck, a: torch.Tensor, p_out: torch.Tensor) -> torch.Tensor:
    """TorchRay's rules through a Bottleneck on input a: out = ReLU(r + s); r gets g r / t, s gets g s / t."""
    h1 = block.bn1(block.conv1(a[None]))[0]
    z1 = F.relu(h1)
    h2 = block.bn2(block.conv2(z1[None]))[0]
    z2 = F.relu(h2)
    r = block.bn3(block.conv3(z2[None]))[0]
    s = a if block.downsample is None else block.downsample(a[None])[0]
    t = r + s
    g = p_out * (t > 0)
    p_r, p_s = g * r / torch.where(t > 0, t, 1.0), g * s / torch.where(t > 0, t, 1.0)
    p_z2 = winning(z2, conv_plus(block.conv3, tuple(z2.shape)), p_r) * (h2 > 0)
    p_z1 = winning(z1, conv_plus(block.conv2, tuple(z1.shape)), p_z2) * (h1 > 0)
    p_a = winning(a, conv_plus(block.conv1, tuple(a.shape)), p_z1)
    if block.downsample is None:
        return p_a + p_s
    return p_a + winning(a, conv_plus(block.downsample[0], tuple(a.shape)), p_s)


def test_ebp_splits_residual_sums_as_torchrays_eltwise_sum():
    net = _randomize(Res())
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([1, 2])
    ours = excitation_maps(net, x, targets, "stem")
    want = []
    for i, c in enumerate(targets.tolist()):
        a0 = net.stem(x[i : i + 1])[0]
        a1 = net.b1(a0[None])[0]
        a2 = net.b2(a1[None])[0]
        top = torch.zeros(3, dtype=torch.float64)
        top[c] = 1.0
        g = a2.mean((1, 2))
        p_a2 = winning(
            a2, dense(lambda e: e.mean((2, 3)), tuple(a2.shape)), winning(g, net.fc.weight.double().clamp(min=0), top)
        )
        want.append(bottleneck_recursion(net.b1, a0, bottleneck_recursion(net.b2, a1, p_a2)).sum(0))
    torch.testing.assert_close(ours, torch.stack(want).float(), rtol=1e-5, atol=1e-7)


def test_ebp_is_refused_with_one_line_on_other_networks(tiny):
    assert "vgg16" in METHODS["excitation_backprop"].unavailable(tiny)
    assert "test_convnext" in METHODS["contrastive_excitation_backprop"].unavailable(tiny)


@pytest.mark.parametrize(
    ("builder", "arch", "want"),
    [
        ("timm", "vgg16", ("features.23", "pre_logits.act2")),
        ("timm", "resnet50", ("layer3", "global_pool")),
        ("torchvision", "vgg16", ("features.23", "classifier.4")),
        ("torchvision", "resnet50", ("layer3", "avgpool")),
    ],
)
def test_torchrays_layers_are_found_in_timm_and_torchvision_models(builder, arch, want):
    """pool4 / relu7 of VGG-16 and layer3 / the last pool of ResNet-50 (built on the meta device: no weights)."""
    import timm
    import torchvision

    with torch.device("meta"):
        net = timm.create_model(arch) if builder == "timm" else getattr(torchvision.models, arch)()
    assert ebp_layers(net, arch) == want


def test_ebp_refuses_networks_with_other_activations():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU())
    assert "SiLU" in str(ebp_layers(net, "vgg16"))
    assert "resnet18" in str(ebp_layers(net, "resnet18"))
