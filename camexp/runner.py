"""Streams a data set through the explainer core and appends per-image records; resumable.

Per batch: one forward + one backward (head only) give A, G and Y for every method; one batched forward of
the M explanation images gives O. Only the small per-image records leave the device.
"""
from __future__ import annotations

import hashlib
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from camexp.analyses import ANALYSES, Analysis, BatchContext
from camexp.config import ExperimentConfig
from camexp.data import ImageDataset, build_dataset, collate
from camexp.data.filters import filter_min_true_prob
from camexp.errors import CamexpError
from camexp.explain.core import Explainer, Explanation
from camexp.metrics import NEEDS_LABELS, MetricParams
from camexp.models import LoadedModel, build_model
from camexp.models.classes import check_class_names
from camexp.report.tables import RunSummary, summarize, write_summary
from camexp.results import BAD_IMAGES, RECORDS, RUN_JSON, append_records, complete_images, finalize_records, \
    read_json, read_records, write_json


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
                           chunk: int | None) -> torch.Tensor:
    """Confidence of each image's target on every method's explanation image: (B, M).

    `pixel`: E = L * I in [0,1] RGB, then normalised like any input (the paper); `normalized`: the map
    multiplies the already-normalised tensor (torchcam's variant, where black becomes the mean colour).
    """
    model = loaded.model
    base = x if occlusion == "pixel" else model.normalize(x)
    stacked = torch.cat([ex.maps[m][:, None] * base for m in ex.maps])  # (M*B, 3, H, W)
    outs = []
    with torch.no_grad():
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
    """One experiment run in its output folder."""

    def __init__(self, cfg: ExperimentConfig, *, fresh: bool = False, progress: bool = True,
                 config_path: Path | None = None):
        self.cfg = cfg
        self.out = cfg.output_dir
        self.progress = progress
        self.config_path = config_path
        self._prepare_folder(fresh)

    def _prepare_folder(self, fresh: bool) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        meta_path = self.out / RUN_JSON
        if fresh:
            for name in (RECORDS, BAD_IMAGES, RUN_JSON):
                (self.out / name).unlink(missing_ok=True)
        elif meta_path.exists():
            old = read_json(meta_path)
            if old.get("fingerprint") != self.cfg.fingerprint():
                raise CamexpError(f"{self.out}: holds a run of a different configuration; pass --fresh to start "
                                  "over or --out to write elsewhere")

    def _check_data(self, ds: ImageDataset, loaded: LoadedModel) -> None:
        cfg = self.cfg
        check_class_names(ds.class_names, loaded, cfg.model.weights)
        if ds.class_names is not None and len(ds.class_names) != loaded.num_classes:
            raise CamexpError(f"dataset has {len(ds.class_names)} classes but model {cfg.model.name!r} has "
                              f"{loaded.num_classes} outputs: use weights trained for this data set")
        labels = [it.label for it in ds.items]
        if max(labels, default=-1) >= loaded.num_classes:
            raise CamexpError(f"dataset {cfg.dataset.root}: label {max(labels)} is out of range for a model with "
                              f"{loaded.num_classes} classes (wrong label mapping?)")
        unlabelled = sum(1 for lb in labels if lb < 0)
        needs = [m for m in cfg.metrics if m in NEEDS_LABELS] + (["target: true"] if cfg.target == "true" else [])
        if needs and unlabelled:
            raise CamexpError(f"{', '.join(needs)} need(s) a true label for every image, but {unlabelled} image(s) "
                              f"in {cfg.dataset.root} have none (give dataset.labels, or use target: predicted)")

    def execute(self) -> RunSummary:
        cfg = self.cfg
        torch.manual_seed(cfg.runtime.seed)
        device = resolve_device(cfg.runtime.device)
        loaded = build_model(cfg.model, device)
        explainer = Explainer(loaded, cfg.methods, cfg.score)
        ds = build_dataset(cfg.dataset, loaded.spec)
        self._check_data(ds, loaded)
        records_path, bad_path = self.out / RECORDS, self.out / BAD_IMAGES
        done = complete_images(read_records(records_path), cfg.methods)
        bad = set(bad_path.read_text().split()) if bad_path.exists() else set()
        selected = range(len(ds))
        if cfg.dataset.min_true_prob is not None:
            selected = filter_min_true_prob(ds, loaded, cfg.dataset.min_true_prob, device, cfg.runtime.batch_size)
            ds.provenance["min_true_prob"] = {"threshold": cfg.dataset.min_true_prob, "passed": len(selected)}
        pending = [i for i in selected if i not in done and ds.items[i].image_id not in bad]
        meta: dict[str, Any] = {
            "config": cfg.model_dump(mode="json"), "config_path": str(self.config_path) if self.config_path else None,
            "fingerprint": cfg.fingerprint(), "status": "running", "versions": _versions(), "uv_lock_sha256": _lock_hash(),
            "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
            "layer": loaded.layer_name, "input": loaded.spec.__dict__, "argv": sys.argv,
            "dataset": ds.provenance, "images_in_dataset": len(ds), "images_resumed": len(done),
        }
        write_json(self.out / RUN_JSON, meta)
        self.analyses: list[Analysis] = [ANALYSES[name](cfg) for name in cfg.analyses]
        start = time.perf_counter()
        processed, newly_bad = self._loop(ds, pending, loaded, explainer, device, records_path, bad_path)
        wall = time.perf_counter() - start
        records = finalize_records(records_path, cfg.methods)
        summary = summarize(cfg.name, cfg.paper, records, cfg.methods, cfg.metrics,
                            MetricParams(cfg.relperf_min_true_prob), self.out, cfg.analyses)
        bad |= newly_bad
        if bad:
            summary.extra_notes.append(f"{len(bad)} unreadable image(s) skipped (listed in {BAD_IMAGES}).")
        constant = records.groupby("method")["constant_map"].sum()
        if constant.any():
            summary.extra_notes.append("Constant maps (normalised to zeros): "
                                       + ", ".join(f"{m} {int(n)}" for m, n in constant.items() if n))
        for a in self.analyses:
            summary.extra_notes += a.finish(self.out)
        write_summary(self.out, summary)
        meta.update(status="complete", images_processed=processed, images_recorded=int(records["index"].nunique()),
                    images_bad=len(bad), wall_time_s=round(wall, 3),
                    images_per_s=round(processed / wall, 3) if wall > 0 and processed else None)
        write_json(self.out / RUN_JSON, meta)
        return summary

    def _loop(self, ds: ImageDataset, pending: list[int], loaded: LoadedModel, explainer: Explainer,
              device: torch.device, records_path: Path, bad_path: Path) -> tuple[int, set[str]]:
        cfg = self.cfg
        loader = DataLoader(Subset(ds, pending), batch_size=cfg.runtime.batch_size, shuffle=False,
                            num_workers=cfg.runtime.workers, collate_fn=collate, pin_memory=device.type == "cuda")
        drop_sum = torch.zeros(len(cfg.methods), dtype=torch.float64)
        processed, newly_bad = 0, set()
        bar = tqdm(total=len(pending), unit="img", desc=cfg.name, disable=not self.progress, dynamic_ncols=True)
        for batch in loader:
            is_bad = batch["bad"].bool()
            if is_bad.any():
                ids = [i for i, b in zip(batch["image_id"], is_bad.tolist()) if b]
                with open(bad_path, "a") as f:
                    f.write("".join(f"{i}\n" for i in ids))
                newly_bad.update(ids)
            good = (~is_bad).nonzero()[:, 0]
            if len(good):
                rows = self._batch_records(batch, good, loaded, explainer, device)
                append_records(records_path, rows)
                fall = rows.assign(d=((rows.y - rows.o).clip(lower=0) / rows.y)).groupby("method", sort=False)["d"].sum()
                drop_sum += torch.tensor([fall[m] for m in cfg.methods])
                processed += len(good)
            bar.update(len(is_bad))
            if processed:
                bar.set_postfix({f"drop {m}": f"{100 * float(s) / processed:.1f}" for m, s in zip(cfg.methods, drop_sum)})
        bar.close()
        return processed, newly_bad

    def _batch_records(self, batch: dict[str, Any], good: torch.Tensor, loaded: LoadedModel, explainer: Explainer,
                       device: torch.device) -> pd.DataFrame:
        cfg = self.cfg
        x = batch["image"][good].to(device, non_blocking=True)
        labels = batch["label"][good].to(device)
        ex = explainer.explain(x, labels if cfg.target == "true" else None)
        conf = confidence(ex.logits, cfg.confidence)
        y = conf.gather(1, ex.targets[:, None])[:, 0]
        p_true = torch.where(labels >= 0, conf.gather(1, labels.clamp(min=0)[:, None])[:, 0],
                             torch.full_like(y, float("nan")))
        o = explanation_confidence(loaded, x, ex, cfg.occlusion, cfg.confidence, cfg.runtime.forward_chunk)
        ids = [batch["image_id"][i] for i in good.tolist()]
        if self.analyses:
            sub = {k: [v[i] for i in good.tolist()] if isinstance(v, list) else v[good] for k, v in batch.items()}
            ctx = BatchContext(cfg, loaded, explainer, x, ex, y, o, sub, self.out)
            for a in self.analyses:
                a.update(ctx)
        for m in cfg.methods:
            bad_maps = (~ex.finite[m]).nonzero()[:, 0].tolist()
            if bad_maps:
                raise CamexpError(f"method {m!r} produced non-finite values for image(s) "
                                  f"{[ids[i] for i in bad_maps]}: NaN/Inf in the model's activations or gradients")
        host = {k: v.cpu() for k, v in dict(y=y, p_true=p_true, o=o, t=ex.targets, pred=ex.logits.argmax(1),
                                             label=labels).items()}
        constant = torch.stack([ex.constant[m] for m in cfg.methods], 1).cpu()
        frames = []
        for j, m in enumerate(cfg.methods):
            frames.append(pd.DataFrame({
                "index": batch["index"][good].tolist(), "image_id": ids, "method": m,
                "target": host["t"].tolist(), "label": host["label"].tolist(), "pred": host["pred"].tolist(),
                "y": host["y"].numpy(), "o": host["o"][:, j].numpy(), "p_true": host["p_true"].numpy(),
                "constant_map": constant[:, j].int().numpy()}))
        return pd.concat(frames, ignore_index=True)


def run_experiment(cfg: ExperimentConfig, *, fresh: bool = False, progress: bool = True,
                   config_path: Path | None = None) -> RunSummary:
    """Run (or resume) an experiment and write its folder; returns the summary."""
    return Run(cfg, fresh=fresh, progress=progress, config_path=config_path).execute()

