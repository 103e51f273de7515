"""The sanity checks beside Quantus 0.6 (quantus.MPRT, quantus.RandomLogit) on the same model, images and maps.

Where the two are configured alike and define the same thing (Spearman on the same pair of maps, SSIM of the
same 2-D maps, Quantus' off-class draw replicated), the numbers are asserted equal. Where the definitions
differ (docs/guide/trustworthiness.md, "Sanity checks": Quantus resets every module with `reset_parameters` under one
seed, we reset blocks to the model's own initial weights; Quantus' SSIM runs on the flattened maps) the deviation is
recorded with record_property, never asserted."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from camexp.analyses.sanity import EFFICIENT_COLUMNS, EFFICIENT_CSV, MODES, MPRT_COLUMNS, Mprt, sanity_settings
from camexp.analyses.similarity import spearman, ssim
from camexp.config import ExperimentConfig
from camexp.explain.core import Explainer
from camexp.metrics import validate_settings
from camexp.metrics.batch import BatchContext
from camexp.models import LoadedModel, build_model
from camexp.results import read_records

quantus = pytest.importorskip("quantus")
from quantus.functions.similarity_func import correlation_spearman  # noqa: E402
from quantus.functions.similarity_func import ssim as quantus_ssim  # noqa: E402

METHODS = ["gradcam", "eigencam"]
TINY = {"name": "test_efficientnet", "weights": "random"}
LITE0 = {"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"}


@pytest.fixture(scope="module")
def images(lite0: LoadedModel, photo_dir: Path) -> torch.Tensor:
    from camexp.data import PixelTransform
    from camexp.data.images import load_rgb

    t = PixelTransform(lite0.spec)
    return torch.stack([t(load_rgb(photo_dir / n))[0] for n in ("chelsea.png", "coffee.png")])


def offsets(maps: np.ndarray) -> np.ndarray:
    """1, 2, ... per image of a (B,1,H,W) batch."""
    return np.arange(1.0, len(maps) + 1)[:, None, None, None]


def explain_func(
    loaded: LoadedModel, method: str, seen: list[np.ndarray] | None = None, offset: bool = False
) -> Callable[..., np.ndarray]:
    """Quantus' explain_func: our method's normalised maps (B,1,H,W) of the model Quantus hands over (its
    weights copied into `loaded`, so its randomised copies are explained by our explainer); `seen` collects them.
    `offset`: image i's map plus i + 1 (`offsets`), which changes no Spearman and keeps Quantus from stopping on a
    batch whose maps all hold one value (constant maps are zeros once normalised)."""

    def explain(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: object) -> np.ndarray:
        loaded.model.load_state_dict(model.state_dict())
        ex = Explainer(loaded, [method]).explain(torch.as_tensor(inputs), torch.as_tensor(targets).long())
        maps = ex.maps[method][:, None].double().numpy()
        maps = maps + offsets(maps) if offset else maps
        if seen is not None:
            seen.append(maps)
        return maps

    return explain


def test_random_logit_beside_quantus(lite0: LoadedModel, images: torch.Tensor, record_property) -> None:
    ex = Explainer(lite0, METHODS).explain(images)
    y = ex.targets.numpy()
    np.random.seed(42)  # Quantus' draw of the off-classes (RandomLogit.evaluate_batch), replicated
    classes = np.stack([np.arange(1000)] * len(y))
    mask = np.ones_like(classes, dtype=bool)
    mask[np.arange(len(y)), y] = False
    off = classes[mask].reshape(len(y), -1)[np.arange(len(y)), np.random.randint(0, 999, len(y))]
    work = copy.deepcopy(lite0)
    other = Explainer(lite0, METHODS).explain(images, torch.as_tensor(off))
    for m in METHODS:
        a = ex.maps[m].double().numpy()
        b = other.maps[m].double().numpy()
        ours_rho = [spearman(p, q) for p, q in zip(a, b)]
        # the same model, images, targets and maps for both of Quantus' similarity functions
        batch = dict(
            model=work.model,
            x_batch=images.numpy(),
            y_batch=y,
            a_batch=a[:, None],
            explain_func=explain_func(work, m),
            channel_first=True,
            device="cpu",
        )
        settings = dict(num_classes=1000, seed=42, abs=False, normalise=False, disable_warnings=True)
        theirs_rho = quantus.RandomLogit(similarity_func=correlation_spearman, **settings)(**batch)
        assert np.allclose(ours_rho, theirs_rho, atol=1e-9), m  # same classes, same maps, same definition
        ours_ssim = [ssim(p, q) for p, q in zip(a, b)]
        assert np.allclose(ours_ssim, [quantus_ssim(p, q) for p, q in zip(a, b)], atol=1e-12)  # 2-D: the same
        theirs_ssim = quantus.RandomLogit(**settings)(**batch)  # its default: SSIM of the flattened maps
        record_property(f"{m}_ssim_ours_2d", [round(v, 4) for v in ours_ssim])
        record_property(f"{m}_ssim_quantus_flattened", [round(float(v), 4) for v in theirs_ssim])
        if m == "eigencam":  # the control: class-agnostic, so 1 by either definition
            assert np.allclose(theirs_ssim, 1.0, atol=1e-6) and np.allclose(ours_rho, 1.0, atol=1e-6)


def our_mprt(
    lite0: LoadedModel, images: torch.Tensor, tmp_path: Path, methods: list[str], sanity: dict, model: dict = LITE0
) -> tuple[ExperimentConfig, Any, pd.DataFrame]:
    """Our `mprt` on `images` (ids a, b) with `sanity` settings: (config, the trained model's explanation, the rows
    of the mode's CSV)."""
    cfg = ExperimentConfig.model_validate(
        {"name": "p", "dataset": {"root": "."}, "model": model, "methods": methods, "sanity": sanity}
    )
    explainer = Explainer(lite0, methods)
    ex = explainer.explain(images)
    batch = {"index": torch.arange(2), "image_id": ["a", "b"]}
    Mprt(cfg).update(
        BatchContext(cfg, explainer, images, ex, batch, validate_settings(cfg), own=lambda n: tmp_path / n)
    )
    mode = sanity_settings(cfg).mprt_mode
    if mode == "efficient":
        return cfg, ex, read_records(tmp_path / EFFICIENT_CSV, EFFICIENT_COLUMNS)
    return cfg, ex, read_records(tmp_path / MODES[mode].csv, MPRT_COLUMNS)


def on_batch(metric: Any, model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, a_batch, explain):
    """Quantus' randomisation `metric` on our images, targets and maps (B,1,H,W) (None: it explains them itself),
    our explainer as its explain function, both images in one batch on the CPU."""
    return metric(
        model=model,
        x_batch=images.numpy(),
        y_batch=targets.numpy(),
        a_batch=a_batch,
        explain_func=explain,
        channel_first=True,
        device="cpu",
        batch_size=2,
    )


def quantus_mprt(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, maps: np.ndarray, explain):
    """Quantus' MPRT (Spearman, top down, seed 42, only the fully randomised model, abs and normalise off)."""
    metric = quantus.MPRT(
        similarity_func=correlation_spearman,
        layer_order="top_down",
        seed=42,
        skip_layers=True,
        abs=False,
        normalise=False,
        disable_warnings=True,
    )
    return on_batch(metric, model, images, targets, maps[:, None], explain)


def test_mprt_beside_quantus(lite0: LoadedModel, images: torch.Tensor, tmp_path: Path, record_property) -> None:
    """Quantus' fully randomised model (every module's reset_parameters, top down, seed 42 + 1 before each) explained
    by our explainer gives, with its Spearman, the number our Spearman gives on the same maps; our own fully
    randomised model (each block at its constructor's weights) gives another, recorded beside it."""
    cfg, ex, rows = our_mprt(lite0, images, tmp_path, METHODS, {"mprt_blocks": ["conv_stem"]})
    assert (tmp_path / "mprt.csv").exists()  # the cascading mode's file, as before the modes
    ours = rows.set_index("method")
    work = build_model(cfg.model)
    user = copy.deepcopy(lite0.model)
    for m in METHODS:
        a = ex.maps[m].double().numpy()
        seen: list[np.ndarray] = []
        scores = quantus_mprt(user, images, ex.targets, a, explain_func(work, m, seen))
        last = list(scores)[-1]
        random_maps = seen[-1][:, 0]
        assert np.allclose(scores[last], [spearman(p, q) for p, q in zip(a, random_maps)], atol=1e-9, equal_nan=True)
        record_property(f"{m}_spearman_quantus_all_modules_reset", [round(float(v), 4) for v in scores[last]])
        record_property(f"{m}_spearman_ours_all_blocks_initial", [round(float(v), 4) for v in ours.loc[m, "spearman"]])


@pytest.mark.slow
def test_mprt_layers_reproduce_quantus(lite0: LoadedModel, images: torch.Tensor, tmp_path: Path) -> None:
    """Issue 30: with `sanity.mprt_units: layers` camexp randomises as Quantus 0.6's MPRT does (every module with
    reset_parameters, top down, the global RNG seeded before each: Quantus' seed 42 reseeds with 43), so the
    fully randomised model's Spearman of our maps equals Quantus' own number to 1e-5 (Quantus' `explain_func` is
    our explainer; its defaults abs and normalise off, as above)."""
    from camexp.models.blocks import reset_layers

    last = reset_layers(lite0.model.net)[-1].name
    sanity = {"mprt_units": "layers", "seed": 43, "mprt_blocks": [last]}
    cfg, ex, ours = our_mprt(lite0, images, tmp_path, ["gradcam"], sanity)
    assert ours["block"].unique().tolist() == [last]
    maps = ex.maps["gradcam"].double().numpy()
    scores = quantus_mprt(
        copy.deepcopy(lite0.model), images, ex.targets, maps, explain_func(build_model(cfg.model), "gradcam")
    )
    np.testing.assert_allclose(ours["spearman"].to_numpy(), scores[list(scores)[-1]], atol=1e-5)


# Issue 30: the other modes beside Quantus 0.6, on the tiny model (fast) and on Lite0 with two photographs (slow).
# Both randomise as Quantus does (`mprt_units: layers`; Quantus' seed 42 reseeds with 43), our explainer is
# Quantus' explain function, abs and normalise off.
CASES = ["tiny", pytest.param("lite0", marks=pytest.mark.slow)]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> tuple[LoadedModel, dict, torch.Tensor]:
    """(trained model, its config's model section, two images)."""
    if request.param == "tiny":
        x = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))
        return request.getfixturevalue("tiny"), TINY, x
    return request.getfixturevalue("lite0"), LITE0, request.getfixturevalue("images")


def test_independent_mode_reproduces_quantus(case, tmp_path: Path, record_property) -> None:
    """Quantus' MPRT with layer_order independent (each module alone reset, the others trained) gives, layer by
    layer, our independent mode's Spearman. Quantus' `return_average_correlation` also averages in the trained
    model's own similarity (its key `original` is skipped as `orig`): recorded beside our mean over the layers.
    Quantus stops the whole evaluation when a layer's maps of a batch all hold one value (on Lite0 and the two
    photographs a layer makes Grad-CAM's maps constant, zeros once normalised); the maps it is given are offset by
    1 and 2 per image, which changes no Spearman (a constant map's stays undefined in both)."""
    loaded, model, images = case
    sanity = {"mprt_units": "layers", "seed": 43, "mprt_mode": "independent"}
    cfg, ex, ours = our_mprt(loaded, images, tmp_path, ["gradcam"], sanity, model)
    metric = quantus.MPRT(
        similarity_func=correlation_spearman,
        layer_order="independent",
        seed=42,
        abs=False,
        normalise=False,
        disable_warnings=True,
    )
    maps = ex.maps["gradcam"].double().numpy()
    explain = explain_func(build_model(cfg.model), "gradcam", offset=True)
    a_batch = maps[:, None] + offsets(maps[:, None])
    scores = on_batch(metric, copy.deepcopy(loaded.model), images, ex.targets, a_batch, explain)
    theirs = {name.removeprefix("net."): v for name, v in scores.items() if name != "original"}
    mine = ours.groupby("block", sort=False)["spearman"].apply(list)
    assert sorted(theirs) == sorted(mine.index)
    # Lite0: one layer's (blocks.5.3.bn2) Spearman of one image differs by 2.5e-5, the rest agree to 1e-5: a
    # randomised model's maps have near-tied values whose ranks follow the order of float sums (docs: "Sanity checks")
    atol = 1e-5 if model is TINY else 5e-5
    for name, values in mine.items():
        np.testing.assert_allclose(values, theirs[name], atol=atol, err_msg=str(name))
    ours_mean = ours.groupby("index")["spearman"].mean().tolist()
    record_property(
        "quantus_average_with_original", [round(v, 4) for v in metric.recompute_average_correlation_per_sample()]
    )
    record_property("ours_mean_over_layers", [round(v, 4) for v in ours_mean])


def test_smooth_mode_reproduces_quantus(case, tmp_path: Path, monkeypatch, record_property) -> None:
    """Quantus' SmoothMPRT (top down, only the fully randomised model) draws the noise of n - 1 copies with
    np.random.randn and explains the last copy without noise; given our standard normal draws and, in place of
    its noise-free copy, our n-th noisy one (Hedström et al. average n noisy copies), its Spearman of the mean maps
    equals ours. SmoothMPRT calls `quantus.explain`, not the explain_func it is given, so our explainer stands in
    for `quantus.explain`; it returns the raw maps upsampled, which both average before comparing. Quantus as
    shipped (its last copy noise-free) is recorded beside."""
    from camexp.explain.maps import upsample
    from camexp.explain.model_methods import image_generators
    from camexp.models.blocks import reset_layers

    loaded, model, images = case
    n, noise = 3, 0.1
    last = reset_layers(loaded.model.net)[-1].name
    sanity = {"mprt_units": "layers", "seed": 43, "mprt_blocks": [last], "mprt_mode": "smooth"}
    cfg, ex, ours = our_mprt(loaded, images, tmp_path, ["gradcam"], {**sanity, "mprt_samples": n}, model)
    # our draws: copy s of image i is the s-th standard normal of its generator, seeded by (seed, image id)
    gens = image_generators(SimpleNamespace(x=images, image_ids=["a", "b"]), 43)
    z = [torch.stack([torch.randn(tuple(images.shape[1:]), generator=g) for g in gens]) for _ in range(n)]
    sigma = noise * (images.amax((1, 2, 3)) - images.amin((1, 2, 3))).view(-1, 1, 1, 1)
    work = build_model(cfg.model)

    def run(replace_clean: bool) -> list[float]:
        calls = {"randn": 0, "explain": 0}

        def randn(*shape: int) -> np.ndarray:
            calls["randn"] += 1
            return z[(calls["randn"] - 1) % (n - 1)].double().numpy()

        def explain(net: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: object) -> np.ndarray:
            calls["explain"] += 1
            x = torch.as_tensor(inputs).float()
            if replace_clean and calls["explain"] % n == 0:  # Quantus' noise-free copy: our n-th noisy one
                assert torch.equal(x, images)
                x = images + sigma * z[n - 1]
            work.model.load_state_dict(net.state_dict())
            out = Explainer(work, ["gradcam"]).explain(x, torch.as_tensor(targets).long())
            return upsample(out.layer_maps["gradcam"], tuple(images.shape[-2:]))[:, None].double().numpy()

        monkeypatch.setattr(np.random, "randn", randn)
        monkeypatch.setattr(quantus, "explain", explain)
        metric = quantus.SmoothMPRT(
            similarity_func=correlation_spearman,
            layer_order="top_down",
            seed=42,
            nr_samples=n,
            noise_magnitude=noise,
            skip_layers=True,
            return_last_correlation=True,
            abs=False,
            normalise=False,
            disable_warnings=True,
        )
        # a_batch None: Quantus smooths the trained model's maps itself
        scores = on_batch(metric, copy.deepcopy(loaded.model), images, ex.targets, None, explain)
        monkeypatch.undo()
        return [float(v) for v in scores]

    np.testing.assert_allclose(ours["spearman"].to_numpy(), run(replace_clean=True), atol=1e-5)
    record_property("quantus_last_copy_noise_free", [round(v, 4) for v in run(replace_clean=False)])
    record_property("ours_n_noisy_copies", [round(float(v), 4) for v in ours["spearman"]])


def test_efficient_mode_reproduces_quantus(case, tmp_path: Path, record_property) -> None:
    """Quantus' EfficientMPRT (its defaults: discrete entropy of a 100-bin histogram, (H_random - H) / H) on the
    fully randomised model equals our efficient mode's rise in entropy."""
    loaded, model, images = case
    sanity = {"mprt_units": "layers", "seed": 43, "mprt_mode": "efficient"}
    cfg, ex, ours = our_mprt(loaded, images, tmp_path, ["gradcam"], sanity, model)
    maps = ex.maps["gradcam"].double().numpy()
    net = copy.deepcopy(loaded.model).eval()  # Quantus predicts with it, and refuses a model in training mode
    explain = explain_func(build_model(cfg.model), "gradcam")
    metric = quantus.EfficientMPRT(seed=42, disable_warnings=True)
    scores = on_batch(metric, net, images, ex.targets, maps[:, None], explain)
    assert np.isfinite(ours["efficient_mprt"]).all()  # a defined rise, not two NaNs
    np.testing.assert_allclose(ours["efficient_mprt"].to_numpy(), scores, atol=1e-5)
    record_property("efficient_mprt", [round(float(v), 4) for v in ours["efficient_mprt"]])
