r"""Side-by-side speed of camexp against the protocol's floor and against pytorch-grad-cam and torchcam.

Every contender runs the same protocol (top-1 target; Grad-CAM, Grad-CAM+, Grad-CAM++ maps; one
confidence on each explanation image E = L * I) on the same real images, the same model
(tf_efficientnet_lite0 at 224, the offline package weights) and the same batch size, in one process, in
alternating rounds; the median round is reported. All contenders read the images through the same
DataLoader (JPEG decode + resize + crop), so the comparison is of the explanation work. The floor is
plain torch's default (NCHW); since camexp runs convolutions channels_last and, on CPU, the explanation
images in cache-sized forwards (camexp.accel.forward_chunk), the floor in that layout, the floor with
those chunks too (the tightest floor) and the floor without image loading are reported beside it.

  python scripts/bench.py [--batch-size 16] [--rounds 3] [--limit N] [--out results/bench.json]
  python scripts/bench.py --rss [--rss-sizes 200 2000]   # peak RSS of camexp runs, each in a subprocess
  python scripts/bench.py --only stats    # the bootstrap alone: 50,000 images x 10 methods x 1,000 resamples
  python scripts/bench.py --metrics [--limit 4] [--steps 20] [--road-percentiles 10 50 90]
      # per-batch metrics on the same maps: insertion/deletion vs torchcam's DeletionInsertionMetric and vs
      # the floor (the same number of bare forwards), ROAD vs pytorch-grad-cam's ROADCombined
  python scripts/bench.py --rss --rss-metrics insertion deletion road [--rss-sizes 8 32] [--steps 5]
  python scripts/bench.py --family [--limit 2] [--batch-size 2] [--skip torchcam\ ScoreCAM]
      # Score-CAM (at the peers' softmax-over-channels weighting) vs pytorch-grad-cam's and torchcam's ScoreCAM
      # and vs its floor (the forwards of the non-constant channels' masked images); Ablation-CAM vs
      # pytorch-grad-cam's AblationCAM and vs its floor (one pass of the network after the layer per channel)
  python scripts/bench.py --rss --rss-methods scorecam ablationcam --rss-sizes 2 8 --batch-size 2
  python scripts/bench.py --loader [--loader-workers 0 1] [--limit 64] [--loader-methods gradcam gradcam++]
      # camexp's images/s beside its two floors, per workers setting: the loader floor (decode + resize + crop
      # through camexp's loader, same workers) and the model floor (the same forwards and head backward on
      # images already on the device)
  python scripts/bench.py --decode-diff [--limit 300]
      # per-image |dO| and |dY| of torchvision.io.decode_jpeg + tensor resize (runtime.decode: gpu's path, run
      # on the CPU; nvJPEG with --device cuda) against the PIL path, on the same images, model and methods
  python scripts/bench.py --device-diff --device cuda [--limit 32] [--methods gradcam cam]
      # the same images by camexp run on the CPU and on the GPU (decode: cpu): targets, |dO| and |dY|

--loader, --family, --decode-diff and --device-diff take --device {cpu,cuda,auto} (default cpu), --model NAME
(tf_efficientnet_lite0 with its package weights; any other timm model with random weights), --amp {off,bf16}
and --decode {cpu,gpu}; --cycled repeats the folder's images up to --limit. On CUDA every contender
synchronises before its clock stops, and every JSON records the GPU, driver, versions, TF32 flags and command.
scripts/gpu_check.sh runs the whole GPU check as one command (docs/guide/speed-gpu.md, "Measuring on a GPU").
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader

from camexp.accel import (
    CPU_FORWARD_CHUNK,
    MAX_FORWARD,
    autocast,
    channels_last,
    chunks,
    disable_tf32,
    forward_chunk,
    keep_host_memory,
    resolve_device,
    to_device,
)
from camexp.config import DatasetConfig, ExperimentConfig, ModelConfig, OutputConfig, RuntimeConfig, StatsConfig
from camexp.data import LOADERS, ImageDataset, Listing, build_dataset, collate, list_dataset
from camexp.data.loader import decoder_name, loader_settings, make_loader
from camexp.errors import CamexpError
from camexp.metrics import MetricParams, RecordsView
from camexp.metrics.stats import resample_means
from camexp.models import LoadedModel, build_model
from camexp.profile import JOB
from camexp.report.uncertainty import compute_stats
from camexp.results import MAPS_DIR, MAPS_INDEX, RECORDS, RUN_JSON, SHARD_SUFFIX, read_json, read_maps, read_records
from camexp.runner import run_experiment

REPO = Path(__file__).resolve().parents[1]
SHARED_IMAGES = REPO.parent / "shared" / "data" / "ilsvrc2012-val-subset" / "images"
METHODS = ["gradcam", "gradcam+", "gradcam++"]
CYCLED = "bench-cycled"  # dataset kind registered here: the real images repeated to any length


def default_images() -> Path:
    """The shared ILSVRC2012 subset when present, else the scikit-image photos of the demo."""
    if SHARED_IMAGES.is_dir():
        return SHARED_IMAGES
    demo = REPO / "build" / "demo-images"
    if not demo.is_dir():
        subprocess.run([sys.executable, str(REPO / "scripts" / "demo_images.py"), str(demo)], check=True)
    return demo


def _cycled(cfg: DatasetConfig) -> Listing:
    """The folder's images repeated until `limit` items (unique ids), to measure memory on long runs."""
    base = list_dataset(cfg.model_copy(update={"kind": "folder", "limit": None})).items
    n = cfg.limit or len(base)
    return Listing(
        [
            type(it)(path=it.path, image_id=f"{it.image_id}.{k // len(base)}", label=it.label)
            for k, it in zip(range(n), _repeat(base))
        ]
    )


def _repeat(items: list) -> Iterator:
    while True:
        yield from items


LOADERS.register(CYCLED, _cycled)


LITE0 = "tf_efficientnet_lite0"


def loaded_config(name: str = LITE0) -> ModelConfig:
    """Lite0 with the offline package weights; any other timm model with random weights (speed only)."""
    if name == LITE0:
        return ModelConfig(name=LITE0, weights="efficientnet-lite0-package")
    return ModelConfig(name=name, weights="random")


@dataclass(frozen=True)
class Where:
    """Where and how a section runs (--device, --model, --amp, --decode), applied as camexp's runner applies
    them: the model on the device, channels_last where the device prefers it, the explanation forwards in
    camexp.accel's chunks and under the run's autocast. The default is the CPU bench as it always was."""

    device: torch.device = torch.device("cpu")
    model: str = LITE0
    amp: str = "off"
    decode: str = "cpu"

    @property
    def chunk(self) -> int | None:
        """Explanation images per forward as a run resolves it on this device (None: all, at most MAX_FORWARD)."""
        return forward_chunk(self.device, None)

    def runtime(self, batch_size: int, workers: int | str) -> RuntimeConfig:
        return RuntimeConfig(
            device=str(self.device), batch_size=batch_size, workers=workers, amp=self.amp, decode=self.decode
        )

    def build(self) -> LoadedModel:
        """The model on the device, in the layout camexp's runner gives it there."""
        loaded = build_model(loaded_config(self.model), self.device)
        if channels_last(self.device):
            loaded.model.to(memory_format=torch.channels_last)
        return loaded

    def place(self, x: torch.Tensor) -> torch.Tensor:
        """A loader's batch as the run's loop hands it to the model (camexp.accel.to_device)."""
        return to_device(x, self.device)

    def arrive(self, x: torch.Tensor) -> torch.Tensor:
        """A loader's batch copied to a GPU as the run copies it; on the CPU, the batch as it is (the layout the
        CPU bench always used)."""
        return self.place(x) if self.device.type == "cuda" else x

    def argv(self) -> list[str]:
        """The command-line arguments that give a child process this Where."""
        return ["--device", str(self.device), "--model", self.model, "--amp", self.amp, "--decode", self.decode]

    def sync(self) -> None:
        """Wait for the device's queued kernels: every timed contender calls this before its clock stops."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


CPU = Where()


def camexp_config(
    images: Path,
    n: int | None,
    batch_size: int,
    workers: int | str,
    out: Path,
    kind: str = "folder",
    extra_metrics: tuple[str, ...] = (),
    steps: int = 100,
    methods: tuple[str, ...] = tuple(METHODS),
    where: Where = CPU,
) -> ExperimentConfig:
    return ExperimentConfig(
        name="bench",
        dataset=DatasetConfig(kind=kind, root=images, limit=n),
        model=loaded_config(where.model),
        methods=list(methods),
        metrics=["avg_drop", "increase", "win", *extra_metrics],
        perturbation={"steps": steps},
        road={"percentiles": [50]},
        runtime=where.runtime(batch_size, workers),
        output=OutputConfig(dir=out),
    )


# --- contenders: each returns the seconds its batch loop took ------------------------------------------------


def run_camexp(cfg: ExperimentConfig) -> float:
    """camexp's own runner on a fresh folder; the batch loop's time as run.json records it."""
    run_experiment(cfg, fresh=True, progress=False)
    return float(read_json(cfg.output_dir / RUN_JSON)["wall_time_s"])


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


def bare_forwards(net: nn.Module, normalized: torch.Tensor, n: int, chunk: int) -> None:
    """`n` forwards of ready-made images (the model-space `normalized` images repeated), `chunk` per call,
    channels_last: what a floor spends where camexp would forward n built images. Call in inference mode."""
    block = normalized.repeat(-(-chunk // len(normalized)), 1, 1, 1)[:chunk].contiguous(
        memory_format=torch.channels_last
    )
    for lo in range(0, n, chunk):
        net(block[: min(chunk, n - lo)])


def run_loader(cfg: ExperimentConfig, ds: ImageDataset, decode_on: torch.device | None = None) -> Iterable[dict]:
    """The run's own loader for `cfg` (its device, decode and workers resolved as a run resolves them: pinned
    memory on CUDA) over all of `ds`; `decode_on` decodes JPEGs there (runtime.decode: gpu's path)."""
    device = resolve_device(cfg.runtime.device)
    settings = loader_settings(cfg.runtime.workers, cfg.runtime.decode, device)
    return make_loader(ds, list(range(len(ds))), cfg.runtime.batch_size, device, settings, decode_device=decode_on)


def loader_floor(loader: Iterable[dict], where: Where = CPU) -> float:
    """Seconds to draw every batch (decode + resize + crop + collate) and, on a GPU, copy it there as the run
    does (non-blocking, from pinned memory), and nothing else."""
    start = time.perf_counter()
    for batch in loader:
        where.arrive(batch["image"])
    where.sync()
    return time.perf_counter() - start


def model_floor(loaded: LoadedModel, batches: list[torch.Tensor], n_methods: int, where: Where = CPU) -> float:
    """Seconds for camexp's model calls alone on images already on the device, in plain torch: one forward with
    the layer's output made a leaf and one backward from the top-1 logits to it (the head only), then the
    n_methods * B explanation-image forwards in inference mode, in camexp's chunks, layout and autocast."""
    leaves: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: object, out: torch.Tensor) -> torch.Tensor:
        leaves.append(out.detach().requires_grad_(True))
        return leaves[-1].clone()

    handle = loaded.layer.register_forward_hook(hook)
    start = time.perf_counter()
    for x in batches:
        with torch.enable_grad():
            logits = loaded.model(x)
            torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), leaves.pop())
        with torch.inference_mode(), autocast(where.device, where.amp):
            explained = x.repeat(n_methods, 1, 1, 1)
            for span in chunks(len(explained), where.chunk):
                loaded.model.net(loaded.model.normalize(explained[span].contiguous(memory_format=torch.channels_last)))
    where.sync()
    seconds = time.perf_counter() - start
    handle.remove()
    return seconds


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

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):  # noqa: ANN001
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
        def _get_weights(self, class_idx, scores, **kwargs):  # noqa: ANN001, ANN003, ANN202
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


def user_model(loaded: LoadedModel) -> nn.Module:
    """The model as a library user holds it: same weights, parameters trainable (the default)."""
    return loaded.model.requires_grad_(True).eval()


# --- modes ---------------------------------------------------------------------------------------------------


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


def floor_ratios(med: dict[str, float], suffix: str = "") -> dict[str, float]:
    """camexp's throughput over each floor's, over the faster and the slower floor's, and over the serial
    floor's (loader then model, one after the other: what cores that both decode and compute can do at best)."""
    if "loader_floor" + suffix not in med or "model_floor" not in med:
        return {}
    loader, model, ours = med["loader_floor" + suffix], med["model_floor"], med["camexp" + suffix]
    return {
        f"camexp{suffix}/loader_floor throughput": loader / ours,
        f"camexp{suffix}/model_floor throughput": model / ours,
        f"camexp{suffix}/faster floor throughput": min(loader, model) / ours,
        f"camexp{suffix}/slower floor throughput": max(loader, model) / ours,
        f"camexp{suffix}/serial floors throughput": (loader + model) / ours,
    }


def loader_bench(
    images: Path,
    n: int | None,
    batch_size: int,
    workers: list[int | str],
    rounds: int,
    methods: tuple[str, ...],
    where: Where = CPU,
    kind: str = "folder",
) -> dict:
    """Per workers setting, camexp's run and its loader floor; once, the model floor (on pre-decoded images
    already on the device, so it does not depend on the workers); all in alternating rounds, the order reversed
    every other round. Each loader floor draws a fresh loader, as each run does (worker start-up included)."""
    tmp = Path(tempfile.mkdtemp(prefix="camexp-bench-"))
    cfgs = {
        w: camexp_config(images, n, batch_size, w, tmp / f"run-{w}", kind=kind, methods=methods, where=where)
        for w in workers
    }
    loaded = where.build()
    ds = build_dataset(cfgs[workers[0]].dataset, loaded.spec)
    on_device = [where.place(b["image"]) for b in run_loader(cfgs[workers[0]], ds)]

    def fresh_loader_floor(cfg: ExperimentConfig) -> float:
        return loader_floor(run_loader(cfg, ds), where)

    contenders: dict[str, Callable[[], float]] = {
        "model_floor": lambda: model_floor(loaded, on_device, len(methods), where)
    }
    for w in workers:
        contenders[f"camexp@{w}"] = partial(run_camexp, cfgs[w])
        contenders[f"loader_floor@{w}"] = partial(fresh_loader_floor, cfgs[w])
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(rounds + 1):  # round 0 warms oneDNN's kernels and the page cache; not counted
        for name in list(contenders)[:: 1 if r % 2 else -1]:
            seconds = contenders[name]()
            if r:
                times[name].append(seconds)
            print(f"round {r}/{rounds} {name:20s} {seconds:7.2f} s{'' if r else ' (warm-up)'}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {}
    for w in workers:
        ratios.update(
            floor_ratios(
                {
                    "model_floor": med["model_floor"],
                    f"camexp@{w}": med[f"camexp@{w}"],
                    f"loader_floor@{w}": med[f"loader_floor@{w}"],
                },
                f"@{w}",
            )
        )
    return {
        "images": len(ds),
        "batch_size": batch_size,
        "methods": list(methods),
        "rounds": rounds,
        "workers": {str(w): loader_settings(w, where.decode, where.device).workers for w in workers},
        "loader": loader_settings(workers[0], where.decode, where.device).describe(),
        "chunk": where.chunk,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_after": os.getloadavg(),
        "images_dir": str(images),
        "seconds": times,
        "median_s": med,
        "images_per_s": {k: len(ds) / v for k, v in med.items()},
        "ratios": ratios,
    }


def decode_diff(
    images: Path, n: int | None, batch_size: int, methods: tuple[str, ...], where: Where = CPU, kind: str = "folder"
) -> dict:
    """The same images read by the PIL path and by runtime.decode: gpu's path (torchvision's decode_jpeg, then
    the tensor resize and crop) on `where`'s device (on a CPU, the CPU's decoder; on CUDA, nvJPEG), both explained
    there: per image, the largest and mean |pixel difference|, whether the top-1 target agrees, |dY| (confidence
    at the target) and, where the targets agree, |dO| per method."""
    from camexp.explain.core import Explainer
    from camexp.explain.scoring import Scorer, confidence

    pil = replace(where, decode="cpu")
    tmp = Path(tempfile.mkdtemp(prefix="camexp-bench-"))
    cfg = camexp_config(images, n, batch_size, 0, tmp, kind=kind, methods=methods, where=pil)
    loaded = pil.build()
    explainer = Explainer(loaded, list(methods), scorer=Scorer(loaded.model, chunk=pil.chunk, amp=pil.amp))
    ds = build_dataset(cfg.dataset, loaded.spec)

    def outputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ex = explainer.explain(x)
        y = confidence(ex.logits, "softmax").gather(1, ex.targets[:, None])[:, 0]
        return ex.targets, y, explainer.scorer.explanations(x, ex.maps, ex.targets)

    rows: dict[str, list] = {"pixel_max": [], "pixel_mean": [], "same_target": [], "dy": [], "do": []}
    for a, b in zip(run_loader(cfg, ds), run_loader(cfg, ds, decode_on=where.device), strict=True):
        assert a["image_id"] == b["image_id"]
        xa, xb = pil.arrive(a["image"]), pil.arrive(b["image"])
        diff = (xa - xb).abs()
        rows["pixel_max"] += diff.amax(dim=(1, 2, 3)).tolist()
        rows["pixel_mean"] += diff.mean(dim=(1, 2, 3)).tolist()
        (ta, ya, oa), (tb, yb, ob) = outputs(xa), outputs(xb)
        same = ta == tb
        rows["same_target"] += same.tolist()
        rows["dy"] += (ya - yb).abs()[same].tolist()
        rows["do"] += (oa - ob).abs()[same].flatten().tolist()
    return {
        "images": len(rows["same_target"]),
        "methods": list(methods),
        "images_dir": str(images),
        "targets_agree": sum(rows["same_target"]),
        "pixel_max_abs_x255": spread([255 * v for v in rows["pixel_max"]]),
        "pixel_mean_abs_x255": spread([255 * v for v in rows["pixel_mean"]]),
        "abs_dY_same_target": spread(rows["dy"]),
        "abs_dO_same_target": spread(rows["do"]),
        "pil_decoder": decoder_name("cpu", where.device),
        "tensor_decoder": f"torchvision {torchvision.__version__} decode_jpeg on {where.device} + tensor resize "
        "(runtime.decode: gpu's code path)",
    }


def spread(v: list[float]) -> dict[str, float]:
    """Median, 99th percentile, largest and mean of `v` (NaN for none)."""
    q = np.quantile(v, [0.5, 0.99, 1.0]) if v else [float("nan")] * 3
    return {
        "median": float(q[0]),
        "p99": float(q[1]),
        "max": float(q[2]),
        "mean": float(np.mean(v)) if v else float("nan"),
    }


def device_diff(
    images: Path, n: int | None, batch_size: int, methods: tuple[str, ...], where: Where, kind: str = "folder"
) -> dict:
    """The same images through `camexp run` on the CPU and on `where`'s device, both with `decode: cpu` (and the
    same amp): whether every target agrees, |dO| per (image, method) record and |dY| per image. Measured and reported,
    never asserted: the bar the issue sets is targets equal and |dO| <= 1e-4."""
    tmp = Path(tempfile.mkdtemp(prefix="camexp-bench-devdiff-"))
    sides = {"cpu": replace(where, device=torch.device("cpu"), decode="cpu"), "device": replace(where, decode="cpu")}
    records, runs = {}, {}
    for side, at in sides.items():
        cfg = camexp_config(images, n, batch_size, 0, tmp / side, kind=kind, methods=methods, where=at)
        run_camexp(cfg)
        records[side] = read_records(cfg.output_dir / RECORDS).set_index(["image_id", "method"]).sort_index()
        meta = read_json(cfg.output_dir / RUN_JSON)
        runs[side] = {k: meta[k] for k in ("device", "device_name", "amp", "tf32", "wall_time_s", "images_per_s")}
        runs[side]["decoder"] = meta["loader"]["decoder"]
    cpu, dev = records["cpu"], records["device"].reindex(records["cpu"].index)
    same = (cpu["target"] == dev["target"]).groupby(level="image_id").all()
    do = (cpu["o"] - dev["o"]).abs()
    dy = (cpu["y"] - dev["y"]).abs().groupby(level="image_id").max()  # Y is the image's, on each method's row
    return {
        "images": len(same),
        "records": len(cpu),
        "methods": list(methods),
        "model": where.model,
        "amp": where.amp,
        "images_dir": str(images),
        "targets_agree": int(same.sum()),
        "all_targets_agree": bool(same.all()),
        "abs_dO": spread(do.dropna().tolist()),
        "abs_dY": spread(dy.dropna().tolist()),
        "within_1e-4": bool(same.all() and do.max() <= 1e-4),
        "runs": runs,
    }


def rss_child(
    images: Path,
    n: int,
    batch_size: int,
    workers: int,
    metrics: tuple[str, ...] = (),
    steps: int = 100,
    methods: tuple[str, ...] = tuple(METHODS),
    where: Where = CPU,
) -> None:
    """One camexp run of `n` (cycled) images; prints its peak RSS (self and largest child) and, on a GPU, the
    peak of allocated device memory its run.json records, as JSON."""
    with tempfile.TemporaryDirectory(prefix="camexp-rss-") as tmp:
        cfg = camexp_config(
            images,
            n,
            batch_size,
            workers,
            Path(tmp) / "run",
            kind=CYCLED,
            extra_metrics=metrics,
            steps=steps,
            methods=methods,
            where=where,
        )
        wall = run_camexp(cfg)
        device_mib = read_json(cfg.output_dir / RUN_JSON)["profile"]["peak_device_mib"]
    print(
        json.dumps(
            {
                "images": n,
                "wall_s": wall,
                "self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "children_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                "device_mib": device_mib,
            }
        )
    )


def rss(
    images: Path,
    sizes: list[int],
    batch_size: int,
    workers: int,
    metrics: tuple[str, ...] = (),
    steps: int = 100,
    methods: tuple[str, ...] = tuple(METHODS),
    where: Where = CPU,
) -> dict:
    """Peak memory of camexp runs of each size, each in a fresh process (peaks only grow within one)."""
    runs = []
    for n in sizes:
        cmd = [
            sys.executable,
            __file__,
            "--rss-child",
            str(n),
            "--images",
            str(images),
            "--batch-size",
            str(batch_size),
            "--workers",
            str(workers),
            "--steps",
            str(steps),
            *(["--rss-metrics", *metrics] if metrics else []),
            "--rss-methods",
            *methods,
            *where.argv(),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        print(f"rss {n:6d} images: {runs[-1]}", flush=True)
    result = {"rss_runs": runs, "rss_ratio_largest_smallest": runs[-1]["self_mib"] / runs[0]["self_mib"]}
    if runs[0]["device_mib"]:
        result["device_ratio_largest_smallest"] = runs[-1]["device_mib"] / runs[0]["device_mib"]
    return result


def bench_stats(n_images: int, n_methods: int, n_boot: int, rounds: int) -> dict:
    """Seconds (median of `rounds`) and peak traced memory of the bootstrap on synthetic per-image values:
    `resample_means` of one (images x methods) metric, and a whole run's intervals (avg drop, increase,
    best share, win % and sign test of every pair, relative performance)."""
    g = np.random.default_rng(0)
    y = g.uniform(0.2, 1.0, n_images)
    o = y[:, None] * g.uniform(0.1, 1.2, (n_images, n_methods))
    view = RecordsView(
        methods=[f"m{j}" for j in range(n_methods)],
        image_ids=[f"{i:06d}" for i in range(n_images)],
        y=torch.from_numpy(y),
        o=torch.from_numpy(o),
        p_true=torch.from_numpy(y),
    )
    settings = StatsConfig(bootstrap=n_boot)
    jobs: dict[str, Callable[[], object]] = {
        "resample_means": lambda: resample_means(o, n_boot, seed=0),
        "run_intervals": lambda: compute_stats(
            view, ["avg_drop", "increase", "win", "relperf"], MetricParams(), settings
        ),
    }
    result: dict = {
        "images": n_images,
        "methods": n_methods,
        "resamples": n_boot,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg(),
    }
    for name, job in jobs.items():
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            job()
            times.append(time.perf_counter() - start)
        tracemalloc.start()
        job()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        result[name] = {"median_s": statistics.median(times), "seconds": times, "peak_traced_mib": peak / 2**20}
        print(
            f"stats {name:16s} {result[name]['median_s']:6.2f} s (median of {rounds}), peak "
            f"{result[name]['peak_traced_mib']:.0f} MiB traced: {n_images} images x {n_methods} methods x "
            f"{n_boot} resamples",
            flush=True,
        )
    return result


# --- per-batch metrics on the same maps ----------------------------------------------------------------------


class GivenMaps:
    """A torchcam CAM extractor returning maps computed beforehand, so that only the metric is timed."""

    def __init__(self, model: nn.Module):
        self.model, self.maps = model, None

    def __call__(self, class_idx, scores, normalized=True, **kwargs):  # noqa: ANN001, ANN003, ANN204
        return [self.maps]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    def _hooks_off(self):  # noqa: ANN202
        from contextlib import nullcontext

        return nullcontext()


def metric_batches(images: Path, n: int | None, batch_size: int, method: str) -> tuple[LoadedModel, list]:
    """Lite0, and per batch: the images, the explainer and its Explanation of `method` (computed once)."""
    from camexp.explain.core import Explainer
    from camexp.explain.scoring import Scorer

    cfg = camexp_config(images, n, batch_size, 0, Path(tempfile.mkdtemp()))
    loaded = build_model(cfg.model)
    loaded.model.to(memory_format=torch.channels_last)
    explainer = Explainer(loaded, [method], scorer=Scorer(loaded.model, chunk=CPU_FORWARD_CHUNK))
    ds = build_dataset(cfg.dataset, loaded.spec)
    out = []
    for b in DataLoader(ds, batch_size=batch_size, collate_fn=collate):
        x = b["image"].contiguous(memory_format=torch.channels_last)
        out.append((x, explainer, explainer.explain(x)))
    return loaded, out


def metrics_bench(
    images: Path, n: int | None, batch_size: int, steps: int, percentiles: list[int], rounds: int
) -> dict:
    """Insertion + deletion: camexp vs torchcam's DeletionInsertionMetric (same maps, steps, substrate 0 for
    both curves as torchcam has it, chunks of the same size) vs the floor: the same number of forwards of
    ready-made images. ROAD: camexp vs pytorch-grad-cam's ROADCombined (same maps and percentiles)."""
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    from torchcam.metrics import DeletionInsertionMetric

    from camexp.metrics import batch_metrics
    from camexp.metrics.batch import BatchContext

    method = "gradcam++"
    loaded, batches = metric_batches(images, n, batch_size, method)
    chunk = CPU_FORWARD_CHUNK
    cfg = ExperimentConfig(
        name="bench",
        dataset=DatasetConfig(root=images),
        model=loaded_config(),
        methods=[method],
        metrics=["insertion", "deletion", "road"],
        perturbation={"steps": steps, "insertion_substrate": "zero"},
        road={"percentiles": percentiles},
    )
    net = loaded.model.net
    count = sum(len(x) for x, _, _ in batches)

    def camexp_metric(names: tuple[str, ...]) -> float:
        entries = batch_metrics(list(names))
        start = time.perf_counter()
        for x, explainer, ex in batches:
            mb = BatchContext(cfg, explainer, x, ex, {})
            for entry in entries:
                entry.compute(mb)
        return time.perf_counter() - start

    def torchcam() -> float:
        extractor = GivenMaps(net)
        metric = DeletionInsertionMetric(
            extractor,  # type: ignore[arg-type]  # GivenMaps stands in for torchcam's CAM extractor
            lambda z: z.softmax(-1),
            steps=steps,
            batch_size=chunk,
        )
        start = time.perf_counter()
        for x, _, ex in batches:
            extractor.maps = ex.maps[method]
            metric.update(loaded.model.normalize(x), class_idx=ex.targets.tolist())
        return time.perf_counter() - start

    def floor() -> float:
        forwards = 1 + 2 * (steps - 1)  # per image, one method, both curves sharing the zero substrate: camexp's count
        start = time.perf_counter()
        with torch.inference_mode():
            for x, _, _ in batches:
                bare_forwards(net, loaded.model.normalize(x), forwards * len(x), chunk)
        return time.perf_counter() - start

    def pgc_road() -> float:
        road = ROADCombined(percentiles=percentiles)
        start = time.perf_counter()
        for x, _, ex in batches:
            road(
                loaded.model.normalize(x),
                ex.maps[method].numpy(),
                [ClassifierOutputSoftmaxTarget(int(t)) for t in ex.targets],
                net,
            )
        return time.perf_counter() - start

    contenders = {
        "camexp insertion+deletion": lambda: camexp_metric(("insertion", "deletion")),
        "torchcam DeletionInsertionMetric": torchcam,
        "floor (same forwards)": floor,
        "camexp road": lambda: camexp_metric(("road",)),
        "pytorch-grad-cam ROADCombined": pgc_road,
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(rounds + 1):  # round 0 warms oneDNN's kernels for every shape; not counted
        for name, fn in contenders.items():
            seconds = fn()
            if r:
                times[name].append(seconds)
            print(f"round {r}/{rounds} {name:34s} {seconds:7.2f} s{'' if r else ' (warm-up)'}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "images": count,
        "batch_size": batch_size,
        "steps": steps,
        "road_percentiles": percentiles,
        "method": method,
        "threads": torch.get_num_threads(),
        "seconds": times,
        "median_s": med,
        "ratios": {
            "torchcam/camexp insertion+deletion (speed-up, target >= 2)": med["torchcam DeletionInsertionMetric"]
            / med["camexp insertion+deletion"],
            "camexp/floor insertion+deletion (target <= 1.10)": med["camexp insertion+deletion"]
            / med["floor (same forwards)"],
            "pytorch-grad-cam/camexp ROAD (speed-up, target >= 3)": med["pytorch-grad-cam ROADCombined"]
            / med["camexp road"],
        },
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# --- the CAM family: Score-CAM and Ablation-CAM against their floors and the peers ---------------------------


def family_bench(
    images: Path, n: int | None, batch_size: int, rounds: int, skip: list[str], where: Where = CPU
) -> dict:
    """Score-CAM at the peers' definition (softmax over channels of the target's logit on the pixel-space masked
    images: `weighting: softmax_logits`) vs pytorch-grad-cam's and torchcam's ScoreCAM and vs its floor: one
    forward of the images plus one forward per non-constant channel (the count camexp reports), of ready-made
    images, chunked and channels_last as camexp runs them. Ablation-CAM vs pytorch-grad-cam's AblationCAM and
    vs its floor: the forward of the images plus one pass of the network after the layer per channel not all
    zero. All on the same pre-decoded batches, the same targets (camexp's top-1) and the same weights."""
    from pytorch_grad_cam import AblationCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import ScoreCAM as TorchcamScoreCAM

    from camexp.explain.core import Explainer
    from camexp.explain.model_methods import block_size
    from camexp.explain.scoring import Scorer

    cfg = camexp_config(images, n, batch_size, 0, Path(tempfile.mkdtemp(prefix="camexp-bench-")), where=where)
    loaded = where.build()
    net, chunk = loaded.model.net, where.chunk
    scorer = Scorer(loaded.model, chunk=chunk)
    explainers = {
        "scorecam": Explainer(loaded, [("scorecam", "scorecam", {"weighting": "softmax_logits"})], scorer=scorer),
        "ablationcam": Explainer(loaded, ["ablationcam"], scorer=scorer),
    }
    batches = [
        where.place(b["image"])
        for b in DataLoader(build_dataset(cfg.dataset, loaded.spec), batch_size=batch_size, collate_fn=collate)
    ]
    # Setup (and oneDNN warm-up): each batch's targets, live-channel counts and layer output for the floors.
    targets, counts, natives = [], [], []
    for x in batches:
        ex = {m: e.explain(x) for m, e in explainers.items()}
        targets.append(ex["scorecam"].targets)
        counts.append({m: e.counts[m] for m, e in ex.items()})
        natives.append(explainers["ablationcam"].forward_backward(x, grad=False)[4])
    k = loaded.maps_shape[0]
    user = user_model(build_model(cfg.model, where.device))
    layer = cast(nn.Module, user.net).get_submodule(loaded.layer_name)

    def timed(step: Callable[[int, torch.Tensor], object]) -> float:
        start = time.perf_counter()
        for j, x in enumerate(batches):
            step(j, x)
        where.sync()
        return time.perf_counter() - start

    def floor_scorecam(j: int, x: torch.Tensor) -> None:
        with torch.inference_mode():
            normalized = loaded.model.normalize(x)
            net(normalized)
            bare_forwards(net, normalized, counts[j]["scorecam"]["forwards"], chunk or MAX_FORWARD)

    def floor_ablationcam(j: int, x: torch.Tensor) -> None:
        native = natives[j]
        per_block = block_size(native[0].numel(), None)
        with torch.inference_mode():
            net(loaded.model.normalize(x))
            todo = counts[j]["ablationcam"]["tail_passes"]
            block = native.repeat(-(-min(todo, per_block) // len(x)), 1, 1, 1)
            for lo in range(0, todo, per_block):
                loaded.tail(block[: min(per_block, todo - lo)])

    def pgc(cls: type) -> Callable[[int, torch.Tensor], None]:
        cam = cls(model=user, target_layers=[layer])

        def step(j: int, x: torch.Tensor) -> None:
            with contextlib.redirect_stderr(io.StringIO()):  # its progress bar per image, not worth a terminal
                cam(input_tensor=x.contiguous(), targets=[ClassifierOutputTarget(int(t)) for t in targets[j]])

        return step

    def torchcam_scorecam(j: int, x: torch.Tensor) -> None:
        with TorchcamScoreCAM(
            user, target_layer=f"net.{loaded.layer_name}", input_shape=tuple(x.shape[1:])
        ) as extractor:
            with torch.inference_mode():
                user(x.contiguous())
                extractor(class_idx=targets[j].tolist())

    contenders: dict[str, Callable[[int, torch.Tensor], object]] = {
        "camexp scorecam": lambda j, x: explainers["scorecam"].explain(x),
        "floor scorecam": floor_scorecam,
        "pytorch-grad-cam ScoreCAM": pgc(ScoreCAM),
        "torchcam ScoreCAM": torchcam_scorecam,
        "camexp ablationcam": lambda j, x: explainers["ablationcam"].explain(x),
        "floor ablationcam": floor_ablationcam,
        "pytorch-grad-cam AblationCAM": pgc(AblationCAM),
    }
    contenders = {name: fn for name, fn in contenders.items() if name not in skip}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name, fn in contenders.items():
            times[name].append(timed(fn))
            print(f"round {r + 1}/{rounds} {name:30s} {times[name][-1]:8.2f} s", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    count = sum(len(x) for x in batches)
    totals = {m: {key: sum(c[m][key] for c in counts) for key in counts[0][m]} for m in explainers}
    ratios = {}
    if "floor scorecam" in med:
        ratios["camexp/floor scorecam wall (target <= 1.10)"] = med["camexp scorecam"] / med["floor scorecam"]
    peers = [med[p] for p in ("pytorch-grad-cam ScoreCAM", "torchcam ScoreCAM") if p in med]
    if peers:
        ratios["faster peer/camexp scorecam wall (speed-up, target >= 3)"] = min(peers) / med["camexp scorecam"]
    if "floor ablationcam" in med:
        ratios["camexp/floor ablationcam wall"] = med["camexp ablationcam"] / med["floor ablationcam"]
    if "pytorch-grad-cam AblationCAM" in med:
        ratios["pytorch-grad-cam/camexp ablationcam wall (speed-up, target >= 5)"] = (
            med["pytorch-grad-cam AblationCAM"] / med["camexp ablationcam"]
        )
    # Where Score-CAM's time goes: how many masked images each side forwards, and how fast.
    profile: dict[str, float] = {
        "scorecam masked images, camexp": totals["scorecam"]["forwards"],
        "scorecam masked images, peers": count * k,
    }
    profile["fewer forwards (constant channels skipped)"] = count * k / totals["scorecam"]["forwards"]
    for name in ("camexp scorecam", "floor scorecam", "pytorch-grad-cam ScoreCAM", "torchcam ScoreCAM"):
        if name in med:
            done = count * k if name.startswith(("pytorch", "torchcam")) else totals["scorecam"]["forwards"]
            profile[f"masked images/s, {name}"] = done / med[name]
    return {
        "images": count,
        "model": where.model,
        "batch_size": batch_size,
        "rounds": rounds,
        "channels": k,
        "chunk": chunk,
        "profile": profile,
        "threads": torch.get_num_threads(),
        "images_dir": str(images),
        "counts": totals,
        "seconds": times,
        "median_s": med,
        "images_per_s": {name: count / v for name, v in med.items()},
        "ratios": ratios,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


MAPS_METHODS = ("gradcam", "gradcam+", "gradcam++", "cam", "xgradcam", "layercam")  # six methods, all cheap


def maps_bench(images: Path, n: int | None, batch_size: int, workers: int | str, rounds: int) -> dict:
    """`output: {maps: true}` against off, alternating rounds of the same run (each order first in turn; six cheap
    methods, so the maps' share of the time is as large as it gets): the batch loop's extra seconds, the maps
    job's own seconds (run.json's profile) and the folder's bytes, per 1,000 images; then what float16 loses
    against float32 on the same real maps (`maps_precision`)."""
    tmp = Path(tempfile.mkdtemp(prefix="camexp-bench-maps-"))
    off = camexp_config(images, n, batch_size, workers, tmp / "off", methods=MAPS_METHODS)
    on = off.model_copy(update={"output": OutputConfig(dir=tmp / "on", maps=True)})
    times: dict[str, list[float]] = {"off": [], "on": []}
    job_s: list[float] = []
    for r in range(rounds):
        for name, cfg in (("off", off), ("on", on))[:: 1 if r % 2 == 0 else -1]:  # either order goes first
            times[name].append(run_camexp(cfg))
            print(f"round {r + 1}/{rounds} maps {name:3s} {times[name][-1]:7.2f} s", flush=True)
        job_s.append(read_json(tmp / "on" / RUN_JSON)["profile"]["stages"][JOB + MAPS_DIR]["seconds"])
    images_n = int(read_json(tmp / "on" / RUN_JSON)["images_recorded"])
    files = list((tmp / "on" / MAPS_DIR).iterdir())
    med = {k: statistics.median(v) for k, v in times.items()}
    per_1000 = 1000 / images_n
    return {
        "images": images_n,
        "methods": list(MAPS_METHODS),
        "batch_size": batch_size,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "images_dir": str(images),
        "seconds": times,
        "median_s": med,
        "extra_s_per_1000_images": (med["on"] - med["off"]) * per_1000,
        "extra_share": med["on"] / med["off"] - 1,
        "maps_job_s_per_1000_images": statistics.median(job_s) * per_1000,  # its stage in run.json's profile
        "shards": sum(f.suffix == SHARD_SUFFIX for f in files),
        "bytes_per_1000_images": sum(f.stat().st_size for f in files) * per_1000,
        "index_csv_bytes_per_1000_images": (tmp / "on" / MAPS_DIR / MAPS_INDEX).stat().st_size * per_1000,
        "allocated_bytes_per_1000_images": sum(f.stat().st_blocks * 512 for f in files) * per_1000,
        "precision": maps_precision(on),
    }


def maps_precision(cfg: ExperimentConfig) -> dict:
    """float16 against float32 on the run's own maps: each kept map (`read_maps`) beside the float32 normalised
    layer map it was rounded from (the explainer again), and both upsampled to the input and normalised as the
    run scores them: the largest absolute and relative errors, and the lowest Spearman rank correlation and
    top-20 % IoU between the two upsampled maps (camexp/metrics/similarity.py, as the consistency report)."""
    from camexp.explain.core import Explainer
    from camexp.explain.maps import normalize, upsample_normalize
    from camexp.metrics.similarity import rank, spearman, top_iou

    loaded = build_model(cfg.model)
    explainer = Explainer(loaded, list(cfg.method_names))
    kept = read_maps(cfg.output_dir).set_index(["image_id", "method"])["map"]
    ds = build_dataset(cfg.dataset, loaded.spec)
    abs_err, rel_err, rho, iou = [], [], [], []
    for batch in run_loader(cfg, ds):
        ex = explainer.explain(batch["image"], None, batch["image_id"])
        for m in cfg.method_names:
            exact = normalize(ex.layer_maps[m])[0]
            half = torch.stack([torch.from_numpy(kept[(i, m)]) for i in batch["image_id"]])
            abs_err.append(float((half - exact).abs().max()))
            big = exact >= 1e-3  # float16's relative spacing holds above its subnormals; report where maps matter
            rel_err.append(float(((half - exact).abs() / exact.clamp(min=1e-3))[big].max()))
            size = tuple(batch["image"].shape[-2:])
            up32, up16 = upsample_normalize(exact, size)[0].flatten(1), upsample_normalize(half, size)[0].flatten(1)
            for a, b in zip(up32.numpy(), up16.numpy()):
                ra, rb = rank(a), rank(b)
                rho.append(spearman(ra, rb))
                iou.append(top_iou(ra, rb, 0.2))
    return {
        "maps": len(rho),
        "max_abs_error_layer_maps": max(abs_err),
        "max_rel_error_layer_maps_ge_1e-3": max(rel_err),
        "min_spearman_upsampled": min(rho),
        "median_spearman_upsampled": statistics.median(rho),
        "min_top20_iou_upsampled": min(iou),
    }


def workers_arg(value: str) -> int | str:
    return value if value == "auto" else int(value)


def nvidia_driver() -> str | None:
    """The NVIDIA driver's version as nvidia-smi reports it; None without nvidia-smi."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def environment(where: Where) -> dict:
    """What a speed figure needs beside it: the device and its driver, the library versions, the TF32 flags the
    contenders ran under, the model, amp and decoder, and the exact command."""
    device = where.device
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
        "driver": nvidia_driver() if cuda else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}
        if cuda
        else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "cpus": os.cpu_count(),
        "model": where.model,
        "weights": loaded_config(where.model).weights,
        "amp": where.amp,
        "decode": where.decode,
        "argv": sys.argv,
        "command": shlex.join(["python", *sys.argv]),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=None, help="folder of images (default: shared ILSVRC subset)")
    p.add_argument("--limit", type=int, default=None, help="use the first N images")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default 16; 2 with --family)")
    p.add_argument(
        "--workers",
        type=workers_arg,
        default=RuntimeConfig().workers,
        help="DataLoader workers (all contenders): a number or auto",
    )
    p.add_argument(
        "--loader",
        action="store_true",
        help="camexp beside its loader floor and model floor, per --loader-workers setting, instead",
    )
    p.add_argument("--loader-workers", type=workers_arg, nargs="+", default=[0, 1])
    p.add_argument(
        "--methods",
        "--loader-methods",
        dest="methods",
        nargs="+",
        default=["gradcam", "gradcam++"],
        help="the methods of --loader, --decode-diff and --device-diff",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda", "auto"],
        default="cpu",
        help="device of --loader, --family, --decode-diff and --device-diff (auto: CUDA when present)",
    )
    p.add_argument(
        "--model", default=LITE0, help=f"timm model ({LITE0}: its package weights; any other: weights: random)"
    )
    p.add_argument("--amp", choices=["off", "bf16"], default="off", help="runtime.amp of the explanation forwards")
    p.add_argument("--decode", choices=["cpu", "gpu"], default="cpu", help="runtime.decode (gpu: CUDA only)")
    p.add_argument(
        "--cycled", action="store_true", help="repeat the folder's images up to --limit (e.g. 1,024 from 150 files)"
    )
    p.add_argument(
        "--device-diff",
        action="store_true",
        help="the same images by camexp run on the CPU and on --device (decode: cpu): targets, |dO|, |dY|",
    )
    p.add_argument(
        "--decode-diff",
        action="store_true",
        help="|dO| of the tensor decode + resize path against the PIL path instead",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip", nargs="*", default=[], help="contenders to leave out (not camexp)")
    p.add_argument("--rss", action="store_true", help="measure peak RSS of camexp runs instead")
    p.add_argument("--rss-sizes", type=int, nargs="+", default=[200, 2000])
    p.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--only", choices=["stats"], default=None, help="run one section only (stats: the bootstrap)")
    p.add_argument(
        "--stats-size",
        type=int,
        nargs=3,
        default=[50_000, 10, 1000],
        metavar=("IMAGES", "METHODS", "RESAMPLES"),
        help="size of the bootstrap measurement",
    )
    p.add_argument("--rss-metrics", nargs="*", default=[], help="per-batch metrics added to the --rss runs")
    p.add_argument("--metrics", action="store_true", help="bench the per-batch metrics against their peers instead")
    p.add_argument(
        "--family",
        action="store_true",
        help="bench Score-CAM and Ablation-CAM against their floors and the peers instead",
    )
    p.add_argument(
        "--maps", action="store_true", help="output.maps on against off (time, disk) and float16 against float32"
    )
    p.add_argument("--rss-methods", nargs="+", default=METHODS, help="the methods of the --rss runs")
    p.add_argument("--steps", type=int, default=20, help="insertion/deletion steps (--metrics, --rss-metrics)")
    p.add_argument("--road-percentiles", type=int, nargs="+", default=[10, 20, 30, 40, 50, 60, 70, 80, 90])
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench.json")
    a = p.parse_args(argv)
    try:
        a.where = Where(resolve_device(a.device), a.model, a.amp, a.decode)
    except CamexpError as e:
        p.error(str(e))
    if a.where != CPU and not (a.loader or a.family or a.decode_diff or a.device_diff or a.rss or a.rss_child):
        p.error(
            "--device, --model, --amp and --decode apply to --loader, --family, --decode-diff, --device-diff and --rss"
        )
    if a.decode == "gpu" and a.where.device.type != "cuda":
        p.error("--decode gpu decodes JPEGs on a CUDA device: use it with --device cuda (or auto on a GPU machine)")
    return a


def main() -> None:
    a = parse_args()
    where: Where = a.where
    kind = CYCLED if a.cycled else "folder"
    disable_tf32(where.device)  # as every camexp run does; the peers and floors run under the same flags
    # camexp's runs set glibc's allocator thresholds (camexp.accel.keep_host_memory); set them before any
    # contender runs, so that every one is timed under the same allocator, whatever ran before it.
    allocator = keep_host_memory()
    stats_size = (*a.stats_size, a.rounds)
    if a.only == "stats":
        out = a.out.with_name(a.out.stem + "_stats.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(bench_stats(*stats_size), indent=2))
        print(f"wrote {out}")
        return
    images = a.images or default_images()
    batch_size = a.batch_size or (2 if a.family else 16)
    if a.rss_child is not None:
        return rss_child(
            images, a.rss_child, batch_size, a.workers, tuple(a.rss_metrics), a.steps, tuple(a.rss_methods), where
        )
    if a.rss:
        result = rss(
            images, a.rss_sizes, batch_size, a.workers, tuple(a.rss_metrics), a.steps, tuple(a.rss_methods), where
        )
        out = a.out.with_name(a.out.stem + "_rss.json")
    elif a.family:
        result = family_bench(images, a.limit or 2, batch_size, a.rounds, a.skip, where)
        out = a.out.with_name(a.out.stem + "_family.json")
        for k, v in result["median_s"].items():
            print(f"{k:30s} median {v:8.2f} s for {result['images']} images ({result['images_per_s'][k]:.3f} img/s)")
        for k, v in result["ratios"].items():
            print(f"{k:62s} {v:.3f}")
        print(f"channels skipped and model calls: {result['counts']}")
        for k, v in result["profile"].items():
            print(f"{k:62s} {v:.2f}")
    elif a.loader:
        result = loader_bench(
            images, a.limit or 64, batch_size, a.loader_workers, a.rounds, tuple(a.methods), where, kind
        )
        out = a.out.with_name(a.out.stem + "_loader.json")
        for k, v in result["images_per_s"].items():
            print(f"{k:20s} {v:7.2f} img/s  (median {result['median_s'][k]:.2f} s for {result['images']} images)")
        for k, v in result["ratios"].items():
            print(f"{k:42s} {v:.3f}")
    elif a.decode_diff:
        result = decode_diff(images, a.limit, batch_size, tuple(a.methods), where, kind)
        out = a.out.with_name(a.out.stem + "_decode.json")
        print(json.dumps(result, indent=2))
    elif a.device_diff:
        result = device_diff(images, a.limit or 32, batch_size, tuple(a.methods), where, kind)
        out = a.out.with_name(a.out.stem + "_device.json")
        print(json.dumps(result, indent=2))
    elif a.maps:
        result = maps_bench(images, a.limit, batch_size, a.workers, a.rounds)
        out = a.out.with_name(a.out.stem + "_maps.json")
        print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=2))
    elif a.metrics:
        result = metrics_bench(images, a.limit or 4, batch_size, a.steps, a.road_percentiles, a.rounds)
        out = a.out.with_name(a.out.stem + "_metrics.json")
        for k, v in result["median_s"].items():
            print(f"{k:34s} median {v:7.2f} s for {result['images']} images")
        for k, v in result["ratios"].items():
            print(f"{k:58s} {v:.3f}")
    else:
        result = bench(images, a.limit, batch_size, a.workers, a.rounds, a.skip)
        result["stats"] = bench_stats(*stats_size)
        out = a.out
        for k, v in result["images_per_s"].items():
            print(f"{k:20s} {v:7.2f} img/s  (median {result['median_s'][k]:.2f} s for {result['images']} images)")
        for k, v in result["ratios"].items():
            print(f"{k:36s} {v:.3f}")
        print(f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    result["host_allocator"] = allocator
    result["environment"] = environment(where)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
