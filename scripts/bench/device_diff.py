"""`--device-diff`: the same images by camexp run on the CPU and on --device: targets, |dO| and |dY|."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from camexp.results import RECORDS, RUN_JSON, read_json, read_records

from .common import Where, camexp_config, run_camexp, spread


def device_diff(
    images: Path, n: int | None, batch_size: int, methods: tuple[str, ...], where: Where, kind: str = "folder"
) -> dict:
    """The same images through `camexp run` on the CPU and on `where`'s device, both with `decode: cpu` (and the
    same amp): whether every target agrees, |dO| per (image, method) record and |dY| per image. Measured and reported,
    never asserted: the bar the issue sets is targets equal and |dO| <= 1e-4."""
    tmp = Path(tempfile.mkdtemp(prefix="camexp-bench-devdiff-"))
    sides = {"cpu": replace(where, device=torch.device("cpu"), decode="cpu"), "device": replace(where, decode="cpu")}
    records, runs = {}, {}
    for side, at in sides.items():
        cfg = camexp_config(images, n, batch_size, 0, tmp / side, kind=kind, methods=methods, where=at)
        run_camexp(cfg)
        records[side] = read_records(cfg.output_dir / RECORDS).set_index(["image_id", "method"]).sort_index()
        meta = read_json(cfg.output_dir / RUN_JSON)
        runs[side] = {k: meta[k] for k in ("device", "device_name", "amp", "tf32", "wall_time_s", "images_per_s")}
        runs[side]["decoder"] = meta["loader"]["decoder"]
    cpu, dev = records["cpu"], records["device"].reindex(records["cpu"].index)
    same = (cpu["target"] == dev["target"]).groupby(level="image_id").all()
    do = (cpu["o"] - dev["o"]).abs()
    dy = (cpu["y"] - dev["y"]).abs().groupby(level="image_id").max()  # Y is the image's, on each method's row
    return {
        "images": len(same),
        "records": len(cpu),
        "methods": list(methods),
        "model": where.model,
        "amp": where.amp,
        "images_dir": str(images),
        "targets_agree": int(same.sum()),
        "all_targets_agree": bool(same.all()),
        "abs_dO": spread(do.dropna().tolist()),
        "abs_dY": spread(dy.dropna().tolist()),
        "within_1e-4": bool(same.all() and do.max() <= 1e-4),
        "runs": runs,
    }
