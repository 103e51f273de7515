"""Faithfulness correlation (Bhatt et al. 2020): Pearson by hand on the toy model, seeded subsets, the settings
check, and Quantus 0.6's FaithfulnessCorrelation on real Lite0 maps with the same pixel subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from camexp.errors import CamexpError
from camexp.metrics import METRICS, metric_problems, settings_of
from camexp.metrics.correlation import KEY, correlations, random_subsets, subset_drops
from camexp.metrics.perturbation import substrate
from scripts.bench.criteria import PixelFeatures, zero_at
from tests.metrics.test_perturbation import MAP, toy_batch


def test_pearson_by_hand_on_the_toy_model() -> None:
    """SumNet's logit is sum(channel 0) / 68 - 1 and the pixel-space image holds (k + 1) / 16 (normalised: k + 1),
    so replacing subset S by 0 drops the logit by sum_{k in S} (k + 1) / 68: the drop is exact, and the value
    is numpy's Pearson correlation of the map's sums over the subsets with those drops."""
    batch = toy_batch(settings={KEY: {"subsets": 6, "subset_size": 3}}, perturbation={"score": "logit"})
    batch.batch["image_id"] = ["toy"]
    (out,) = METRICS.get(KEY).compute(batch)
    subsets = random_subsets(batch.cfg.runtime.seed, "toy", 6, 3, 16)
    drops = np.array([(s + 1).sum() / 68 for s in subsets.numpy()])
    sums = np.array([MAP.flatten()[s].sum() for s in subsets.numpy()])
    assert float(out.value[0]) == pytest.approx(np.corrcoef(sums, drops)[0, 1], abs=1e-6)
    # the drops themselves, and a constant map (no variation of its sums): NaN
    measured = subset_drops(batch, subsets[None], substrate(batch, "zero"))[0].numpy()
    np.testing.assert_allclose(measured, drops, atol=1e-6)
    assert torch.isnan(correlations(torch.ones(1, 1, 16), subsets[None], torch.tensor(drops)[None])).all()


def test_subsets_are_seeded_per_image_and_distinct() -> None:
    a = random_subsets(0, "img-1", 5, 10, 100)
    assert a.equal(random_subsets(0, "img-1", 5, 10, 100)) and not a.equal(random_subsets(0, "img-2", 5, 10, 100))
    assert all(len(set(s.tolist())) == 10 for s in a) and int(a.max()) < 100


def test_settings_errors_are_one_line() -> None:
    batch = toy_batch(settings={KEY: {"subset_size": 16}})
    assert metric_problems(batch.cfg.model_copy(update={"metrics": [KEY]}), (4, 4)) == [
        f"settings.{KEY}.subset_size: 16 pixels leave none of the model's 4x4 input (16 pixels) unchanged; "
        "use fewer than 16"
    ]
    with pytest.raises(CamexpError, match=rf"settings\.{KEY}\.subsets: Input should be greater than or equal to 2"):
        settings_of(toy_batch(settings={KEY: {"subsets": 1}}).cfg, KEY)


@pytest.mark.slow
def test_equal_to_quantus_on_real_lite0_maps(photo_dir: Path, lite0) -> None:
    """Quantus' FaithfulnessCorrelation (softmax, Pearson, no abs; its normalise_by_max leaves our maps, whose
    maximum is 1, as they are) with pixel features (`PixelFeatures`) and the zero baseline draws its subsets from
    np.random; the same draws given to ours give the same values to 1e-5. Quantus is set up as `make bench`'s
    `--criteria` sets it up (scripts/bench/criteria.py), so the timed peer computes what camexp computes."""
    quantus = pytest.importorskip("quantus")
    from camexp.config import ExperimentConfig
    from camexp.data import build_dataset, collate
    from camexp.explain.core import Explainer
    from camexp.explain.scoring import Scorer
    from camexp.metrics import validate_settings
    from camexp.metrics.batch import BatchContext

    runs, size = 12, 2000
    cfg = ExperimentConfig(
        name="fc",
        dataset={"root": str(photo_dir), "limit": 2},
        model={"name": "tf_efficientnet_lite0"},
        methods=["gradcam", "gradcam++"],
        metrics=[KEY],
    )
    ds = build_dataset(cfg.dataset, lite0.spec)
    x = collate([ds[i] for i in range(len(ds))])["image"]
    explainer = Explainer(lite0, cfg.methods, scorer=Scorer(lite0.model, chunk=8))
    ex = explainer.explain(x)
    batch = BatchContext(cfg, explainer, x, ex, {}, validate_settings(cfg))
    xn = batch.normalized()
    b, pixels = len(x), xn.shape[-2] * xn.shape[-1]
    np.random.seed(3)
    draws = [[np.random.choice(pixels, size, replace=False) for _ in range(b)] for _ in range(runs)]
    subsets = torch.from_numpy(np.array(draws).transpose(1, 0, 2))  # (B, R, S)
    drops = subset_drops(batch, subsets, substrate(batch, "zero"))
    ours = correlations(torch.stack([ex.maps[m].flatten(1) for m in cfg.methods]), subsets, drops)
    net = PixelFeatures(lite0.model.net, xn).eval()
    for j, m in enumerate(cfg.methods):
        np.random.seed(3)
        theirs = quantus.FaithfulnessCorrelation(
            nr_runs=runs,
            subset_size=size,
            perturb_func=zero_at,
            abs=False,
            return_aggregate=False,
            disable_warnings=True,
        )(
            model=net,
            x_batch=np.ones((b, 1, *xn.shape[-2:]), dtype=np.float32),
            y_batch=ex.targets.numpy(),
            a_batch=ex.maps[m][:, None].numpy(),
            softmax=True,
            device="cpu",
        )
        np.testing.assert_allclose(ours[j].numpy(), np.asarray(theirs), atol=1e-5)
