"""The small random-weights timm model and images the explain tests share."""

from __future__ import annotations

import pytest
import torch

from camexp.config import ModelConfig
from camexp.models import build_model

SIZE = 64  # test_convnext is fully convolutional: 64x64 inputs give 2x2 maps of 64 channels


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(ModelConfig(name="test_convnext", weights="random"))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
