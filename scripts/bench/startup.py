"""`--startup`: how long camexp takes to start, every command a fresh process. `camexp methods` to its exit, and
`camexp run` to the end of its first batch: a run of one batch (Lite0 with its package weights) is timed from the
spawn to the moment its run.json appears (the runner writes it just before the batch loop) plus the loop's seconds
that run.json then records; the spawn to the run's exit is reported beside it. Each with the environment's bytecode
(PYTHONDONTWRITEBYTECODE=1: what `make setup` compiled is read, nothing is written) and with none
(PYTHONPYCACHEPREFIX at an empty folder as well: every module is compiled again, in memory), in alternating
rounds, the order reversed every other round; the median round."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from camexp.results import RUN_JSON, read_json

from .common import camexp_config

CAMEXP = [sys.executable, "-m", "camexp"]


def methods_seconds(env: dict[str, str], folder: Path) -> dict[str, float]:
    """`camexp methods`, spawn to exit."""
    start = time.perf_counter()
    subprocess.run([*CAMEXP, "methods"], env=env, check=True, stdout=subprocess.DEVNULL)
    return {"methods": time.perf_counter() - start}


def run_seconds(env: dict[str, str], folder: Path) -> dict[str, float]:
    """`camexp run` of the one-batch config in `folder`: spawn to the end of the first batch, and to exit."""
    out = folder / "run"
    (out / RUN_JSON).unlink(missing_ok=True)
    start = time.perf_counter()
    argv = [*CAMEXP, "run", str(folder / "config.yaml"), "--fresh", "--no-progress"]
    run = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    while not (out / RUN_JSON).exists() and run.poll() is None:
        time.sleep(0.005)
    loop_start = time.perf_counter() - start
    if run.wait():
        raise subprocess.CalledProcessError(run.returncode, run.args)
    return {
        "run_first_batch": loop_start + read_json(out / RUN_JSON)["wall_time_s"],
        "run_exit": time.perf_counter() - start,
    }


def startup_bench(images: Path, n: int, workers: int | str, rounds: int) -> dict:
    """Median seconds of each command with and without a bytecode cache, and their ratio."""
    folder = Path(tempfile.mkdtemp(prefix="camexp-bench-startup-"))
    cfg = camexp_config(images, n, n, workers, folder / "run")
    (folder / "config.yaml").write_text(json.dumps(cfg.model_dump(mode="json", exclude_defaults=True)))  # JSON is YAML
    empty = folder / "no-pycache"
    empty.mkdir()
    compiled = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"} | {"PYTHONDONTWRITEBYTECODE": "1"}
    caches = {"compiled": compiled, "no cache": compiled | {"PYTHONPYCACHEPREFIX": str(empty)}}
    times: dict[str, dict[str, list[float]]] = {c: {} for c in caches}
    for r in range(rounds):
        for cache in list(caches)[:: 1 if r % 2 == 0 else -1]:
            for command in (methods_seconds, run_seconds):
                for name, seconds in command(caches[cache], folder).items():
                    times[cache].setdefault(name, []).append(seconds)
                    print(f"round {r + 1}/{rounds} {cache:8s} {name:16s} {seconds:7.2f} s", flush=True)
    med = {c: {name: statistics.median(v) for name, v in t.items()} for c, t in times.items()}
    return {
        "images": n,
        "batch_size": n,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "load_average_after": os.getloadavg(),
        "images_dir": str(images),
        "camexp": CAMEXP,
        "config": cfg.model_dump(mode="json", exclude_defaults=True),
        "seconds": times,
        "median_s": med,
        "no_cache/compiled": {name: med["no cache"][name] / med["compiled"][name] for name in med["compiled"]},
    }
