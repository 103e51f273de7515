"""`--criteria`: the faithfulness and complexity metrics a peer also computes, each on the same maps, camexp
against the peer configured alike (Quantus 0.6; Captum's infidelity, which follows Yeh et al. where Quantus'
patch-based Infidelity does not): one speed ratio per metric.

One method's maps (Grad-CAM++), the conservative case: camexp draws the subsets, superpixels and samples once
per image and scores every method's maps on the same forwards, where the peers repeat the forwards per method."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from camexp.config import DatasetConfig, ExperimentConfig

from .common import loaded_config, warm_rounds
from .metrics import metric_batches, time_batch_metrics

METHOD = "gradcam++"
Batches = list[tuple[torch.Tensor, Any, Any, list[str]]]


class PixelFeatures(nn.Module):
    """The network on one batch's normalised images with a (B, 1, H, W) mask of kept pixels: Quantus perturbs
    the mask's features, so a pixel is replaced in all three channels at once, as camexp replaces it."""

    def __init__(self, net: nn.Module, xn: torch.Tensor):
        super().__init__()
        self.net, self.xn = net, xn

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.where(mask > 0.5, self.xn, torch.zeros_like(self.xn)))


def zero_at(arr: np.ndarray, indices: np.ndarray, **_: object) -> np.ndarray:
    """Quantus perturb_func: the subset's features set to 0 (the pixel replaced by the mean colour)."""
    out = arr.copy()
    np.put_along_axis(out, indices, 0.0, axis=1)
    return out


def _maps(ex: Any) -> np.ndarray:
    return ex.maps[METHOD][:, None].numpy()


def _quantus_correlation(batches: Batches, loaded: Any) -> float:
    import quantus

    metric = quantus.FaithfulnessCorrelation(
        nr_runs=100, subset_size=224, perturb_func=zero_at, abs=False, return_aggregate=False, disable_warnings=True
    )
    start = time.perf_counter()
    for x, _, ex, _ in batches:
        xn = loaded.model.normalize(x).float()
        mask = np.ones((len(x), 1, *x.shape[-2:]), dtype=np.float32)
        net = PixelFeatures(loaded.model.net, xn).eval()
        metric(model=net, x_batch=mask, y_batch=ex.targets.numpy(), a_batch=_maps(ex), softmax=True, device="cpu")
    return time.perf_counter() - start


def _quantus_irof(batches: Batches, loaded: Any) -> float:
    import quantus

    mean = np.array(loaded.spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)

    def mean_colour(arr: np.ndarray, mask: np.ndarray, **_: object) -> np.ndarray:
        return np.where(mask, mean, arr)

    metric = quantus.IROF(perturb_func=mean_colour, return_aggregate=False, disable_warnings=True)
    trapz = getattr(np, "trapz", None)
    np.trapz = getattr(np, "trapezoid", trapz)  # type: ignore[attr-defined]  # Quantus 0.6 calls np.trapz (gone in numpy 2.4)
    try:
        start = time.perf_counter()
        for x, _, ex, _ in batches:
            model = loaded.model.eval()
            metric(model=model, x_batch=x.numpy(), y_batch=ex.targets.numpy(), a_batch=_maps(ex), softmax=True)
        return time.perf_counter() - start
    finally:
        if trapz is None:
            del np.trapz  # type: ignore[attr-defined]


def _captum_infidelity(batches: Batches, loaded: Any) -> float:
    from captum.metrics import infidelity

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = 0.1 * torch.randn_like(inputs)
        return noise, inputs - noise

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(loaded.model.net(inputs), 1)

    start = time.perf_counter()
    for x, _, ex, _ in batches:
        xn = loaded.model.normalize(x).float()
        attributions = ex.maps[METHOD][:, None].expand(-1, 3, -1, -1)
        with torch.no_grad():
            infidelity(forward, perturb, xn, attributions, target=ex.targets, n_perturb_samples=50, normalize=True)
    return time.perf_counter() - start


def _quantus_maps_only(name: str) -> Callable[[Batches, Any], float]:
    """A Quantus metric that reads the maps alone (model None)."""

    def run(batches: Batches, loaded: Any) -> float:
        import quantus

        metric = getattr(quantus, name)(disable_warnings=True, return_aggregate=False)
        start = time.perf_counter()
        for x, _, ex, _ in batches:
            a = _maps(ex)
            metric(model=None, x_batch=np.zeros((len(x), 3, *x.shape[-2:])), y_batch=ex.targets.numpy(), a_batch=a)
        return time.perf_counter() - start

    return run


# camexp metric -> (peer's name, its timed run); camexp runs each with its default settings, which are the
# peer's: 100 subsets of 224 pixels, SLIC's 100 segments at compactness 10, 50 Gaussian samples of σ 0.1.
PEERS: dict[str, tuple[str, Callable[[Batches, Any], float]]] = {
    "faithfulness_correlation": ("quantus FaithfulnessCorrelation", _quantus_correlation),
    "irof": ("quantus IROF", _quantus_irof),
    "infidelity": ("captum infidelity", _captum_infidelity),
    "sparseness": ("quantus Sparseness", _quantus_maps_only("Sparseness")),
    "complexity": ("quantus Complexity", _quantus_maps_only("Complexity")),
    "effective_complexity": ("quantus EffectiveComplexity", _quantus_maps_only("EffectiveComplexity")),
}


def criteria_bench(images: Path, n: int | None, batch_size: int, rounds: int, names: list[str]) -> dict:
    """Per metric: camexp's seconds (settings validated once, as a run does) against its peer's, in alternating
    warm rounds on the same maps; the ratio peer/camexp is camexp's speed-up (target >= 1)."""
    loaded, batches = metric_batches(images, n, batch_size, METHOD, passes=True)  # as a CPU run
    count = sum(len(x) for x, _, _, _ in batches)
    report: dict[str, Any] = {}
    for name in names:
        peer, run = PEERS[name]
        cfg = ExperimentConfig(
            name="bench",
            dataset=DatasetConfig(root=images),
            model=loaded_config(),
            methods=[METHOD],
            metrics=[name],
        )
        ours = f"camexp {name}"
        contenders: dict[str, Callable[[], float]] = {
            ours: partial(time_batch_metrics, cfg, [name], batches),
            peer: partial(run, batches, loaded),
        }
        times, med = warm_rounds(contenders, rounds)
        report[name] = {
            "seconds": times,
            "median_s": med,
            f"{peer}/camexp (speed-up, target >= 1)": med[peer] / med[ours],
        }
    return {
        "images": count,
        "batch_size": batch_size,
        "method": METHOD,
        "threads": torch.get_num_threads(),
        "metrics": report,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
