"""ADCC (Poppi et al., CVPR-W 2021): the paper's formula by hand, coherency / complexity / average drop on a
tiny explainer, one re-explanation per method and batch, real Lite0 maps against scipy's Pearson
correlation and the records' own average drop (docs/guide/field-metrics.md, "ADCC")."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from camexp.config import ExperimentConfig
from camexp.explain.scoring import Scorer
from camexp.metrics import METRICS, validate_settings
from camexp.metrics.adcc import adcc_score, pearson
from camexp.metrics.batch import BatchContext
from camexp.models import PixelModel
from tests.metrics.test_metric_contract import _config, _run
from tests.metrics.test_perturbation import toy_batch


def test_the_papers_formula_by_hand() -> None:
    """Poppi et al. eq. 7: ADCC(x) = 3 (1/Coherency(x) + 1/(1 - Complexity(x)) + 1/(1 - AverageDrop(x)))^-1.
    Coherency 0.8, complexity 0.25, drop 0.5: 3 / (1.25 + 4/3 + 2) = 3 / (55/12) = 36/55. The authors'
    released metrics/adcc.py computes 3 * (1.25 + 4/3 + 2) = 13.75 instead (not a score in [0,1])."""
    got = adcc_score(*(torch.tensor([v], dtype=torch.float64) for v in (0.8, 0.25, 0.5)))
    assert got.item() == pytest.approx(36 / 55, rel=1e-12)
    perfect = adcc_score(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    assert perfect.item() == 1.0
    assert adcc_score(torch.tensor([0.9]), torch.tensor([0.1]), torch.tensor([1.0])).item() == 0.0  # a zero term


def test_pearson_by_hand() -> None:
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    assert pearson(a, 2 * a + 1).item() == pytest.approx(1.0)
    assert pearson(a, -a).item() == pytest.approx(-1.0)
    b = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # centred a = [-1.5, -.5, .5, 1.5], b = [.5, -.5, -.5, .5]: cov 0
    assert pearson(a, b).item() == pytest.approx(0.0, abs=1e-15)
    assert math.isnan(pearson(a, torch.zeros(1, 2, 2)).item())  # a constant map has no correlation


class ChannelExplainer:
    """A fake explainer of one method `m` on 2x2 images: the map of image E is its channel 0, min-max
    normalised; the logits are [sum of E's channel 0, 0]. Calls are recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, torch.Tensor]] = []
        self.scorer = SimpleNamespace(model=SimpleNamespace(mean=torch.zeros(1, 3, 1, 1)))

    def only(self, name: str) -> ChannelExplainer:
        self.calls.append((name, torch.empty(0)))
        return self

    def explain(self, x: torch.Tensor, targets: torch.Tensor, ids: list[str] | None = None) -> Any:
        self.calls.append(("explain", x.clone()))
        c = x[:, 0]
        lo, hi = c.amin((1, 2), keepdim=True), c.amax((1, 2), keepdim=True)
        logits = torch.stack([c.sum((1, 2)), torch.zeros(len(x))], 1)
        return SimpleNamespace(maps={"m": (c - lo) / (hi - lo)}, logits=logits, targets=targets)


def test_by_hand_on_a_tiny_explainer() -> None:
    """Image channel 0 = [[1, 2], [3, 4]] / 4, map L = [[0, 1/3], [2/3, 1]] (its own normalisation), so E = L * I
    has channel 0 [[0, 1/6], [1/2, 1]]: the re-explained map is that over 1, Pearson computed by hand from
    the centred vectors; complexity = mean L = 1/2; Y = softmax([2.5, 0])_0, O = softmax([5/3, 0])_0."""
    x = torch.zeros(2, 3, 2, 2)
    x[:, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]]) / 4  # the same image twice: one call re-explains both
    explainer = ChannelExplainer()
    ex = explainer.explain(x, torch.tensor([0, 0]))
    explainer.calls.clear()
    cfg = ExperimentConfig(name="a", dataset={"root": "."}, model={"name": "toy"}, methods=["m"], metrics=["adcc"])
    batch = BatchContext(cfg, explainer, x, ex, {"image_id": ["i", "j"]}, validate_settings(cfg))
    both = {v.metric: v.value.tolist() for v in METRICS.get("adcc").compute(batch)}
    assert all(a == b for a, b in both.values())
    got = {k: v[0] for k, v in both.items()}
    assert [name for name, _ in explainer.calls] == ["m", "explain"] and len(explainer.calls[1][1]) == 2
    torch.testing.assert_close(explainer.calls[1][1][0, 0], torch.tensor([[0.0, 1 / 6], [1 / 2, 1.0]]))
    la = np.array([0, 1 / 3, 2 / 3, 1]) - 0.5
    le = np.array([0, 1 / 6, 1 / 2, 1]) - 5 / 12
    r = (la * le).sum() / math.sqrt((la**2).sum() * (le**2).sum())
    y, o = 1 / (1 + math.exp(-2.5)), 1 / (1 + math.exp(-5 / 3))
    drop = (y - o) / y
    assert got["adcc_coherency"] == pytest.approx((r + 1) / 2, rel=1e-6)
    assert got["adcc_complexity"] == pytest.approx(0.5, rel=1e-6)
    assert got["adcc_avg_drop"] == pytest.approx(drop, rel=1e-6)
    expected = 3 / (2 / (r + 1) + 1 / 0.5 + 1 / (1 - drop))
    assert got["adcc"] == pytest.approx(expected, rel=1e-6)


def test_normalized_occlusion_masks_the_normalised_tensor() -> None:
    """With `occlusion: normalized` E's normalised tensor is L * normalize(I) (the authors' code masks the
    normalised tensor): the pixel image handed to the explainer normalises back to exactly that."""
    batch = toy_batch(occlusion="normalized")
    model: PixelModel = batch.scorer.model
    from camexp.metrics.adcc import explanation_images

    maps = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(0))
    e = explanation_images(batch, maps)
    torch.testing.assert_close(model.normalize(e), maps[:, None] * model.normalize(batch.x))


def test_settings_under_adcc_are_refused_in_one_line(tmp_path: Path, photo_dir: Path) -> None:
    res = _run(_config(tmp_path, photo_dir, "bad", metrics=["adcc"], settings={"adcc": {"x": 1}}))
    assert res.exit_code == 2 and "settings.adcc: no metric or analysis reads settings under 'adcc'" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output


LITE0: dict[str, Any] = dict(
    model={"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"},
    methods=["gradcam", "gradcam++"],
    metrics=["avg_drop", "adcc"],
)


@pytest.mark.slow
def test_real_maps_against_scipy_and_the_records(tmp_path: Path, photo_dir: Path, lite0) -> None:
    """A run (Lite0, Grad-CAM and Grad-CAM++, 4 photographs): ADCC's average drop is the records' own
    max(0, Y - O) / Y to 1e-5; coherency is scipy.stats.pearsonr (the authors' call) of the run's map and
    the map of E re-explained by the explainer, rescaled (r + 1) / 2; ADCC the paper's formula of the three."""
    from camexp.data import build_dataset, collate
    from camexp.explain.core import Explainer

    res = _run(_config(tmp_path, photo_dir, "adcc", **LITE0))
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "adcc"
    per = pd.read_csv(out / "per_image_metrics.csv").pivot_table("value", ["image_id", "method"], "metric")
    rec = pd.read_csv(out / "per_image.csv").set_index(["image_id", "method"])
    drop = ((rec.y - rec.o).clip(lower=0) / rec.y).reindex(per.index)
    np.testing.assert_allclose(per["adcc_avg_drop"], drop, atol=1e-5)
    np.testing.assert_allclose(
        per["adcc"],
        3 / (1 / per.adcc_coherency + 1 / (1 - per.adcc_complexity) + 1 / (1 - per.adcc_avg_drop)),
        rtol=1e-12,
    )

    ds = build_dataset(
        ExperimentConfig(name="a", dataset={"root": str(photo_dir), "limit": 4}, **LITE0).dataset, lite0.spec
    )
    x = collate([ds[i] for i in range(len(ds))])["image"]
    ids = [it.image_id for it in ds.items]
    explainer = Explainer(lite0, ["gradcam++"], scorer=Scorer(lite0.model))
    ex = explainer.explain(x, None, ids)
    again = explainer.explain(ex.maps["gradcam++"][:, None] * x, ex.targets, ids)
    for i, image in enumerate(ids):
        r, _ = stats.pearsonr(ex.maps["gradcam++"][i].flatten().numpy(), again.maps["gradcam++"][i].flatten().numpy())
        assert per.loc[(image, "gradcam++"), "adcc_coherency"] == pytest.approx((r + 1) / 2, abs=1e-5)
        assert per.loc[(image, "gradcam++"), "adcc_complexity"] == pytest.approx(
            float(ex.maps["gradcam++"][i].abs().sum()) / (224 * 224), abs=1e-6
        )
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert {"ADCC % (higher is better)", "ADCC coherency % (higher is better)"} <= set(summary.index)
