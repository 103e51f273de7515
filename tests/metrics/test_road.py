"""ROAD: the imputation solved by hand on tiny images, the removal masks, the metric on the toy model, and
(slow) pytorch-grad-cam's imputer and ROADCombined on real photographs and the same maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from camexp.metrics import METRICS
from camexp.metrics.road import NEIGHBOURS, impute, removed_counts, removed_masks
from tests.metrics.test_perturbation import MAP, RANKED, toy_batch

ROAD = NEIGHBOURS["road"]


def test_one_pixel_is_the_weighted_mean_of_its_neighbours() -> None:
    img = np.arange(9, dtype=np.float64).reshape(1, 3, 3)
    removed = np.zeros((3, 3), dtype=bool)
    removed[1, 1] = True
    edges, corners = 1 + 3 + 5 + 7, 0 + 2 + 6 + 8
    out = impute(img, removed, ROAD)
    assert out[0, 1, 1] == pytest.approx(edges / 6 + corners / 12)
    assert np.array_equal(np.delete(out.ravel(), 4), np.delete(img.ravel(), 4))  # known pixels untouched
    assert impute(img, removed, NEIGHBOURS["uniform"])[0, 1, 1] == pytest.approx((edges + corners) / 8)


def test_two_coupled_pixels_solved_by_hand() -> None:
    # 1x3 image [a, ?, ?]: only left/right neighbours exist (edge weights), renormalised at the border:
    # u = (a + v) / 2, v = u  ->  u = v = a
    img = np.array([[[4.0, 0.0, 0.0]]])
    removed = np.array([[False, True, True]])
    assert impute(img, removed, ROAD)[0, 0].tolist() == pytest.approx([4.0, 4.0, 4.0])
    # 1x4 image [a, ?, ?, b]: u = (a + v) / 2, v = (u + b) / 2 -> u = (2a + b) / 3, v = (a + 2b) / 3
    img = np.array([[[3.0, 0.0, 0.0, 9.0]]])
    out = impute(img, np.array([[False, True, True, False]]), ROAD)[0, 0]
    assert out.tolist() == pytest.approx([3.0, 5.0, 7.0, 9.0])


def test_morf_and_lerf_masks() -> None:
    ranks = np.array([2, 0, 3, 1, 4])
    morf, lerf = removed_masks(ranks, 2)
    assert morf.tolist() == [False, True, False, True, False] and lerf.tolist() == [False, False, True, False, True]


def test_road_on_the_toy_model_without_noise() -> None:
    # 16 pixels, p = 25 % and 50 %: n = 4 and 8 pixels removed; the imputed values enter a model that sums
    # channel 0, so the expected scores come from imputing by hand with `impute` on the same masks
    batch = toy_batch(road={"percentiles": [25, 50], "noise": 0.0}, perturbation={"score": "logit"})
    out = {v.metric: float(v.value[0]) for v in METRICS.get("road").compute(batch)}
    xn = batch.normalized()[0].double().numpy()
    ranks = np.argsort(RANKED)

    def score(removed: np.ndarray) -> float:
        return impute(xn, removed.reshape(4, 4), ROAD)[0].sum() / 68 - 1

    morf = [score(removed_masks(ranks, n)[0]) for n in (4, 8)]
    lerf = [score(removed_masks(ranks, n)[1]) for n in (4, 8)]
    assert out["road_morf"] == pytest.approx(np.mean(morf), abs=1e-5)
    assert out["road_lerf"] == pytest.approx(np.mean(lerf), abs=1e-5)
    assert out["road"] == pytest.approx((np.mean(lerf) - np.mean(morf)) / 2, abs=1e-5)


def test_noise_is_seeded_per_image_not_per_batch() -> None:
    a = toy_batch(road={"percentiles": [50]})
    b = toy_batch(road={"percentiles": [50]})
    va = [float(v.value[0]) for v in METRICS.get("road").compute(a)]
    vb = [float(v.value[0]) for v in METRICS.get("road").compute(b)]
    quiet = [float(v.value[0]) for v in METRICS.get("road").compute(toy_batch(road={"percentiles": [50], "noise": 0}))]
    assert va == vb and va != quiet


@pytest.mark.slow
def test_pytorch_grad_cam_road_on_the_same_maps(photo_dir: Path, lite0) -> None:
    """pytorch-grad-cam's NoisyLinearImputer is the ROAD authors' code: same system, float32. Its
    ROADCombined thresholds the map at np.percentile (ties kept or removed together) where we rank
    pixels, so the removed sets can differ by a few pixels; report the deviation."""
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        AveragerAcrossThresholds,
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from camexp.config import ExperimentConfig
    from camexp.data import build_dataset, collate
    from camexp.explain.core import Explainer
    from camexp.explain.scoring import Scorer
    from camexp.metrics import validate_settings
    from camexp.metrics.batch import BatchContext

    cfg = ExperimentConfig(
        name="road",
        dataset={"root": str(photo_dir), "limit": 2},
        model={"name": "tf_efficientnet_lite0"},
        methods=["gradcam++"],
        metrics=["road"],
        road={"noise": 0.0, "percentiles": [20, 50, 80]},
    )
    ds = build_dataset(cfg.dataset, lite0.spec)
    x = collate([ds[i] for i in range(len(ds))])["image"]
    explainer = Explainer(lite0, ["gradcam++"], scorer=Scorer(lite0.model, chunk=8))
    ex = explainer.explain(x)
    xn = lite0.model.normalize(x)
    maps = ex.maps["gradcam++"]

    # the imputer alone, on our MoRF mask at 50 %: the same linear system
    removed = removed_masks(torch.argsort(torch.argsort(-maps[0].flatten(), stable=True)).numpy(), 224 * 224 // 2)[0]
    theirs = NoisyLinearImputer(noise=0.0)(xn[0], torch.from_numpy(~removed.reshape(224, 224)).float())
    ours = impute(xn[0].double().numpy(), removed.reshape(224, 224), ROAD)
    imputer_deviation = float(np.abs(theirs.numpy() - ours).max())

    batch = BatchContext(cfg, explainer, x, ex, {}, validate_settings(cfg))
    combined = [float(v) for v in next(v for v in METRICS.get("road").compute(batch) if v.metric == "road").value]
    quiet = NoisyLinearImputer(noise=0.0)

    def curve(remove):
        return AveragerAcrossThresholds(lambda p: PerturbationConfidenceMetric(remove(p, quiet)), [20, 50, 80])

    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in ex.targets]
    with torch.no_grad():
        morf = curve(RemoveMostRelevantFirst)(xn, maps.numpy(), targets, lite0.model.net)
        lerf = curve(RemoveLeastRelevantFirst)(xn, maps.numpy(), targets, lite0.model.net)
    pgc = (lerf - morf) / 2
    road_deviation = float(np.abs(np.array(combined) - pgc).max())
    print(
        f"pytorch-grad-cam vs camexp: imputer max |diff| {imputer_deviation:.2e}; ROAD combined per image "
        f"{combined} vs {pgc.tolist()}, max |diff| {road_deviation:.2e}"
    )
    assert imputer_deviation < 1e-5
    assert road_deviation < 0.05


def test_noise_follows_the_method_name_not_its_place_in_the_list() -> None:
    """Two methods listed in either order: each method's ROAD values are the same (the noise is seeded by
    (seed, image id, method name, curve, p), not by the method's position)."""
    other = torch.flip(MAP, (0,))[None]

    def values(order: list[str]) -> dict[tuple[str, str], float]:
        batch = toy_batch(road={"percentiles": [50]})
        batch.batch["image_id"] = ["img-0"]
        batch.explanation.maps = {m: MAP[None] if m == "a" else other for m in order}
        return {(v.method, v.metric): float(v.value[0]) for v in METRICS.get("road").compute(batch)}

    assert values(["a", "b"]) == values(["b", "a"])


def test_removed_counts_truncate_as_the_road_authors_code() -> None:
    """Rong et al.'s released code (road/imputed_dataset.py) cuts the descending order at int(H*W*q): MoRF
    removes the first int(H*W*p) pixels; LeRF at p % removed keeps the first int(H*W*(1 - p)) and removes the
    rest. Their float expression, written out here, against ours on a 224 x 224 input for every p."""
    pixels = 224 * 224
    for p in range(1, 100):
        assert removed_counts(pixels, p) == (int(pixels * (p / 100)), pixels - int(pixels * (1 - p / 100))), p
    # rounding would remove one pixel more at 10, 30, 60 and 80 % (5017.6 -> 5018 ...): truncation does not
    assert removed_counts(pixels, 10) == (5017, 5018)
