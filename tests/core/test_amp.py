"""runtime.amp: reduced precision in the explanation forward only; targets and maps stay float32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from camexp.config import DatasetConfig, ExperimentConfig, ModelConfig, RuntimeConfig
from camexp.data import build_dataset
from camexp.explain.core import Explainer
from camexp.explain.scoring import Scorer
from camexp.models import build_model

METHODS = ["gradcam", "gradcam+", "gradcam++"]


def _cfg(amp: str) -> ExperimentConfig:
    return ExperimentConfig(
        name="amp", dataset=DatasetConfig(root="."), model=ModelConfig(name="resnet18"), runtime=RuntimeConfig(amp=amp)
    )


def test_amp_is_part_of_the_fingerprint_batch_size_is_not():
    assert len({_cfg(a).fingerprint() for a in ("off", "bf16", "fp16")}) == 3
    off = _cfg("off")
    assert off.fingerprint() == off.model_copy(update={"runtime": RuntimeConfig(batch_size=3)}).fingerprint()
    with pytest.raises(ValidationError):
        RuntimeConfig(amp="fp8")


@pytest.mark.slow
def test_bf16_autocast_on_cpu_touches_only_the_explanation_forward(ilsvrc_images: Path):
    """Targets and maps come from the float32 pass; O moves by bf16 rounding only."""
    loaded = build_model(ModelConfig(name="tf_efficientnet_lite0", weights="efficientnet-lite0-package"))
    ds = build_dataset(DatasetConfig(root=ilsvrc_images, limit=16), loaded.spec)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    ex = Explainer(loaded, METHODS).explain(x)
    full = Scorer(loaded.model).explanations(x, ex.maps, ex.targets)
    half = Scorer(loaded.model, amp="bf16").explanations(x, ex.maps, ex.targets)
    assert half.dtype == torch.float64 and half.shape == (len(ds), len(METHODS))
    # measured: median 5e-3 to 1.1e-2 by the CPU's bf16 kernels (AVX2 vs AMX-BF16), max 0.12-0.13
    # (docs/guide/speed-gpu.md); the bound is five times bf16's unit roundoff, 2^-8
    assert (half - full).abs().median() < 5 * 2**-8
    assert not torch.equal(half, full)  # autocast really ran
