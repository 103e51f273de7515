"""`--rss`: peak memory of camexp runs of each size, each in a fresh process."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from camexp.results import RUN_JSON, read_json

from .common import CPU, CYCLED, METHODS, Where, camexp_config, run_camexp


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
            "-m",
            "scripts.bench",
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
