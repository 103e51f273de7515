"""`camexp distill`: train each (arm, seed) of a config with the same initial weights, data order and schedule
(a paired design), a checkpoint and history after every epoch (resumed per arm and epoch after a crash)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from tqdm import tqdm

from camexp import provenance
from camexp.accel import resolve_device
from camexp.config import ModelConfig
from camexp.data import ImageDataset, Listing, PixelTransform, collate, list_dataset
from camexp.data.transforms import InputSpec
from camexp.distill.config import Arm, DistillConfig
from camexp.distill.loss import class_maps, explanation_loss, forward_with_maps, kd_loss, loss_weights
from camexp.distill.teacher import Teacher, TeacherTargets
from camexp.errors import CamexpError
from camexp.explain.methods import METHODS
from camexp.explain.model_methods import seed_of
from camexp.finetune.checkpoint import write_atomic
from camexp.finetune.head import replace_head
from camexp.finetune.train import cosine_factor
from camexp.io import write_text_atomically
from camexp.lock import hold
from camexp.models import LoadedModel, build_model
from camexp.models.weights import load_state, read_checkpoint
from camexp.results import DISTILL_JSON, refuse_other_kind
from camexp.stats.ap import per_class_ap

FORMAT = "camexp-distill/2"  # 2: per-image augmentation seeds, teacher_seed
META = DISTILL_JSON
HISTORY = "history.json"


class AugmentTransform(PixelTransform):
    """The eval geometry, then a random crop of the padded image and/or a horizontal flip."""

    def __init__(self, spec: InputSpec, augment: str, pad: int):
        super().__init__(spec)
        steps = [self._geometry] + ([v2.RandomCrop(spec.size, padding=pad)] if augment == "crop_flip" else [])
        self._geometry = v2.Compose([*steps, v2.RandomHorizontalFlip()])


def _listing(cfg: DistillConfig, split: str) -> Listing:
    listing = list_dataset(cfg.dataset.model_copy(update={"split": split}))
    if not listing.items:
        raise CamexpError(f"dataset {cfg.dataset.root}: split {split!r} selects no images")
    if not listing.multilabel and any(it.label < 0 for it in listing.items):
        raise CamexpError(f"dataset {cfg.dataset.root}: split {split!r} has images without a label")
    return listing


def class_list(train: Listing, val: Listing, teacher: LoadedModel | None) -> list[str]:
    """The data set's class names; for one without them (class-index or wnid folders, labels in the model's index
    space) the teacher's, else the indices 0 .. largest label."""
    if train.class_names:
        return list(train.class_names)
    top = max(it.label for it in train.items + val.items)
    if teacher is None:
        return [str(i) for i in range(top + 1)]
    if top >= teacher.num_classes:
        raise CamexpError(f"dataset: label {top} is outside the teacher's {teacher.num_classes} classes")
    return list(teacher.class_names or [str(i) for i in range(teacher.num_classes)])


def step_factor(cfg: DistillConfig, epoch: int) -> float:
    """Learning-rate multiplier of `epoch` (0-based): gamma per milestone passed, or a cosine."""
    t = cfg.train
    if t.schedule == "cosine":
        return cosine_factor(epoch, t.epochs)
    return t.gamma ** sum(epoch >= m for m in t.milestones)


def order_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's data order (and of any draw in the steps): the same for every arm of a seed."""
    return seed * 1_000_003 + epoch


class SeededDraws(Dataset):
    """The training images of one (seed, epoch), image i augmented with draws seeded from (seed, epoch, i): the
    same crop and flip whichever loader worker, how many workers and what batch size load it (`train.workers`
    is left out of the fingerprint, so a resume may change it). The global RNG is left as it was."""

    def __init__(self, data: ImageDataset, seed: int, epoch: int):
        self.data, self.seed, self.epoch = data, seed, epoch

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_of(self.seed, "augment", self.epoch, index))
            return self.data[index]


def write_json(path: Path, data: Any) -> None:
    write_text_atomically(path, json.dumps(data, indent=1))


@dataclass
class Session:
    """What every arm shares: config, device, data, the teacher and its cache."""

    cfg: DistillConfig
    device: torch.device
    spec: InputSpec
    class_names: list[str]
    multilabel: bool
    train_set: ImageDataset
    val_loader: DataLoader
    teacher: Teacher | None
    progress: bool
    student_parameters: int

    def teacher_targets(self, batch: dict[str, Any], x: torch.Tensor) -> TeacherTargets:
        """The teacher's logits and maps for the good images x of `batch`: cached, or computed now."""
        teacher = self.teacher
        assert teacher is not None
        keep = ~batch["bad"].bool()
        if teacher.cache:
            return teacher.cached(batch["index"][keep]).to(self.device)
        return teacher.targets(x, {k: v[keep] for k, v in batch.items() if isinstance(v, torch.Tensor)})


def build_student(cfg: DistillConfig, num_classes: int, seed: int, device: torch.device) -> LoadedModel:
    """The student with a `num_classes` head, initialised from `seed` (the same weights for every arm)."""
    torch.manual_seed(seed)
    loaded = fit_head(build_model(cfg.student), num_classes)
    loaded.model.requires_grad_(True).train()
    return loaded.to(device)


def fit_head(loaded: LoadedModel, num_classes: int) -> LoadedModel:
    """`loaded` with a new `num_classes` head where its own has another class count."""
    if loaded.num_classes != num_classes:
        replace_head(loaded.model.net, num_classes)
    return loaded


def build_teacher(spec: ModelConfig, seed: int, device: torch.device) -> LoadedModel:
    """The frozen teacher; `weights: random` is drawn from `seed` (the global RNG is left as it was), so two runs
    of a config, and a resumed one, train against the same teacher."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec).to(device)


def open_session(cfg: DistillConfig, progress: bool, cache: bool = True) -> Session:
    """List the data, build the teacher, check the class lists agree, and fill the teacher cache if used (and
    `cache`; without it the teacher's targets are recomputed per batch)."""
    t = cfg.train
    device = resolve_device(t.device)
    train, val = _listing(cfg, t.train_split), _listing(cfg, t.val_split)
    probe = build_model(cfg.student)
    needs_teacher = cfg.teacher is not None and any(a.needs_teacher for a in cfg.parsed_arms)
    loaded = build_teacher(cfg.teacher, cfg.teacher_seed, device) if cfg.teacher is not None and needs_teacher else None
    names = class_list(train, val, loaded)
    spec = replace(probe.spec, size=t.image_size) if t.image_size else probe.spec
    transform = PixelTransform(spec) if t.augment == "none" else AugmentTransform(spec, t.augment, t.pad)
    kw: dict[str, Any] = {"class_names": names, "multilabel": train.multilabel, "skip_bad": cfg.dataset.skip_bad_images}
    train_set = ImageDataset(train.items, transform, **kw)
    val_loader = DataLoader(
        ImageDataset(val.items, PixelTransform(spec), **kw),
        batch_size=t.batch_size,
        num_workers=t.workers,
        collate_fn=collate,
    )
    methods = sorted({a.method for a in cfg.parsed_arms if a.method})
    teacher = None
    if loaded is not None and cfg.teacher is not None:
        if loaded.num_classes != len(names) or (loaded.class_names and loaded.class_names != names):
            raise CamexpError(
                f"teacher {cfg.teacher.weights}: its {loaded.num_classes} classes are not the data "
                f"set's {len(names)} ({names[:3]}...); use a teacher trained on them"
            )
        x = torch.rand(1, 3, *spec.size)
        with torch.no_grad():
            own = forward_with_maps(loaded.model, loaded.layer, loaded.layout, x.to(device))[1].shape[-2:]
            size = forward_with_maps(probe.model, probe.layer, probe.layout, x)[1].shape[-2:]
        teacher = Teacher(loaded, methods, cfg.loss.target, train.multilabel, (own[0], own[1]), (size[0], size[1]))
    parameters = sum(p.numel() for p in fit_head(probe, len(names)).model.parameters())
    session = Session(cfg, device, spec, names, train.multilabel, train_set, val_loader, teacher, progress, parameters)
    if teacher is not None and t.cache_teacher and cache:
        fill_cache(session)
    return session


def _good(batch: dict[str, Any], device: torch.device, multilabel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    keep = ~batch["bad"].bool()
    y = batch["labels"] if multilabel else batch["label"]
    return batch["image"][keep].to(device), y[keep].to(device)


def train_loader(s: Session, seed: int, epoch: int) -> DataLoader:
    """The training batches of `epoch` for the arms of `seed`: one shuffled order and one augmentation per image."""
    t = s.cfg.train
    return DataLoader(
        SeededDraws(s.train_set, seed, epoch),
        batch_size=t.batch_size,
        shuffle=True,
        num_workers=t.workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(order_seed(seed, epoch)),
    )


def fill_cache(s: Session) -> float:
    """Teacher targets of every training image, once, in the eval geometry; returns the seconds it took."""
    assert s.teacher is not None
    start = time.perf_counter()
    loader = DataLoader(
        s.train_set, batch_size=s.cfg.train.batch_size, num_workers=s.cfg.train.workers, collate_fn=collate
    )
    for batch in tqdm(loader, desc="teacher maps (cached once)", unit="batch", disable=not s.progress):
        keep = ~batch["bad"].bool()
        kept = {k: v[keep] for k, v in batch.items() if isinstance(v, torch.Tensor)}
        s.teacher.store(kept["index"], s.teacher.targets(kept["image"].to(s.device), kept))
    s.teacher.cache_seconds = time.perf_counter() - start
    return s.teacher.cache_seconds


class ArmTrainer:
    """One (arm, seed): student, optimiser, and its folder `<out>/<arm>/seed<k>` with checkpoint and history."""

    def __init__(self, s: Session, arm: Arm, seed: int, fresh: bool = False):
        cfg, t = s.cfg, s.cfg.train
        self.s, self.arm, self.seed = s, arm, seed
        self.folder = cfg.output_dir / arm.name / f"seed{seed}"
        self.path = self.folder / "checkpoint.pt"
        self.fingerprint = cfg.fingerprint(arm.name, seed)
        ckpt = None if fresh or not self.path.exists() else read_checkpoint(self.path)
        if ckpt is not None and ckpt.get("format") != FORMAT:
            raise CamexpError(
                f"{self.path}: a checkpoint of format {ckpt.get('format')!r}, not {FORMAT!r} (before "
                "camexp drew each image's augmentation from its own seed); pass --fresh or --out"
            )
        if ckpt is not None and ckpt.get("fingerprint") != self.fingerprint:
            raise CamexpError(
                f"{self.path}: holds a checkpoint of another distill configuration; pass --fresh to "
                "start over or --out to write elsewhere"
            )
        self.student = build_student(cfg, len(s.class_names), seed, s.device)
        self.method = METHODS.get(arm.method) if arm.method else None
        lw = cfg.loss
        self.task_weight, self.kd_weight = (
            loss_weights(lw.kd_weighting, lw.kd_weight, len(s.class_names), s.multilabel) if arm.kd else (1.0, 0.0)
        )
        params = [p for p in self.student.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=t.nesterov
        )
        self.history: list[dict[str, Any]] = []
        if ckpt is not None:
            load_state(self.student.model.net, ckpt["state_dict"], self.path)
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.history = list(ckpt["history"])

    def fit(self) -> list[dict[str, Any]]:
        for epoch in range(len(self.history), self.s.cfg.train.epochs):
            start = time.perf_counter()
            factor = step_factor(self.s.cfg, epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = self.s.cfg.train.lr * factor
            row = self.train_epoch(epoch)
            row.update(
                epoch=epoch + 1,
                lr=self.s.cfg.train.lr * factor,
                metric=self.evaluate(),
                seconds=round(time.perf_counter() - start, 3),
            )
            self.history.append(row)
            self.save()
        return self.history

    def save(self) -> None:
        st = self.student
        write_atomic(
            self.path,
            {
                "format": FORMAT,
                "model_name": self.s.cfg.student.name,
                "num_classes": len(self.s.class_names),
                "class_names": self.s.class_names,
                "input": asdict(self.s.spec),
                "arm": self.arm.name,
                "seed": self.seed,
                "epoch": len(self.history),
                "history": self.history,
                "fingerprint": self.fingerprint,
                "state_dict": st.model.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
            },
        )
        write_json(self.folder / HISTORY, {"arm": self.arm.name, "seed": self.seed, "history": self.history})

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training split: mean losses per image, mean seconds per student step, the order's hash."""
        cfg, t, dev = self.s.cfg, self.s.cfg.train, self.s.device
        torch.manual_seed(order_seed(self.seed, epoch))  # any draw in the steps: the same for every arm
        loader = train_loader(self.s, self.seed, epoch)
        self.student.model.train()
        sums = {"task_loss": 0.0, "exp_loss": 0.0, "kd_loss": 0.0, "loss": 0.0}
        seen, steps, step_time, teacher_time, order = 0, 0, 0.0, 0.0, hashlib.sha256()
        bar = tqdm(
            loader,
            desc=f"{self.arm.name} seed {self.seed} epoch {epoch + 1}/{t.epochs}",
            unit="batch",
            disable=not self.s.progress,
            dynamic_ncols=True,
        )
        for batch in bar:
            order.update(batch["index"].numpy().tobytes())
            x, y = _good(batch, dev, self.s.multilabel)
            if not len(x):
                continue
            t0 = time.perf_counter()
            target = self.s.teacher_targets(batch, x) if self.arm.needs_teacher else None
            t1 = time.perf_counter()
            parts = self.step(x, y, target)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            teacher_time += t1 - t0
            step_time += time.perf_counter() - t1
            steps += 1
            seen += len(x)
            for k, v in parts.items():
                sums[k] += v * len(x)
            bar.set_postfix({k.removesuffix("_loss"): f"{sums[k] / seen:.4f}" for k in sums})
        if not seen:
            raise CamexpError(f"dataset {cfg.dataset.root}: no readable image in split {t.train_split!r}")
        return {
            **{k: v / seen for k, v in sums.items()},
            "step_seconds": step_time / steps,
            "steps": steps,
            "teacher_seconds": round(teacher_time, 3),
            "order_sha": order.hexdigest()[:16],
        }

    def step(self, x: torch.Tensor, y: torch.Tensor, target: TeacherTargets | None) -> dict[str, float]:
        """One SGD step on L = w_task L_task + alpha L_exp + w_KD L_KD (`loss_weights`); returns the components."""
        cfg, st = self.s.cfg, self.student
        logits, A = forward_with_maps(st.model, st.layer, st.layout, x)
        logits = logits.float()
        task = (
            F.binary_cross_entropy_with_logits(logits, y.float()) if self.s.multilabel else F.cross_entropy(logits, y)
        )
        exp = kd = torch.zeros((), device=x.device)
        if self.method is not None and target is not None:
            maps = class_maps(self.method, A.float(), logits, target.classes)
            exp = explanation_loss(maps, target.maps[self.method.name], target.classes, cfg.loss.map_norm)
        if self.arm.kd and target is not None:
            kd = kd_loss(logits, target.logits, cfg.loss.temperature, self.s.multilabel)
        loss = self.task_weight * task + cfg.loss.alpha * exp + self.kd_weight * kd
        if not torch.isfinite(loss):
            raise CamexpError(
                f"arm {self.arm.name} seed {self.seed}: the loss is not finite (task {float(task)}, "
                f"exp {float(exp)}, kd {float(kd)}); lower train.lr or loss.alpha"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        parts = {"task_loss": task, "exp_loss": exp, "kd_loss": kd, "loss": loss}
        return {k: float(v.detach()) for k, v in parts.items()}

    @torch.no_grad()
    def evaluate(self) -> float:
        """mAP on the val split (multi-label), or top-1 error % (single-label)."""
        model = self.student.model
        model.eval()
        scores, targets = [], []
        for batch in self.s.val_loader:
            x, y = _good(batch, self.s.device, self.s.multilabel)
            scores.append(model(x).float().cpu())
            targets.append(y.cpu())
        model.train()
        s, y = torch.cat(scores), torch.cat(targets)
        if self.s.multilabel:
            return float(per_class_ap(s.sigmoid(), y).nanmean())
        return 100.0 * float((s.argmax(1) != y).double().mean())


def metric_name(multilabel: bool) -> str:
    return "mAP" if multilabel else "top-1 error %"


def write_meta(s: Session, status: str, software: dict[str, Any]) -> None:
    """distill.json: the config, what the metric is, and how the teacher maps were made (for `camexp report table`)."""
    cfg = s.cfg
    teacher = s.teacher
    meta = {
        "format": FORMAT,
        "name": cfg.name,
        "paper": cfg.paper,
        "status": status,
        "metric": metric_name(s.multilabel),
        "higher_is_better": s.multilabel,
        "config": cfg.model_dump(mode="json"),
        "input_size": list(s.spec.size),
        "student_parameters": s.student_parameters,
        **software,
        "dataset": {
            "kind": cfg.dataset.kind,
            "year": cfg.dataset.year,
            "train_images": len(s.train_set),
            "val_images": len(s.val_loader.dataset),  # type: ignore[arg-type]
        },
        "teacher_maps": None
        if teacher is None
        else {
            "mode": "cache" if cfg.train.cache_teacher else "recompute",
            "teacher_map_size": list(teacher.own_size),
            "student_map_size": list(teacher.map_size),
            "resized_bilinear": teacher.resized,
            "cache_seconds": teacher.cache_seconds,
        },
    }
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    write_json(cfg.output_dir / META, meta)


def distill(
    cfg: DistillConfig, *, fresh: bool = False, progress: bool = True, allow_software_change: bool = False
) -> Path:
    """Train every (seed, arm) not yet complete, resuming from the last epoch; returns the results folder. The
    folder's run lock is held throughout: a second distill into it would overwrite this one's checkpoints.
    Resuming or adding arms to checkpoints that other software trained is refused unless
    `allow_software_change` (camexp/provenance.py), which distill.json then keeps in `mixed_software`."""
    refuse_other_kind(cfg.output_dir, DISTILL_JSON)
    with hold(cfg.output_dir, command="camexp distill"):
        software = _software(cfg, fresh, allow_software_change)
        s = open_session(cfg, progress)
        write_meta(s, "running", software)
        for seed in cfg.seeds:
            for arm in cfg.parsed_arms:
                ArmTrainer(s, arm, seed, fresh).fit()
        write_meta(s, "complete", software)
    return cfg.output_dir


def _software(cfg: DistillConfig, fresh: bool, allow: bool) -> dict[str, Any]:
    """distill.json's `software`, `invocations` and `mixed_software`, after `check_same` against the previous
    invocation's software when checkpoints of it would be resumed or trained beside."""
    meta_path = cfg.output_dir / META
    previous = {} if fresh or not meta_path.exists() else json.loads(meta_path.read_text())
    trained = not fresh and any(cfg.output_dir.glob("*/seed*/checkpoint.pt"))
    return provenance.continued(previous, cfg.output_dir, resumes=trained, allow=allow, what="distillation")


def profile(cfg: DistillConfig, steps: int, progress: bool = True) -> list[dict[str, Any]]:
    """Seconds per training step of each arm (median of `steps` steps after one warm-up step), its ratio to `ce`,
    and the task loss and alpha * explanation loss of its first step (the same initial weights and batch for
    every arm: the scale of the two terms before training moves them). Fresh students of every arm (all in
    memory at once) step in turn on each of the first batches, the arm that goes first rotating from batch to
    batch, so a machine that slows down or speeds up meanwhile reaches every arm alike. The teacher's targets,
    recomputed once per batch here, are timed apart. Writes nothing."""
    s = open_session(cfg, progress, cache=False)
    seed = cfg.seeds[0]
    trainers = [ArmTrainer(s, arm, seed, fresh=True) for arm in cfg.parsed_arms]
    times: dict[str, list[float]] = {a: [] for a in cfg.arms}
    parts: dict[str, list[dict[str, float]]] = {a: [] for a in cfg.arms}
    teacher: list[float] = []
    needs_teacher = any(a.needs_teacher for a in cfg.parsed_arms)
    for i, batch in enumerate(train_loader(s, seed, 0)):
        if i > steps:
            break
        x, y = _good(batch, s.device, s.multilabel)
        start = time.perf_counter()
        target = s.teacher_targets(batch, x) if needs_teacher else None
        if s.device.type == "cuda":  # the teacher's work is timed here, not in the first arm's step
            torch.cuda.synchronize(s.device)
        teacher.append(time.perf_counter() - start)
        for trainer in trainers[i % len(trainers) :] + trainers[: i % len(trainers)]:
            start = time.perf_counter()
            got = trainer.step(x, y, target if trainer.arm.needs_teacher else None)
            if s.device.type == "cuda":
                torch.cuda.synchronize(s.device)
            times[trainer.arm.name].append(time.perf_counter() - start)
            parts[trainer.arm.name].append(got)

    def median(values: list[float]) -> float:
        return float(torch.tensor(values[1:] or values).median())

    rows: list[dict[str, Any]] = [
        {
            "arm": a,
            "steps": len(times[a]) - 1,
            "batch": cfg.train.batch_size,
            "seconds_per_step": median(times[a]),
            "teacher_recompute_seconds": median(teacher) if needs_teacher else 0.0,
            "first_task_loss": parts[a][0]["task_loss"],
            "first_alpha_exp_loss": cfg.loss.alpha * parts[a][0]["exp_loss"],
        }
        for a in cfg.arms
    ]
    base = next((r["seconds_per_step"] for r in rows if r["arm"] == "ce"), float("nan"))
    for r in rows:
        r["x_ce"] = r["seconds_per_step"] / base
    return rows
