"""How many generated images (IG steps, SmoothGrad copies, RISE masks, occlusion windows) go through the model per
pass: near-equal passes, a CPU budget of memory measured per image shape, and maps that do not depend on it."""

from __future__ import annotations

import os

import torch
from torch import nn

from camexp.accel import PASS_MEMORY_SHARE, even_chunk, pass_budget
from camexp.config import ModelConfig
from camexp.data.transforms import InputSpec
from camexp.explain.core import Explainer
from camexp.explain.scoring import Scorer, activation_bytes
from camexp.models import PixelModel, build_model

SPEC = InputSpec((8, 8), "bilinear", 1.0, "center", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def tiny() -> PixelModel:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)]
    net = nn.Sequential(*layers)
    return PixelModel(net.eval().requires_grad_(False), SPEC)


def test_even_chunks_cut_into_as_few_passes_of_near_equal_sizes():
    assert even_chunk(32, 31) == 16  # not 31 + 1
    assert even_chunk(32, 32) == 32
    assert even_chunk(100, 29) == 25  # 4 passes either way
    assert even_chunk(7, 100) == 7
    assert even_chunk(5, None) is None


def test_the_budget_is_a_share_of_physical_memory_on_the_cpu_only():
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert pass_budget(torch.device("cpu"), None) == memory // PASS_MEMORY_SHARE
    assert pass_budget(torch.device("cpu"), 3) is None  # runtime.forward_chunk set: the user's chunk rules
    assert pass_budget(torch.device("cuda"), None) is None


def test_pass_chunk_is_the_budget_over_the_activations_of_one_image():
    model = tiny()
    x = torch.rand(2, 3, 6, 6)
    # by hand: conv (4x6x6) + ReLU (4x6x6) + pool (4x1x1) + flatten (4) + linear (5) float32 outputs
    per_image = 4 * (144 + 144 + 4 + 4 + 5)
    assert activation_bytes(model, x[:1]) == per_image
    assert Scorer(model, pass_budget=10 * per_image).pass_chunk(x, 32) == 8  # 10 per pass: 4 passes of 8
    assert Scorer(model, pass_budget=10**12).pass_chunk(x, 1000) == 250  # at most MAX_FORWARD (256) per pass
    assert Scorer(model, chunk=3).pass_chunk(x, 7) == 3  # no budget: the forward chunk, evened (3 + 2 + 2)
    assert Scorer(model, chunk=None).pass_chunk(x, 7) is None


def test_maps_do_not_depend_on_the_pass_size():
    """The same maps whether the generated images run one per pass or all in one pass (a tiny random ConvNeXt)."""
    loaded = build_model(ModelConfig(name="test_convnext", weights="random"))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    methods = [
        ("ig", "integrated_gradients", {"steps": 5}),
        ("sg", "gradient", {"smooth": {"n": 3, "sigma": 0.1}}),
        ("occ", "occlusion", {"window": 8, "stride": 4}),
        ("rise", "rise", {"n": 40, "cells": 2}),
    ]
    maps = [
        Explainer(loaded, methods, scorer=scorer).explain(x, image_ids=["a", "b"]).layer_maps
        for scorer in (Scorer(loaded.model, chunk=1), Scorer(loaded.model, chunk=None, pass_budget=10**12))
    ]
    for name in maps[0]:
        torch.testing.assert_close(maps[0][name], maps[1][name], rtol=1e-5, atol=1e-6)
