"""What the sanity-check tests share: the tiny model with weights moved off their initialisation."""

from __future__ import annotations

import pytest
import torch

from camexp.config import ModelConfig
from camexp.models import LoadedModel, build_model

TINY = {"name": "test_efficientnet", "weights": "random"}  # layer bn2, 160 x 160 input


@pytest.fixture(scope="session")
def tiny() -> LoadedModel:
    """test_efficientnet with every weight and statistic moved off its initial value (a stand-in for training:
    at init its batch norms equal their reset, which would hide a randomised one)."""
    torch.manual_seed(3)
    loaded = build_model(ModelConfig(**TINY))
    with torch.no_grad():
        for v in loaded.model.net.state_dict().values():
            if v.is_floating_point():
                v.add_(0.2 * torch.rand_like(v))
    return loaded
