"""`--robustness`: the four robustness metrics on the same maps against their floor and against Quantus 0.6."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camexp.config import DatasetConfig, ExperimentConfig
from camexp.explain.core import Explainer
from camexp.models import LoadedModel

from .common import loaded_config, warm_rounds
from .metrics import metric_batches, time_batch_metrics

NAMES = ("max_sensitivity", "avg_sensitivity", "local_lipschitz", "relative_input_stability")


def forward_backward_floor(loaded: LoadedModel, x: torch.Tensor, targets: torch.Tensor) -> None:
    """Plain torch: one forward of images x and the gradient of the targets' logits at the explained layer
    (the layer's output detached into a leaf, as any CAM implementation does), nothing else."""
    store: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        store.append(output.detach().requires_grad_(True))
        return store[-1]

    handle = loaded.layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = loaded.model(x)
            torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), store[-1])
    finally:
        handle.remove()


def robustness_bench(
    images: Path, n: int | None, batch_size: int, samples: int, radius: float, rounds: int, skip: tuple[str, ...] = ()
) -> dict:
    """camexp's four robustness metrics (one re-explanation of S copies per batch, shared) vs the floor (one
    forward + head backward of the same S x B copies, plain torch) vs Quantus' MaxSensitivity, AvgSensitivity,
    LocalLipschitzEstimate and RelativeInputStability with the same explainer, samples and uniform noise of
    the same radius, on the same precomputed maps (Grad-CAM++). `skip`: contenders left out (not camexp's)."""
    import quantus
    from quantus.functions.perturb_func import batch_uniform_noise

    method = "gradcam++"
    loaded, batches = metric_batches(images, n, batch_size, method)
    cfg = ExperimentConfig(
        name="bench",
        dataset=DatasetConfig(root=images),
        model=loaded_config(),
        methods=[method],
        metrics=list(NAMES),
        settings={"robustness": {"samples": samples, "radius": radius}},
    )
    count = sum(len(x) for x, _, _, _ in batches)
    model = loaded.model.eval()

    def camexp_metrics() -> float:
        return time_batch_metrics(cfg, list(NAMES), batches)

    def floor() -> float:
        start = time.perf_counter()
        for x, _, ex, _ in batches:
            copies = x.repeat(samples, 1, 1, 1)
            forward_backward_floor(loaded, copies, ex.targets.repeat(samples))
        return time.perf_counter() - start

    def peers() -> float:
        noise: dict[str, Any] = dict(
            perturb_func=batch_uniform_noise, perturb_func_kwargs={"lower_bound": radius, "upper_bound": None}
        )
        common: dict[str, Any] = dict(nr_samples=samples, normalise=False, abs=False, disable_warnings=True, **noise)
        metrics = [
            quantus.MaxSensitivity(**common),
            quantus.AvgSensitivity(**common),
            quantus.LocalLipschitzEstimate(**common),
            quantus.RelativeInputStability(**common),
        ]
        start = time.perf_counter()
        for x, explainer, ex, _ in batches:

            def explain(
                model: object, inputs: np.ndarray, targets: np.ndarray, explainer: Explainer = explainer, **kw: object
            ) -> np.ndarray:
                t = torch.from_numpy(np.asarray(targets))
                return explainer.explain(torch.from_numpy(inputs), t).maps[method][:, None].numpy()

            a = ex.maps[method][:, None].numpy()
            for metric in metrics:
                metric(
                    model=model, x_batch=x.numpy(), y_batch=ex.targets.numpy(), a_batch=a.copy(), explain_func=explain
                )
        return time.perf_counter() - start

    contenders = {
        "camexp 4 robustness metrics": camexp_metrics,
        "floor (same forwards/backwards)": floor,
        "quantus 4 metrics": peers,
    }
    times, med = warm_rounds({k: fn for k, fn in contenders.items() if k not in skip}, rounds)
    ours = med["camexp 4 robustness metrics"]
    ratios = {
        "floor/camexp (fraction of the floor's speed, target >= 0.9)": "floor (same forwards/backwards)",
        "quantus/camexp (speed-up, target >= 1)": "quantus 4 metrics",
    }
    return {
        "images": count,
        "batch_size": batch_size,
        "samples": samples,
        "radius": radius,
        "method": method,
        "threads": torch.get_num_threads(),
        "seconds": times,
        "median_s": med,
        "ratios": {key: med[name] / ours for key, name in ratios.items() if name in med},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
