"""`--only stats` (and a part of the default section): the bootstrap's time and memory on synthetic values."""

from __future__ import annotations

import os
import statistics
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import torch

from camexp.config import StatsConfig
from camexp.metrics import MetricParams, RecordsView
from camexp.report.uncertainty import compute_stats
from camexp.stats.bootstrap import resample_means


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
