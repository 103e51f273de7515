"""`--loader`: camexp's images/s beside its loader floor and model floor, per workers setting."""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from camexp.config import ExperimentConfig
from camexp.data import build_dataset
from camexp.data.loader import loader_settings

from .common import CPU, Where, camexp_config, floor_ratios, loader_floor, model_floor, run_camexp, run_loader


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
