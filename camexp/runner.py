"""Streams a data set through the explainer core and appends per-image records; resumable.

Per batch: one forward + one backward (head only) give A, G and Y for every method; one batched forward of
the M explanation images gives O. Only the small per-image records leave the device, in one transfer per
batch, which is also the loop's only host sync. Under torchrun each rank takes a disjoint shard of the
pending images and writes its own records file; rank 0 merges them (camexp/distributed.py).
"""
from __future__ import annotations

import hashlib
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from camexp.accel import autocast, channels_last, forward_chunk, to_device
from camexp.analyses import ANALYSES, Analysis, BatchContext
from camexp.config import ExperimentConfig
from camexp.data import ImageDataset, build_dataset, collate
from camexp.data.filters import filter_min_true_prob
from camexp.distributed import Ranks, process_group
from camexp.errors import CamexpError
from camexp.explain.core import Explainer, Explanation
from camexp.metrics import MetricParams
from camexp.models import LoadedModel, build_model
from camexp.models.classes import head_problems, label_problems
from camexp.report.tables import RunSummary, summarize, write_summary
from camexp.results import BAD_IMAGES, RECORDS, RUN_JSON, append_records, complete_images, finalize_records, \
    merge_parts, part_path, parts, read_json, read_records, write_json


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CamexpError(f"runtime.device {name!r}: no CUDA device is available here (use 'cpu' or 'auto')")
    try:
        return torch.device(name)
    except RuntimeError:
        raise CamexpError(f"runtime.device {name!r} is not a torch device (auto, cpu, cuda, cuda:1, ...)") from None


def confidence(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Post-softmax (single-label) or post-sigmoid (multi-label) confidences, in float64."""
    z = logits.double()
    return z.softmax(1) if kind == "softmax" else z.sigmoid()


def explanation_confidence(loaded: LoadedModel, x: torch.Tensor, ex: Explanation, occlusion: str, kind: str,
                           chunk: int | None, amp: str = "off") -> torch.Tensor:
    """Confidence of each image's target on every method's explanation image: (B, M).

    `pixel`: E = L * I in [0,1] RGB, then normalised like any input (the paper); `normalized`: the map
    multiplies the already-normalised tensor (torchcam's variant, where black becomes the mean colour).
    Runs under inference mode (no autograd bookkeeping at all) and `amp` autocast.
    """
    model = loaded.model
    base = x if occlusion == "pixel" else model.normalize(x)
    stacked = torch.cat([ex.maps[m][:, None] * base for m in ex.maps])  # (M*B, 3, H, W)
    if channels_last(x.device):
        stacked = stacked.contiguous(memory_format=torch.channels_last)
    outs = []
    with torch.inference_mode(), autocast(x.device, amp):
        for part in stacked.split(chunk or stacked.shape[0]):
            net_in = model.normalize(part) if occlusion == "pixel" else part
            outs.append(confidence(model.net(net_in), kind))
    conf = torch.cat(outs)
    t = ex.targets.repeat(len(ex.maps))
    return conf.gather(1, t[:, None])[:, 0].view(len(ex.maps), -1).T


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("camexp", "torch", "torchvision", "timm", "numpy", "pandas"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _lock_hash() -> str | None:
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        lock = base / "uv.lock"
        if lock.is_file():
            return hashlib.sha256(lock.read_bytes()).hexdigest()
    return None


class Run:
    """One experiment run in its output folder; under torchrun, this rank's share of it."""

    def __init__(self, cfg: ExperimentConfig, *, fresh: bool = False, progress: bool = True,
                 config_path: Path | None = None, ranks: Ranks = Ranks()):
        self.cfg = cfg
        self.out = cfg.output_dir
        self.progress = progress and ranks.main
        self.config_path = config_path
        self.ranks = ranks
        if cfg.analyses and ranks.world > 1:
            raise CamexpError(f"analyses {cfg.analyses} do not run distributed yet: run them in a single process")
        self._prepare_folder(fresh)

    def _prepare_folder(self, fresh: bool) -> None:
        """Check (every rank) and reset or merge (rank 0) the folder; the other ranks wait for rank 0."""
        meta_path = self.out / RUN_JSON
        if not fresh and meta_path.exists():
            old = read_json(meta_path)
            if old.get("fingerprint") != self.cfg.fingerprint():
                raise CamexpError(f"{self.out}: holds a run of a different configuration; pass --fresh to start "
                                  "over or --out to write elsewhere")
        if self.ranks.main:
            self.out.mkdir(parents=True, exist_ok=True)
            for name in (RECORDS, BAD_IMAGES):
                if fresh:
                    for path in [self.out / name, *parts(self.out / name)]:
                        path.unlink(missing_ok=True)
                merge_parts(self.out / name)
            if fresh:
                meta_path.unlink(missing_ok=True)
        self.ranks.barrier()

    def _check_data(self, ds: ImageDataset, loaded: LoadedModel) -> None:
        problems = label_problems(self.cfg, ds.items) + head_problems(self.cfg, ds.items, ds.class_names, loaded)
        if problems:
            raise CamexpError(problems[0])

    def execute(self) -> RunSummary | None:
        """Explain this rank's share of the pending images; rank 0 then merges every rank's records, writes
        the summary and returns it (the other ranks return None)."""
        cfg, ranks = self.cfg, self.ranks
        torch.manual_seed(cfg.runtime.seed)
        device = ranks.device(resolve_device(cfg.runtime.device))
        loaded = build_model(cfg.model, device)
        if channels_last(device):
            loaded.model.to(memory_format=torch.channels_last)
        explainer = Explainer(loaded, cfg.methods, cfg.score)
        ds = build_dataset(cfg.dataset, loaded.spec)
        self._check_data(ds, loaded)
        records_path, bad_path = self.out / RECORDS, self.out / BAD_IMAGES
        done = complete_images(read_records(records_path), cfg.methods)
        bad = _read_bad(bad_path)
        selected = range(len(ds))
        if cfg.dataset.min_true_prob is not None:
            selected = filter_min_true_prob(ds, loaded, cfg.dataset.min_true_prob, device, cfg.runtime.batch_size)
            ds.provenance["min_true_prob"] = {"threshold": cfg.dataset.min_true_prob, "passed": len(selected)}
        pending = [i for i in selected if i not in done and ds.items[i].image_id not in bad]
        meta: dict[str, Any] = {
            "config": cfg.model_dump(mode="json"), "config_path": str(self.config_path) if self.config_path else None,
            "fingerprint": cfg.fingerprint(), "status": "running", "versions": _versions(), "uv_lock_sha256": _lock_hash(),
            "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
            "amp": cfg.runtime.amp, "channels_last": channels_last(device), "world_size": ranks.world,
            "backend": ranks.backend, "layer": loaded.layer_name, "input": loaded.spec.__dict__, "argv": sys.argv,
            "dataset": ds.provenance, "images_in_dataset": len(ds), "images_resumed": len(done),
        }
        if ranks.main:
            write_json(self.out / RUN_JSON, meta)
        self.analyses: list[Analysis] = [ANALYSES[name](cfg) for name in cfg.analyses]
        own = (records_path, bad_path) if ranks.world == 1 else (part_path(records_path, ranks.rank),
                                                                  part_path(bad_path, ranks.rank))
        start = time.perf_counter()
        self._loop(ds, ranks.shard(pending, cfg.runtime.batch_size), loaded, explainer, device, *own)
        ranks.barrier()
        wall = time.perf_counter() - start
        if not ranks.main:
            return None
        merge_parts(records_path)
        merge_parts(bad_path)
        records = finalize_records(records_path, cfg.methods)
        summary = summarize(cfg.name, cfg.paper, records, cfg.methods, cfg.metrics,
                            MetricParams(cfg.relperf_min_true_prob), self.out, cfg.analyses, cfg.stats)
        bad = _read_bad(bad_path)
        if bad:
            summary.extra_notes.append(f"{len(bad)} unreadable image(s) skipped (listed in {BAD_IMAGES}).")
        constant = records.groupby("method")["constant_map"].sum()
        if constant.any():
            summary.extra_notes.append("Constant maps (normalised to zeros): "
                                       + ", ".join(f"{m} {int(n)}" for m, n in constant.items() if n))
        for a in self.analyses:
            summary.extra_notes += a.finish(self.out)
        write_summary(self.out, summary)
        recorded = int(records["index"].nunique())
        processed = recorded - len(done)
        meta.update(status="complete", images_processed=processed, images_recorded=recorded,
                    images_bad=len(bad), wall_time_s=round(wall, 3),
                    images_per_s=round(processed / wall, 3) if wall > 0 and processed else None)
        write_json(self.out / RUN_JSON, meta)
        return summary

    def _loop(self, ds: ImageDataset, pending: list[int], loaded: LoadedModel, explainer: Explainer,
              device: torch.device, records_path: Path, bad_path: Path) -> None:
        cfg = self.cfg
        loader = DataLoader(Subset(ds, pending), batch_size=cfg.runtime.batch_size, shuffle=False,
                            num_workers=cfg.runtime.workers, collate_fn=collate, pin_memory=device.type == "cuda")
        drop_sum = np.zeros(len(cfg.methods))
        processed = 0
        bar = tqdm(total=len(pending), unit="img", desc=cfg.name, disable=not self.progress, dynamic_ncols=True)
        for batch in loader:
            is_bad = batch["bad"].bool()
            if is_bad.any():
                with open(bad_path, "a") as f:
                    f.write("".join(f"{i}\n" for i, b in zip(batch["image_id"], is_bad.tolist()) if b))
            good = (~is_bad).nonzero()[:, 0]
            if len(good):
                rows = self._batch_records(batch, good, loaded, explainer, device)
                append_records(records_path, rows)
                fall = ((rows.y - rows.o).clip(lower=0) / rows.y).to_numpy()
                drop_sum += fall.reshape(len(cfg.methods), -1).sum(1)
                processed += len(good)
            bar.update(len(is_bad))
            if processed:
                bar.set_postfix({f"drop {m}": f"{100 * s / processed:.1f}" for m, s in zip(cfg.methods, drop_sum)})
        bar.close()

    def _batch_records(self, batch: dict[str, Any], good: torch.Tensor, loaded: LoadedModel, explainer: Explainer,
                       device: torch.device) -> pd.DataFrame:
        """Explain the good images of a batch and return their rows, method by method (M*B rows)."""
        cfg = self.cfg
        everyone = len(good) == len(batch["bad"])  # indexing would copy the batch out of pinned memory
        x = to_device(batch["image"] if everyone else batch["image"][good], device)
        labels = (batch["label"] if everyone else batch["label"][good]).to(device, non_blocking=True)
        ex = explainer.explain(x, labels if cfg.target == "true" else None)
        conf = confidence(ex.logits, cfg.confidence)
        y = conf.gather(1, ex.targets[:, None])[:, 0]
        p_true = torch.where(labels >= 0, conf.gather(1, labels.clamp(min=0)[:, None])[:, 0],
                             torch.full_like(y, float("nan")))
        o = explanation_confidence(loaded, x, ex, cfg.occlusion, cfg.confidence, forward_chunk(device, cfg.runtime.forward_chunk),
                                   cfg.runtime.amp)
        ids = [batch["image_id"][i] for i in good.tolist()]
        if self.analyses:
            sub = {k: [v[i] for i in good.tolist()] if isinstance(v, list) else v[good] for k, v in batch.items()}
            ctx = BatchContext(cfg, loaded, explainer, x, ex, y, o, sub, self.out)
            for a in self.analyses:
                a.update(ctx)
        flags = [torch.stack([getattr(ex, f)[m] for m in cfg.methods]) for f in ("constant", "finite")]
        host = record_columns(y, p_true, ex.targets, ex.logits.argmax(1), labels, o.T, *flags).cpu().numpy()
        y_h, p_true_h, *classes = host[:5]
        target, pred, label = (np.tile(c, len(cfg.methods)).astype(np.int64) for c in classes)
        o_h, constant, finite = np.split(host[5:], 3)  # (M, B) each
        if not finite.all():
            j = int(np.flatnonzero(finite.min(1) == 0)[0])
            raise CamexpError(f"method {cfg.methods[j]!r} produced non-finite values for image(s) "
                              f"{[ids[i] for i in np.flatnonzero(finite[j] == 0)]}: NaN/Inf in the model's "
                              "activations or gradients")
        m = len(cfg.methods)
        return pd.DataFrame({
            "index": np.tile(batch["index"][good].numpy(), m), "image_id": ids * m,
            "method": np.repeat(cfg.methods, len(ids)), "target": target, "label": label, "pred": pred,
            "y": np.tile(y_h, m), "o": o_h.ravel(), "p_true": np.tile(p_true_h, m),
            "constant_map": constant.ravel().astype(np.int64)})


def record_columns(*rows: torch.Tensor) -> torch.Tensor:
    """Stack per-image values ((B,) or (M,B); floats, class indices, flags) into one float64 (R,B) tensor,
    so that a batch's records leave the device in a single transfer. float64 holds the indices exactly."""
    return torch.cat([r.to(torch.float64).reshape(-1, r.shape[-1]) for r in rows])


def _read_bad(path: Path) -> set[str]:
    return set(path.read_text().split()) if path.exists() else set()


def run_experiment(cfg: ExperimentConfig, *, fresh: bool = False, progress: bool = True,
                   config_path: Path | None = None, distributed: bool | None = None) -> RunSummary | None:
    """Run (or resume) an experiment and write its folder; returns the summary (None on ranks other than 0).

    `distributed` None joins a torch.distributed job when launched by torchrun; True requires one.
    """
    with process_group(resolve_device(cfg.runtime.device), distributed) as ranks:
        return Run(cfg, fresh=fresh, progress=progress, config_path=config_path, ranks=ranks).execute()

