"""Infidelity (Yeh et al. 2019): by hand on the toy model (its logit is linear in the pixels, so every drop is
known), the optimal scaling, and Captum's `infidelity` on real Lite0 maps with the same perturbations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from camexp.metrics import METRICS
from camexp.metrics.infidelity import infidelity_values, perturbation
from tests.metrics.test_perturbation import MAP, toy_batch


@pytest.mark.parametrize("scaled", [False, True])
def test_by_hand_on_the_toy_model(scaled: bool) -> None:
    """SumNet's logit is sum(channel 0 of the normalised image) / 68 - 1: removing I drops it by sum(I_0) / 68.
    Iᵀ Φ = Σ_hw MAP_hw Σ_c I_chw. Unscaled: the mean of (dot - drop)²; scaled: β = Σ dot·drop / Σ dot² first."""
    batch = toy_batch(
        settings={"infidelity": {"samples": 5, "noise": 0.3, "scaled": scaled}}, perturbation={"score": "logit"}
    )
    batch.batch["image_id"] = ["toy"]
    (out,) = METRICS.get("infidelity").compute(batch)
    draws = [perturbation(batch.cfg.runtime.seed, "toy", d, (3, 4, 4), 0.3).double().numpy() for d in range(5)]
    drops = np.array([i[0].sum() / 68 for i in draws])
    dots = np.array([(MAP.double().numpy() * i.sum(0)).sum() for i in draws])
    if scaled:
        dots = dots * (dots @ drops) / (dots @ dots)
    assert float(out.value[0]) == pytest.approx(np.mean((dots - drops) ** 2), rel=1e-5, abs=1e-9)


def test_optimal_scaling_of_a_perfect_map_is_zero_and_of_a_zero_map_the_drops() -> None:
    drops = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    assert infidelity_values(3.0 * drops, drops, True).item() == pytest.approx(0.0, abs=1e-15)
    assert infidelity_values(3.0 * drops, drops, False).item() == pytest.approx(4 * (0.25 + 1 + 4) / 3)
    assert infidelity_values(torch.zeros_like(drops), drops, True).item() == pytest.approx((0.25 + 1 + 4) / 3)


@pytest.mark.slow
def test_equal_to_captum_on_real_lite0_maps(photo_dir: Path, lite0) -> None:
    """Captum 0.9's `infidelity` (normalize=True: Yeh et al.'s optimal β; and False) with a perturb function that
    returns our draws, the softmax of Lite0 on the normalised images and the maps broadcast to the channels,
    equals ours to 1e-5."""
    from captum.metrics import infidelity as captum_infidelity

    from camexp.config import ExperimentConfig
    from camexp.data import build_dataset, collate
    from camexp.explain.core import Explainer
    from camexp.explain.scoring import Scorer
    from camexp.metrics import validate_settings
    from camexp.metrics.batch import BatchContext

    samples = 6

    def config(scaled: bool) -> ExperimentConfig:
        return ExperimentConfig(
            name="infd",
            dataset={"root": str(photo_dir), "limit": 2},
            model={"name": "tf_efficientnet_lite0"},
            methods=["gradcam", "gradcam++"],
            metrics=["infidelity"],
            settings={"infidelity": {"samples": samples, "scaled": scaled}},
        )

    cfg = config(True)
    ds = build_dataset(cfg.dataset, lite0.spec)
    x = collate([ds[i] for i in range(len(ds))])["image"]
    explainer = Explainer(lite0, cfg.methods, scorer=Scorer(lite0.model, chunk=16))
    ex = explainer.explain(x)
    xn = lite0.model.normalize(x).float()
    keys = BatchContext(cfg, explainer, x, ex, {}, validate_settings(cfg)).image_keys()
    draws = torch.stack(
        [perturbation(cfg.runtime.seed, k, d, tuple(xn.shape[1:]), 0.1) for k in keys for d in range(samples)]
    )

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return draws, inputs - draws  # Captum repeats each input `samples` times, in image order

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(lite0.model.net(inputs), 1)

    for scaled in (True, False):
        cfg = config(scaled)
        batch = BatchContext(cfg, explainer, x, ex, {}, validate_settings(cfg))
        ours = {v.method: v.value.numpy() for v in METRICS.get("infidelity").compute(batch)}
        for m in cfg.methods:
            attributions = ex.maps[m][:, None].expand(-1, 3, -1, -1)
            with torch.no_grad():
                theirs = captum_infidelity(
                    forward, perturb, xn, attributions, target=ex.targets, n_perturb_samples=samples, normalize=scaled
                )
            np.testing.assert_allclose(ours[m], theirs.double().numpy(), rtol=1e-5, atol=1e-9)
