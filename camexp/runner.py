"""Streams a data set through the explainer core and appends per-image records; resumable.

Per batch: one forward + one backward (head only) give A, G and Y for every method; one batched forward of
the M explanation images gives O. Only the small per-image records leave the device, in one transfer per
batch, which is also the loop's only host sync. Under torchrun each rank takes a disjoint shard of the
pending images and writes its own records, metric and analysis files; rank 0 merges them (camexp/distributed.py).

A run is four steps (`Run.execute`): set up the model, explainer and data set; decide which images are
pending (resume); stream them; and, on rank 0, merge, finalise the records and write the summary.
"""

from __future__ import annotations

import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from camexp import profile, provenance
from camexp.accel import (
    channels_last,
    disable_tf32,
    forward_chunk,
    keep_host_memory,
    pass_budget,
    resolve_device,
    to_device,
)
from camexp.check import label_problems
from camexp.config import FINGERPRINT_VERSION, ExperimentConfig, fingerprint_hash
from camexp.data import ImageDataset, build_dataset
from camexp.data.loader import loader_settings, make_loader
from camexp.distributed import Ranks, process_group
from camexp.errors import CamexpError
from camexp.explain.core import Explainer, method_runs
from camexp.explain.methods import counter_notes
from camexp.explain.scoring import Scorer, target_scores
from camexp.jobs import Job, jobs_of
from camexp.lock import hold
from camexp.metrics import metric_problems, validate_settings
from camexp.metrics.batch import BatchContext
from camexp.models import LoadedModel, build_model
from camexp.models.classes import head_problems
from camexp.models.filters import filter_min_true_prob
from camexp.report.tables import RunSummary, summarize, write_summary
from camexp.results import (
    BAD_IMAGES,
    COLUMNS,
    CURVE_COLUMNS,
    CURVES,
    MAPS_DIR,
    METRIC_COLUMNS,
    METRIC_RECORDS,
    RECORDS,
    RUN_JSON,
    any_records,
    append_records,
    batch_records,
    complete_images,
    final_metric_rows,
    finalize_records,
    mapped_images,
    merge_parts,
    metric_complete,
    part_path,
    parts,
    read_json,
    read_records,
    record_stop,
    refuse_other_kind,
    write_json,
    writes_kept,
)
from camexp.resume import check_config, check_images, fingerprinted_of

# Files every rank appends to (its own per-rank file under torchrun; rank 0 merges them), with their CSV columns;
# the run's per-batch jobs add the files they declare.
APPENDED: dict[str, list[str] | None] = {
    RECORDS: COLUMNS,
    BAD_IMAGES: None,
    METRIC_RECORDS: METRIC_COLUMNS,
    CURVES: CURVE_COLUMNS,
}


@dataclass
class Setup:
    """What the loop needs, built once per run (per rank)."""

    device: torch.device
    loaded: LoadedModel
    explainer: Explainer
    dataset: ImageDataset
    host_allocator: dict[str, int] | None  # what keep_host_memory set (run.json)


class Run:
    """One experiment run in its output folder; under torchrun, this rank's share of it."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        *,
        fresh: bool = False,
        progress: bool = True,
        config_path: Path | None = None,
        ranks: Ranks = Ranks(),
        allow_software_change: bool = False,
    ):
        self.cfg = cfg
        self.out = cfg.output_dir
        self.progress = progress and ranks.main
        self.config_path = config_path
        self.ranks = ranks
        self.methods = cfg.method_names
        self.runs = method_runs(cfg.method_specs())  # resolved once: the fingerprint and the explainer use them
        self.method_params = {r.name: r.resolved for r in self.runs}
        self.fingerprinted = fingerprinted_of(cfg, self.method_params)
        self.fingerprint = fingerprint_hash(self.fingerprinted)
        self.counts: dict[str, dict[str, int]] = {}
        self.started = False  # run.json says 'running' on this run's behalf
        self.jobs: list[Job] = jobs_of(cfg)
        self.settings = validate_settings(cfg)  # once per run, handed to every batch's jobs
        undeclared = [j.name for j in self.jobs if j.files is None]
        if undeclared and ranks.world > 1:
            raise CamexpError(
                f"analyses {undeclared} declare no per-batch files (a `files` attribute), so their "
                "ranks would write over each other: run them in a single process"
            )
        self.appended = {**APPENDED, **{k: v for j in self.jobs for k, v in (j.files or {}).items()}}
        self.software = provenance.software()
        self.previous: dict[str, Any] = {}  # the run.json this invocation resumes (its invocations, mixed software)
        self.software_override: dict[str, list[Any]] = {}
        self._prepare_folder(fresh, allow_software_change)

    def _prepare_folder(self, fresh: bool, allow_software_change: bool) -> None:
        """Check (every rank) and reset or merge (rank 0) the folder; the other ranks wait for rank 0."""
        meta_path = self.out / RUN_JSON
        refuse_other_kind(self.out, RUN_JSON)
        if not fresh and meta_path.exists():
            self.previous = read_json(meta_path)
            check_config(self.previous, self.cfg, self.out, self.fingerprinted)
            if any_records(self.out):  # numbers another program wrote would be mixed with this one's
                self.software_override = provenance.check_same(
                    self.previous.get("software"), self.software, self.out, allow=allow_software_change
                )
        if self.ranks.main:
            self.out.mkdir(parents=True, exist_ok=True)
            for name, columns in self.appended.items():
                if fresh:
                    for path in [self.out / name, *parts(self.out / name)]:
                        path.unlink(missing_ok=True)
                merge_parts(self.out / name, columns or COLUMNS)
            records = self.out / RECORDS
            if not records.exists() or records.stat().st_size == 0:  # nothing recorded: other rows are stale
                for name in set(self.appended) - {RECORDS, BAD_IMAGES}:
                    (self.out / name).unlink(missing_ok=True)
                shutil.rmtree(self.out / MAPS_DIR, ignore_errors=True)  # so are kept maps, whether kept now or not
            if fresh:
                meta_path.unlink(missing_ok=True)
        self.ranks.barrier()

    def execute(self) -> RunSummary | None:
        """Explain this rank's share of the pending images; rank 0 then merges every rank's records, writes
        the summary and returns it (the other ranks return None)."""
        setup = self.setup()
        pending, resumed = self.pending(setup)
        meta = self.metadata(setup, resumed)
        if self.ranks.main:
            write_json(self.out / RUN_JSON, meta)
        self.started = True
        for job in self.jobs:
            job.start()
        self.ranks.barrier()  # every rank's jobs read the folder (maps: the invocation number) before any writes
        start = time.perf_counter()
        with profile.profiled(setup.device, self.cfg.runtime.profile) as timer:  # stages: camexp/profile.py
            self._loop(setup, self.ranks.shard(pending, self.cfg.runtime.batch_size))
        meta["profile"] = timer.summary()
        self.ranks.barrier()
        wall = time.perf_counter() - start
        self.counts = _sum_counts(self.ranks.gather(self.counts))
        return self.finish(meta, resumed, wall) if self.ranks.main else None

    def setup(self) -> Setup:
        """Model on the device (frozen, channels_last where preferred), explainer and data set, checked to fit."""
        cfg = self.cfg
        torch.manual_seed(cfg.runtime.seed)
        device = self.ranks.device(resolve_device(cfg.runtime.device))
        self.loader = loader_settings(cfg.runtime.workers, cfg.runtime.decode, device)  # run.json `loader`
        loaded = build_model(cfg.model, device)
        disable_tf32(device)
        if channels_last(device):
            loaded.model.to(memory_format=torch.channels_last)
        scorer = Scorer(
            loaded.model,
            cfg.occlusion,
            cfg.confidence,
            forward_chunk(device, cfg.runtime.forward_chunk),
            cfg.runtime.amp,
            pass_budget(device, cfg.runtime.forward_chunk),
        )
        explainer = Explainer(loaded, self.runs, cfg.score, scorer)
        ds = build_dataset(cfg.dataset, loaded.spec)
        problems = (
            metric_problems(cfg, loaded.spec.size)
            + label_problems(cfg, ds.items)
            + head_problems(cfg, ds.items, ds.class_names, loaded)
        )
        if problems:
            raise CamexpError(problems[0])
        return Setup(device, loaded, explainer, ds, keep_host_memory())

    def pending(self, s: Setup) -> tuple[list[int], int]:
        """Data set indices still to explain (selected, not recorded for every method or lacking a per-batch
        metric's rows or, with `output.maps`, a map, not known bad), and the number of images already recorded."""
        cfg, ds = self.cfg, s.dataset
        records = read_records(self.out / RECORDS)
        check_images(cfg, records, ds.items, self.out)
        done = complete_images(records, self.methods)
        with_metrics = metric_complete(
            read_records(self.out / METRIC_RECORDS, METRIC_COLUMNS),
            [j.metric_rows for j in self.jobs if j.resume == "recompute" and j.metric_rows],
        )
        if with_metrics is not None:  # e.g. a metric added to the config of a recorded run: redo those images
            done &= with_metrics
        if self.cfg.output.maps and done:  # e.g. a corrupt shard the user deleted: explain its images again
            # gathered: no rank writes a shard of this invocation before every rank has read them; rank 0's set
            done &= self.ranks.gather(mapped_images(self.out / MAPS_DIR, self.methods))[0]
        bad = _read_bad(self.out / BAD_IMAGES)
        selected: range | list[int] = range(len(ds))
        if cfg.dataset.min_true_prob is not None:
            selected = filter_min_true_prob(
                ds, s.explainer.scorer.images, cfg.dataset.min_true_prob, s.device, cfg.runtime.batch_size
            )
            ds.provenance["min_true_prob"] = {"threshold": cfg.dataset.min_true_prob, "passed": len(selected)}
        return [i for i in selected if i not in done and ds.items[i].image_id not in bad], len(done)

    def metadata(self, s: Setup, resumed: int) -> dict[str, Any]:
        """run.json: every choice that produced the numbers, written before the first batch."""
        cfg, device, loaded = self.cfg, s.device, s.loaded
        return {
            "config": cfg.model_dump(mode="json"),
            "config_path": str(self.config_path) if self.config_path else None,
            "fingerprint": self.fingerprint,
            "fingerprint_version": FINGERPRINT_VERSION,
            "method_params": self.method_params,
            "status": "running",
            **provenance.record(
                self.previous, self.software, self.software_override, {"images_before": resumed}, argv=sys.argv
            ),
            "versions": self.software["versions"],
            "uv_lock_sha256": self.software["uv_lock_sha256"],
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "amp": cfg.runtime.amp,
            "tf32": False,
            "channels_last": channels_last(device),
            "host_allocator": s.host_allocator,
            "world_size": self.ranks.world,
            "loader": self.loader.describe(),
            "backend": self.ranks.backend,
            "layer": loaded.layer_name,
            "layer_layout": loaded.layout.describe(),
            "tail": loaded.tail.kind,
            "methods": {r.name: {"method": r.method.name, "params": r.resolved} for r in s.explainer.runs},
            "input": loaded.spec.__dict__,
            "argv": sys.argv,
            "dataset": s.dataset.provenance,
            "images_in_dataset": len(s.dataset),
            "images_resumed": resumed,
            "per_image_metrics": {j.name: j.summary for j in self.jobs if j.summary is not None},
        }

    def _own(self, name: str) -> Path:
        """The file this process appends `name` to: under torchrun its own per-rank file, merged by rank 0."""
        path = self.out / name
        return path if self.ranks.world == 1 else part_path(path, self.ranks.rank)

    def finish(self, meta: dict[str, Any], resumed: int, wall: float) -> RunSummary:
        """Rank 0: merge the ranks' files, finalise the records, recompute the summary from them, close run.json."""
        cfg = self.cfg
        for name, columns in self.appended.items():
            merge_parts(self.out / name, columns or COLUMNS)
        records = finalize_records(self.out / RECORDS, self.methods)
        images = set(records["index"].astype(int))
        final_metric_rows(self.out / CURVES, images, self.methods, CURVE_COLUMNS, rewrite=True)
        metric_rows = final_metric_rows(self.out / METRIC_RECORDS, images, self.methods, rewrite=True)
        summary = summarize(cfg, records, self.out, cfg.stats)
        bad = _read_bad(self.out / BAD_IMAGES)
        if bad:
            summary.extra_notes.append(f"{len(bad)} unreadable image(s) skipped (listed in {BAD_IMAGES}).")
        constant = records.groupby("method")["constant_map"].sum()
        if constant.any():
            summary.extra_notes.append(
                "Constant maps (normalised to zeros): " + ", ".join(f"{m} {int(n)}" for m, n in constant.items() if n)
            )
        for job in self.jobs:
            summary.extra_notes += job.finish(self.out)
        recorded = int(records["index"].nunique())
        processed = recorded - resumed
        if self.counts:
            summary.extra_notes.append(
                f"Model calls of the methods on the {processed} image(s) explained by this "
                "invocation: "
                + "; ".join(f"{m} " + ", ".join(f"{k} {v:,}" for k, v in c.items()) for m, c in self.counts.items())
            )
        meta["method_notes"] = counter_notes(self.counts, {name: m["method"] for name, m in meta["methods"].items()})
        summary.extra_notes += meta["method_notes"]
        write_summary(self.out, summary)
        meta["per_image_metric_images"] = {  # how many images each per-batch metric selected (a value) and saw
            name: {
                "with_value": int(rows.dropna(subset=["value"])["index"].nunique()),
                "seen": int(rows["index"].nunique()),
            }
            for name, rows in metric_rows.groupby("metric")
        }
        meta.update(
            status="complete",
            images_processed=processed,
            images_recorded=recorded,
            method_counts=self.counts,
            images_bad=len(bad),
            wall_time_s=round(wall, 3),
            images_per_s=round(processed / wall, 3) if wall > 0 and processed else None,
        )
        write_json(self.out / RUN_JSON, meta)
        return summary

    def _loop(self, s: Setup, pending: list[int]) -> None:
        cfg = self.cfg
        records_path, bad_path = self._own(RECORDS), self._own(BAD_IMAGES)
        loader = make_loader(s.dataset, pending, cfg.runtime.batch_size, s.device, self.loader)
        drop_sum = np.zeros(len(self.methods))
        processed = 0
        bar = tqdm(total=len(pending), unit="img", desc=cfg.name, disable=not self.progress, dynamic_ncols=True)
        for batch in loader:
            profile.lap(profile.WAIT_LOADER)
            is_bad = batch["bad"].bool()
            if is_bad.any():
                with open(bad_path, "a") as f:
                    f.write("".join(f"{i}\n" for i, b in zip(batch["image_id"], is_bad.tolist()) if b))
            good = (~is_bad).nonzero()[:, 0]
            if len(good):
                rows = self._batch_records(batch, good, s)
                append_records(records_path, rows)
                profile.lap(profile.RECORDS)
                fall = ((rows.y - rows.o).clip(lower=0) / rows.y).to_numpy()
                drop_sum += fall.reshape(len(self.methods), -1).sum(1)
                processed += len(good)
            bar.update(len(is_bad))
            if processed:
                bar.set_postfix({f"drop {m}": f"{100 * d / processed:.1f}" for m, d in zip(self.methods, drop_sum)})
        bar.close()

    def _batch_records(self, batch: dict[str, Any], good: torch.Tensor, s: Setup) -> pd.DataFrame:
        """Explain the good images of a batch and return their rows, method by method (M*B rows)."""
        cfg = self.cfg
        everyone = len(good) == len(batch["bad"])  # indexing would copy the batch out of pinned memory
        x = to_device(batch["image"] if everyone else batch["image"][good], s.device)
        labels = (batch["label"] if everyone else batch["label"][good]).to(s.device, non_blocking=True)
        ids = [batch["image_id"][i] for i in good.tolist()]
        ex = s.explainer.explain(x, labels if cfg.target == "true" else None, ids)
        self.counts = _sum_counts([self.counts, ex.counts])
        y = target_scores(ex.logits, ex.targets, cfg.confidence)
        p_true = torch.where(
            labels >= 0, target_scores(ex.logits, labels.clamp(min=0), cfg.confidence), torch.full_like(y, float("nan"))
        )
        o = s.explainer.scorer.explanations(x, ex.maps, ex.targets)
        profile.lap(profile.EXPLANATION_FORWARDS)
        if self.jobs:  # one context for every job; appended before the records: a recorded image has its jobs' rows
            sub = {k: [v[i] for i in good.tolist()] if isinstance(v, list) else v[good] for k, v in batch.items()}
            ctx = BatchContext(cfg, s.explainer, x, ex, sub, self.settings, own=self._own)
            for job in self.jobs:
                job.update(ctx)
                profile.lap(profile.JOB + job.name)
        flags = {f: torch.stack([getattr(ex, f)[m] for m in self.methods]) for f in ("constant", "finite")}
        return batch_records(
            batch["index"][good].numpy(),
            ids,
            self.methods,
            y=y,
            p_true=p_true,
            targets=ex.targets,
            pred=ex.logits.argmax(1),
            labels=labels,
            o=o.T,
            **flags,
        )


def _sum_counts(per_rank: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Every rank's method counters (method -> counter -> n), summed."""
    total: dict[str, dict[str, int]] = {}
    for counts in per_rank:
        for m, c in counts.items():
            for k, v in c.items():
                total.setdefault(m, {})[k] = total.get(m, {}).get(k, 0) + v
    return total


def _read_bad(path: Path) -> set[str]:
    return set(path.read_text().split()) if path.exists() else set()


def run_experiment(
    cfg: ExperimentConfig,
    *,
    fresh: bool = False,
    progress: bool = True,
    config_path: Path | None = None,
    distributed: bool | None = None,
    allow_software_change: bool = False,
) -> RunSummary | None:
    """Run (or resume) an experiment and write its folder; returns the summary (None on ranks other than 0).

    `distributed` None joins a torch.distributed job when launched by torchrun; True requires one.
    `allow_software_change` adds to a folder that other software wrote (camexp/provenance.py), recorded.
    """
    with (
        process_group(resolve_device(cfg.runtime.device), distributed) as ranks,
        hold(cfg.output_dir, owner=ranks.main),
        writes_kept(cfg.output_dir, cfg.method_names),
    ):
        run = Run(
            cfg,
            fresh=fresh,
            progress=progress,
            config_path=config_path,
            ranks=ranks,
            allow_software_change=allow_software_change,
        )
        try:
            return run.execute()
        except BaseException as e:  # Ctrl-C too: the run.json this run wrote must not go on saying 'running'
            if ranks.main and run.started:
                record_stop(cfg.output_dir / RUN_JSON, e)
            raise
