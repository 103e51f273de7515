"""The default section of `make bench`: camexp against the protocol's floors, pytorch-grad-cam and torchcam, in
alternating rounds (scripts/bench/__main__.py's docstring says how they compare)."""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from camexp.accel import CPU_FORWARD_CHUNK
from camexp.data import build_dataset
from camexp.models import build_model

from .common import METHODS, camexp_config, floor_ratios, loader_floor, model_floor, run_camexp, run_loader, user_model


def timed_loop(loader: Iterable[dict], step: Callable[[torch.Tensor], None]) -> float:
    start = time.perf_counter()
    for batch in loader:
        step(batch["image"])
    return time.perf_counter() - start


def floor_step(
    model: nn.Module, layout: torch.memory_format = torch.contiguous_format, chunk: int | None = None
) -> Callable[[torch.Tensor], None]:
    """The protocol's floor: one batched forward of the images and one of the M explanation images
    (in forwards of at most `chunk` images, as camexp runs them on this device)."""

    def step(x: torch.Tensor) -> None:
        with torch.inference_mode():
            model(x.contiguous(memory_format=layout))
            explained = x.repeat(len(METHODS), 1, 1, 1).contiguous(memory_format=layout)
            for part in explained.split(chunk or len(explained)):
                model(part)

    return step


def confidence_on(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """What a library user writes after getting maps (B,H,W): E = map * image, forward, softmax at target."""
    with torch.no_grad():
        return model(maps[:, None] * x).softmax(1).gather(1, targets[:, None])[:, 0]


def pgc_step(model: nn.Module, layer: nn.Module) -> Callable[[torch.Tensor], None]:
    """pytorch-grad-cam: GradCAM, GradCAMPlusPlus and a user-written Grad-CAM+ (the library has none)."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.base_cam import BaseCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    class GradCAMPlus(BaseCAM):
        def __init__(self, model: nn.Module, target_layers: list[nn.Module]):
            super().__init__(model, target_layers)

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            return np.maximum(grads, 0).mean(axis=(2, 3))

    cams = [cls(model=model, target_layers=[layer]) for cls in (GradCAM, GradCAMPlus, GradCAMPlusPlus)]

    def step(x: torch.Tensor) -> None:
        with torch.no_grad():
            t = model(x).argmax(1)
        targets = [ClassifierOutputTarget(int(c)) for c in t]
        for cam in cams:
            confidence_on(model, x, torch.from_numpy(cam(input_tensor=x, targets=targets)), t)

    return step


def torchcam_step(model: nn.Module, layer_name: str) -> Callable[[torch.Tensor], None]:
    """torchcam: GradCAM, GradCAMpp and a user-written Grad-CAM+ (the library has none)."""
    from torchcam.methods import GradCAM, GradCAMpp

    class GradCAMPlus(GradCAM):
        def _get_weights(self, class_idx, scores, **kwargs):
            self._backprop(scores, class_idx, **kwargs)
            return [grad.relu().flatten(2).mean(-1) for grad in self.hook_g]

    def step(x: torch.Tensor) -> None:
        t = None
        for cls in (GradCAM, GradCAMPlus, GradCAMpp):
            with cls(model, target_layer=layer_name, input_shape=tuple(x.shape[1:])) as extractor:
                scores = model(x)
                t = scores.argmax(1)
                (cam,) = extractor(class_idx=t.tolist(), scores=scores)
            maps = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            confidence_on(model, x, maps, t)

    return step


def bench(images: Path, n: int, batch_size: int, workers: int | str, rounds: int, skip: list[str]) -> dict:
    """Alternate the contenders for `rounds` rounds; median seconds and images/s of each."""
    tmp = Path(tempfile.mkdtemp(prefix="camexp-bench-"))
    cfg = camexp_config(images, n, batch_size, workers, tmp / "run")
    frozen = build_model(cfg.model)
    user = build_model(cfg.model)
    nhwc_loaded = build_model(cfg.model)
    nhwc = nhwc_loaded.model.to(memory_format=torch.channels_last)
    ds = build_dataset(cfg.dataset, frozen.spec)
    loader = run_loader(cfg, ds)
    preloaded = [b["image"] for b in loader]
    on_device = [x.contiguous(memory_format=torch.channels_last) for x in preloaded]
    chunk = CPU_FORWARD_CHUNK
    contenders: dict[str, Callable[[], float]] = {
        "camexp": lambda: run_camexp(cfg),
        "loader_floor": lambda: loader_floor(loader),
        "model_floor": lambda: model_floor(nhwc_loaded, on_device, len(METHODS)),
        "floor": lambda: timed_loop(loader, floor_step(frozen.model)),
        "floor_channels_last": lambda: timed_loop(loader, floor_step(nhwc, torch.channels_last)),
        "floor_chunked": lambda: timed_loop(loader, floor_step(nhwc, torch.channels_last, chunk)),
        "floor_forwards_only": lambda: timed_loop([{"image": x} for x in preloaded], floor_step(frozen.model)),
        "pytorch-grad-cam": lambda: timed_loop(loader, pgc_step(user_model(user), user.layer)),
        "torchcam": lambda: timed_loop(loader, torchcam_step(user_model(user), f"net.{user.layer_name}")),
    }
    contenders = {k: v for k, v in contenders.items() if k not in skip}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(rounds):
        for name, fn in contenders.items():
            times[name].append(fn())
            print(f"round {r + 1}/{rounds} {name:20s} {times[name][-1]:7.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    result: dict = {
        "images": len(ds),
        "batch_size": batch_size,
        "workers": workers,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "images_dir": str(images),
        "seconds": times,
        "median_s": med,
        "images_per_s": {k: len(ds) / v for k, v in med.items()},
    }
    ratios = floor_ratios(med)
    if "floor" in med:
        ratios["camexp/floor wall"] = med["camexp"] / med["floor"]
    for floor in ("floor_channels_last", "floor_chunked", "floor_forwards_only"):
        if floor in med:
            ratios[f"camexp/{floor} wall"] = med["camexp"] / med[floor]
    for peer in ("pytorch-grad-cam", "torchcam"):
        if peer in med:
            ratios[f"camexp/{peer} throughput"] = med[peer] / med["camexp"]
    result["ratios"] = ratios
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result
