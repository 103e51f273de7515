"""Device-side speed settings in one place: autocast for the explanation forward and the memory layout.

`runtime.amp` autocasts only the batched forward of the M explanation images (M of the 1 + M passes). The
pass that yields the targets, Y, A and G stays in float32: measured on 16 ILSVRC2012 images, bf16 in that
pass already changed one image's top-1 class, and a target must not depend on a speed setting.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from functools import cache

import torch

from camexp.errors import CamexpError


def resolve_device(name: str) -> torch.device:
    """`runtime.device` as a torch device: 'auto' picks CUDA when present; an unusable name is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CamexpError(f"runtime.device {name!r}: no CUDA device is available here (use 'cpu' or 'auto')")
    try:
        return torch.device(name)
    except RuntimeError:
        raise CamexpError(f"runtime.device {name!r} is not a torch device (auto, cpu, cuda, cuda:1, ...)") from None


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str) -> AbstractContextManager:
    """Autocast context for `amp` ('off', 'bf16', 'fp16') on `device`'s type; a no-op for 'off'."""
    if amp == "off":
        return nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def disable_tf32(device: torch.device) -> None:
    """Turn off TF32 for convolutions and matrix products on CUDA (PyTorch lets cuDNN use TF32 convolutions by
    default on Ampere and later): measured on an H100, TF32 moved Lite0's per-image O by up to 1.7e-3 against
    the CPU. Reduced precision is what `runtime.amp` asks for explicitly; run.json records `tf32: false`."""
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


# glibc's mallopt parameters (malloc.h) and the values camexp sets: serve every block below 1 GiB from the
# heap and never hand freed memory at the heap's top back to the OS.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
HOST_ALLOCATOR = {"mmap_threshold": 1 << 30, "trim_threshold": (1 << 31) - 1}


def keep_host_memory() -> dict[str, int] | None:
    """Have glibc's malloc keep freed memory in the process, for the whole process (a run calls it once).

    By default glibc serves blocks above a dynamic threshold (32 MiB at most) with mmap and returns freed
    memory at the top of the heap, so a CPU forward whose activations are larger page-faults them in anew
    on every call. On 2 cores, Lite0 forwards ran 1.1-1.4x faster in channels_last (80-101 -> 113 images/s
    in forwards of 8) and 2-2.5x in NCHW once both thresholds were raised; values are unchanged, and memory
    is reused rather than returned (the peak stays). The default thresholds also change with the process's
    history (freeing an mmapped block raises them), so a benchmark that does not set them times contenders
    under different allocators. Returns the settings glibc accepted (run.json's `host_allocator`), {} where
    it refused them, None where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    codes = {"mmap_threshold": M_MMAP_THRESHOLD, "trim_threshold": M_TRIM_THRESHOLD}
    return {key: value for key, value in HOST_ALLOCATOR.items() if mallopt(codes[key], value) == 1}


def channels_last(device: torch.device) -> bool:
    """Whether to run convolutions in NHWC: cuDNN's tensor-core kernels want it, and oneDNN on CPU ran
    EfficientNet-Lite0 1.8x faster in it (48 images at 224, 2 cores). It moves logits by ~5e-6."""
    return device.type in ("cuda", "cpu")


@cache
def host_threads() -> ThreadPoolExecutor:
    """Host threads for serial host work that releases the GIL (numpy's generators), one per torch thread: with
    an accelerator the robustness metrics draw each image's seeded noise on one of them, all images at once (on
    the CPU, torch's own threads hold the cores). Made on first use, shared by the process; a forked child (a
    loader worker) makes its own."""
    return ThreadPoolExecutor(max(1, torch.get_num_threads()), thread_name_prefix="camexp-host")


os.register_at_fork(after_in_child=host_threads.cache_clear)


CPU_FORWARD_CHUNK = 8
MAX_FORWARD = 256  # images per forward where the run sets no forward_chunk (a GPU): bounds memory


def forward_chunk(device: torch.device, configured: int | None) -> int | None:
    """Images per forward pass of the explanation images: the config's `runtime.forward_chunk`, else 8 on
    CPU and all M*B at once on a GPU. On 2 CPU cores, Lite0's 48 explanation images of a batch of 16 took
    4.4 s in one forward, 3.5 s in chunks of 16 and 2.4 s in chunks of 8 (cache-sized batches)."""
    if configured is not None:
        return configured
    return CPU_FORWARD_CHUNK if device.type == "cpu" else None


# The share of the host's physical memory that one pass of the images a method generates (integrated gradients'
# steps, SmoothGrad's copies, RISE's masks, occlusion's windows) may hold on the CPU (`pass_budget`).
PASS_MEMORY_SHARE = 4


def pass_budget(device: torch.device, configured: int | None) -> int | None:
    """Bytes of activations one pass of the images a method generates may hold: 1/PASS_MEMORY_SHARE of physical
    memory on the CPU; None where the run sets `runtime.forward_chunk` or on a GPU, where those passes run in the
    forward chunks. On the shared 2-core CPU the cost is per pass more than per image (each of a pass's ~200 ops
    synchronises the threads, and under load a descheduled thread stalls the other): 64 Lite0 forward + input
    backwards took 28-37 s in passes of 8 and 15 s in one pass (~80 MiB per image), 64 forwards 8-14 s and 5-6 s."""
    if configured is not None or device.type != "cpu":
        return None
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // PASS_MEMORY_SHARE


def even_chunk(n: int, chunk: int | None) -> int | None:
    """The chunk that cuts n items into as few passes as chunks of `chunk` do, of near-equal sizes (no short
    last pass: 32 in chunks of 31 run as 16 + 16, not 31 + 1)."""
    if chunk is None or n <= 0:
        return chunk
    return -(-n // -(-n // chunk))


def chunks(n: int, chunk: int | None) -> Iterator[slice]:
    """The one chunked-forward policy of every batched forward (scorer, tail, per-batch metrics): n images in
    forwards of `chunk` (`forward_chunk`), or of at most MAX_FORWARD where there is none (a GPU), so that the
    memory of one forward stays bounded however many images a metric or method generates."""
    step = chunk or MAX_FORWARD
    return (slice(lo, min(lo + step, n)) for lo in range(0, n, step))


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a (pinned) host batch without waiting for it, in the memory layout the device prefers."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last(device) else x
