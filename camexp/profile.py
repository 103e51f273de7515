"""Where a run's time goes: wall time per stage of the batch loop, for run.json and `camexp run --profile`.

The loop marks the end of each stage with one call, `lap(name)`: the time since the previous mark is
charged to `name`. Every second between the profile's start and its end is therefore charged to exactly
one stage, and a hook is one line wherever it sits (the runner's loop, the explainer's methods), with no
block to indent. Outside an active profile `lap` does nothing, so code that is also called directly (the
bench, the tests) needs no second version.

On a GPU, kernels run asynchronously: without a synchronisation the time of a stage's kernels lands in the
first later stage that waits for a result. With `synchronize` (`runtime.profile: true`, which `--profile`
sets) every mark first waits for the device, so each stage is charged its own kernels, at the cost of the
overlap between launching and running them; run.json says which it was.

The profile also keeps the loop's peak memory: the host process's resident set (the kernel's high-water mark
for the whole process, model loading included) and, on CUDA, the caching allocator's peak of allocated tensors
from the loop's start, so that a long run can be checked for memory that grows with the images.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

# Stage names the runner and the explainer use; a method's own model calls are charged to METHOD + its name, a
# per-batch job's work (a per-batch metric or an analysis, camexp/jobs.py) to JOB + its name.
WAIT_LOADER = "waiting for the loader"
DECODE_DEVICE = "decoding on the device"
SHARED_PASS = "shared forward + head backward"
METHOD = "method "
EXPLANATION_FORWARDS = "explanation-image forwards"
JOB = "job "
RECORDS = "writing records"


@dataclass
class StageTimer:
    """Seconds and marks per stage, in the order the stages first ended."""

    device: torch.device
    synchronize: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    _last: float = field(init=False)

    def __post_init__(self) -> None:
        if self._cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self._last = time.perf_counter()

    @property
    def _cuda(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_available()

    def lap(self, name: str) -> None:
        """Charge the time since the previous mark (or the start) to stage `name`."""
        if self.synchronize and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self.calls[name] = self.calls.get(name, 0) + 1
        self._last = now

    def summary(self) -> dict[str, Any]:
        """run.json's `profile`: every stage's seconds and share of the total, and how they were taken."""
        total = sum(self.seconds.values())
        return {
            "synchronized": self.synchronize and self.device.type == "cuda",
            "device": str(self.device),
            "total_s": round(total, 4),
            "peak_host_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_device_mib": round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1) if self._cuda else None,
            "stages": {
                name: {
                    "seconds": round(s, 4),
                    "share": round(s / total, 4) if total else 0.0,
                    "marks": self.calls[name],
                }
                for name, s in self.seconds.items()
            },
        }


_active: list[StageTimer] = []


@contextmanager
def profiled(device: torch.device, synchronize: bool = False) -> Iterator[StageTimer]:
    """Make a fresh timer the target of `lap` while the block runs."""
    timer = StageTimer(device, synchronize)
    _active.append(timer)
    try:
        yield timer
    finally:
        _active.remove(timer)


def lap(name: str) -> None:
    """Charge the time since the previous mark to stage `name` of the active profile (no-op without one)."""
    if _active:
        _active[-1].lap(name)


def table(profile: dict[str, Any]) -> str:
    """A run.json `profile` as a plain-text table, slowest stage first, with a line on how it was timed."""
    stages = sorted(profile["stages"].items(), key=lambda kv: -kv[1]["seconds"])
    width = max([len("stage"), *(len(name) for name, _ in stages)])
    lines = [f"{'stage':<{width}}  {'seconds':>9}  {'share':>6}  {'marks':>6}"]
    lines += [
        f"{name:<{width}}  {v['seconds']:>9.3f}  {100 * v['share']:>5.1f}%  {v['marks']:>6}" for name, v in stages
    ]
    lines.append(f"{'total':<{width}}  {profile['total_s']:>9.3f}")
    if profile["device"].startswith("cuda") and not profile["synchronized"]:
        lines.append("not synchronised: a stage's GPU kernels may be charged to a later stage (runtime.profile: true)")
    if "peak_host_rss_mib" in profile:  # run.json files written before the profile kept memory have none
        device = profile["peak_device_mib"]
        lines.append(
            f"peak memory: host {profile['peak_host_rss_mib']:,.0f} MiB"
            + ("" if device is None else f", {profile['device']} {device:,.0f} MiB allocated")
        )
    return "\n".join(lines)
