"""The run's batches: DataLoader settings resolved from `runtime.workers` and `runtime.decode`, and JPEG
decoding on the device.

`workers: auto` resolves per device (`resolve_workers`): on CUDA, min(cores - 1, 8) worker processes decode
while the GPU computes, with pinned memory, persistent workers and two batches in flight per worker; on a
CPU the same cores would decode and compute, and the choice is the measured one (docs/guide/speed-gpu.md, 'GPU
settings').
With `decode: gpu` the workers only read JPEG files; `DeviceBatches` decodes them in batches with
torchvision.io.decode_jpeg on the device and resizes and crops them there, through the same geometry object
as the CPU path (PixelTransform), so images are the same crop of the same resize and boxes map unchanged.
Files that are not RGB or grayscale JPEGs, and JPEGs the device decoder refuses, go through the CPU path.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torchvision
from PIL import Image, features
from torch.utils.data import DataLoader, Subset
from torchvision.io import ImageReadMode, decode_jpeg

from camexp import profile
from camexp.data.base import ImageDataset, collate
from camexp.errors import ConfigError

MAX_CUDA_WORKERS = 8
# Workers when `auto` on a CPU device. Measured on 2 cores (docs/guide/speed-gpu.md): see `resolve_workers`.
CPU_AUTO_WORKERS = 0


def available_cores() -> int:
    """Cores this process may run on, shared among the processes torchrun started on this node."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def resolve_workers(setting: int | str, device: torch.device) -> int:
    """`runtime.workers` as a number: a number stays; `auto` is min(cores - 1, 8) on CUDA (one core left to
    the process that feeds the GPU) and CPU_AUTO_WORKERS on a CPU device, where the workers' decoding
    competes with the forwards for the same cores."""
    if setting != "auto":
        return int(setting)
    if device.type == "cuda":
        return max(0, min(available_cores() - 1, MAX_CUDA_WORKERS))
    return CPU_AUTO_WORKERS


@dataclass(frozen=True)
class LoaderSettings:
    """How batches reach the device; run.json's `loader`."""

    workers: int
    workers_setting: int | str
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None
    decode: str
    decoder: str

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def loader_settings(workers: int | str, decode: str, device: torch.device) -> LoaderSettings:
    """Resolve the runtime keys for `device`; `decode: gpu` without a CUDA device is a config error."""
    if decode == "gpu" and device.type != "cuda":
        raise ConfigError(
            f"runtime.decode: gpu decodes JPEGs on a CUDA device, but the run's device is {device}; "
            "use runtime.decode: cpu (the default) or a CUDA device"
        )
    n = resolve_workers(workers, device)
    cuda = device.type == "cuda"
    return LoaderSettings(
        workers=n,
        workers_setting=workers,
        pin_memory=cuda,
        persistent_workers=cuda and n > 0,
        prefetch_factor=2 if n > 0 else None,
        decode=decode,
        decoder=decoder_name(decode, device),
    )


def decoder_name(decode: str, device: torch.device) -> str:
    """The JPEG decoder in words, with the library versions that decide its rounding."""
    if decode == "gpu":
        return f"torchvision {torchvision.__version__} decode_jpeg on {device} (other files: PIL)"
    turbo = features.version("libjpeg_turbo") if features.check_feature("libjpeg_turbo") else None
    return f"PIL {Image.__version__} (libjpeg{'-turbo ' + turbo if turbo else ' ' + str(features.version('jpg'))})"


def make_loader(
    dataset: ImageDataset,
    indices: list[int],
    batch_size: int,
    device: torch.device,
    settings: LoaderSettings,
    decode_device: torch.device | None = None,
) -> DeviceBatches | DataLoader:
    """Batches of `dataset[indices]`, in order, as the settings say. `decode_device` (default: `device` when
    `decode: gpu`) is where JPEGs are decoded; the tests pass the CPU to run the device path without a GPU."""
    decode_on = decode_device or (device if settings.decode == "gpu" else None)
    if decode_on is not None and dataset.transform.spec.interpolation == "lanczos":
        raise ConfigError(
            "runtime.decode: gpu resizes tensors, which have no lanczos resampling (the model's data "
            "config asks for it); use runtime.decode: cpu"
        )
    dataset = copy.copy(dataset)  # the caller's data set keeps its own setting
    dataset.encoded = decode_on is not None
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=settings.workers,
        collate_fn=collate,
        pin_memory=settings.pin_memory,
        persistent_workers=settings.persistent_workers,
        prefetch_factor=settings.prefetch_factor,
    )
    return loader if decode_on is None else DeviceBatches(loader, dataset, decode_on)


@dataclass
class DeviceBatches:
    """A DataLoader of encoded JPEGs whose batches come out with `image` decoded, resized and cropped on
    `device` (B,3,H,W float32 in [0,1]); the rows the CPU decoded are copied in."""

    loader: DataLoader
    dataset: ImageDataset
    device: torch.device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            profile.lap(profile.WAIT_LOADER)
            batch = self.decode(batch)
            profile.lap(profile.DECODE_DEVICE)
            yield batch

    def decode(self, batch: dict[str, Any]) -> dict[str, Any]:
        encoded: list[torch.Tensor | None] = batch.pop("encoded")
        rows = [i for i, e in enumerate(encoded) if e is not None]
        data = [e for e in encoded if e is not None]
        if not rows:
            return batch
        transform = self.dataset.transform
        images = torch.empty(len(encoded), 3, *transform.spec.size, device=self.device)
        for i, image in enumerate(batch["image"]):
            if image is not None:
                images[i].copy_(image, non_blocking=True)
        for i, image in zip(rows, self._decode_jpegs(data), strict=True):
            if image is None:  # refused by the device's decoder: the CPU path decodes it, or names or flags it
                sample = self.dataset.sample(int(batch["index"][i]))
                image, batch["bad"][i] = sample["image"], sample["bad"]
                images[i].copy_(image)
            else:
                images[i] = transform.tensor(image)
        batch["image"] = images
        return batch

    def _decode_jpegs(self, data: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """uint8 (3,h,w) images on the device, decoded in one call; when the decoder refuses the batch, one by
        one, with None for each image it refuses alone."""
        decoded: list[torch.Tensor | None]
        try:
            decoded = list(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:
            decoded = [_decode_one(d, self.device) for d in data]
        return decoded


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None
