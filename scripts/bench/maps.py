"""`--maps`: output.maps on against off (time, disk), and float16 against float32 on the same maps."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch

from camexp.config import ExperimentConfig, OutputConfig
from camexp.data import build_dataset
from camexp.models import build_model
from camexp.profile import JOB
from camexp.results import MAPS_DIR, MAPS_INDEX, RUN_JSON, SHARD_SUFFIX, read_json, read_maps

from .common import camexp_config, run_camexp, run_loader

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
    top-20 % IoU between the two upsampled maps (camexp/stats/similarity.py, as the consistency report)."""
    from camexp.explain.core import Explainer
    from camexp.explain.maps import normalize, upsample_normalize
    from camexp.stats.similarity import rank, spearman, top_iou

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
