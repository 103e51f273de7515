"""What the benchmarks share: the images, the model and where it runs (Where), a camexp config for a bench run,
camexp's run timed as run.json records it, the loader and model floors, and the environment block of every JSON."""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torchvision
from torch import nn

from camexp.accel import autocast, channels_last, chunks, forward_chunk, resolve_device, to_device
from camexp.config import DatasetConfig, ExperimentConfig, ModelConfig, OutputConfig, RuntimeConfig
from camexp.data import LOADERS, ImageDataset, Listing, list_dataset
from camexp.data.loader import loader_settings, make_loader
from camexp.models import LoadedModel, PixelModel, build_model
from camexp.results import RUN_JSON, read_json
from camexp.runner import run_experiment

REPO = Path(__file__).resolve().parents[2]
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


def run_camexp(cfg: ExperimentConfig) -> float:
    """camexp's own runner on a fresh folder; the batch loop's time as run.json records it."""
    run_experiment(cfg, fresh=True, progress=False)
    return float(read_json(cfg.output_dir / RUN_JSON)["wall_time_s"])


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


def user_model(loaded: LoadedModel) -> PixelModel:
    """The model as a library user holds it: same weights, parameters trainable (the default)."""
    return loaded.model.requires_grad_(True).eval()


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


def spread(v: list[float]) -> dict[str, float]:
    """Median, 99th percentile, largest and mean of `v` (NaN for none)."""
    q = np.quantile(v, [0.5, 0.99, 1.0]) if v else [float("nan")] * 3
    return {
        "median": float(q[0]),
        "p99": float(q[1]),
        "max": float(q[2]),
        "mean": float(np.mean(v)) if v else float("nan"),
    }


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
        "command": shlex.join(["python", "-m", "scripts.bench", *sys.argv[1:]]),
    }


def warm_rounds(
    contenders: dict[str, Callable[[], float]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each contender (a function returning its seconds) once per round, in turn, after a warm-up round 0 that
    is not counted (oneDNN builds its kernels for every shape): the seconds per round and their medians."""
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(rounds + 1):
        for name, fn in contenders.items():
            seconds = fn()
            if r:
                times[name].append(seconds)
            print(f"round {r}/{rounds} {name:34s} {seconds:7.2f} s{'' if r else ' (warm-up)'}", flush=True)
    return times, {k: statistics.median(v) for k, v in times.items()}


def alternate(
    contenders: dict[str, Callable[[int, torch.Tensor], object]], batches: list[torch.Tensor], rounds: int, where: Where
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each contender over all `batches` (called with the batch's index and the batch), timed by `warm_rounds`
    with the device synchronised before the clock stops: the seconds of every round and the median, per contender."""

    def timed(fn: Callable[[int, torch.Tensor], object]) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            for j, x in enumerate(batches):
                fn(j, x)
            where.sync()
            return time.perf_counter() - start

        return run

    return warm_rounds({name: timed(fn) for name, fn in contenders.items()}, rounds)


def print_timings(result: dict) -> None:
    """A peer section's median times, images/s and ratios, as --family and --attributions print them."""
    for k, v in result["median_s"].items():
        print(f"{k:30s} median {v:8.2f} s for {result['images']} images ({result['images_per_s'][k]:.3f} img/s)")
    for k, v in result["ratios"].items():
        print(f"{k:62s} {v:.3f}")
