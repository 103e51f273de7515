"""Scale-out with torch.distributed: torchrun's environment gives each process a rank and a disjoint shard.

Each rank explains every world-th batch of the pending images, appends to its own records file, and rank 0 merges
the files after a barrier (camexp/runner.py). gloo on CPU, NCCL on CUDA (one GPU per rank: cuda:LOCAL_RANK).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from camexp.errors import CamexpError

T = TypeVar("T")
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job; the default is a single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list[T], batch_size: int) -> list[T]:
        """Whole batches, round robin: batch k of `items` goes to rank k % world.

        Every image then meets the same batch-mates as in a single-process run, so the records do not
        depend on the number of processes (batch composition can change float results in the last bits).
        """
        step = batch_size * self.world
        return [
            it for start in range(self.rank * batch_size, len(items), step) for it in items[start : start + batch_size]
        ]

    def device(self, device: torch.device) -> torch.device:
        """One GPU per rank on a node; a CPU stays a CPU."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.backend else device

    def gather(self, obj: T) -> list[T]:
        """Every rank's `obj` (picklable), in rank order, on every rank; [obj] in a single process."""
        if not self.backend:
            return [obj]
        out: list[T] = [obj] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        elif self.backend:
            dist.barrier()


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in TORCHRUN_ENV)


@contextmanager
def process_group(device: torch.device, distributed: bool | None) -> Iterator[Ranks]:
    """Join the torchrun job for the run's duration. `distributed` None: join when launched by torchrun."""
    if distributed is None:
        distributed = launched_by_torchrun()
    if not distributed:
        yield Ranks()
        return
    if not launched_by_torchrun():
        missing = [k for k in TORCHRUN_ENV if k not in os.environ]
        raise CamexpError(
            f"--distributed needs torchrun's environment ({', '.join(missing)} not set): launch with "
            "`torchrun --nproc_per_node=N -m camexp run CONFIG` (see docs/guide/torchrun.md)"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend)
    try:
        yield Ranks(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    finally:
        dist.destroy_process_group()
