"""The fine-tuning loop: BCE on the train split, per-class AP on the val split every epoch, a checkpoint
after every epoch (resumed from after a crash)."""

from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from camexp import provenance
from camexp.accel import resolve_device
from camexp.data import ImageDataset, Listing, PixelTransform, collate, list_dataset
from camexp.errors import CamexpError
from camexp.finetune.augment import TrainTransform
from camexp.finetune.checkpoint import checkpoint_payload, resumable, save_checkpoint
from camexp.finetune.config import FinetuneConfig, TrainConfig
from camexp.finetune.head import replace_head
from camexp.models import PixelModel, build_model
from camexp.models.weights import load_state
from camexp.stats.ap import per_class_ap


@dataclass
class FinetuneResult:
    """The trained model (eval mode) and the last epoch's validation AP per class."""

    model: PixelModel
    checkpoint: Path
    class_names: list[str]
    ap: list[float]
    history: list[dict[str, Any]]
    resumed_epochs: int

    @property
    def mean_ap(self) -> float:
        return self.history[-1]["val_mAP"]


def _listing(cfg: FinetuneConfig, split: str) -> Listing:
    listing = list_dataset(cfg.dataset.model_copy(update={"split": split}))
    if not listing.multilabel or not listing.class_names:
        raise CamexpError(
            f"dataset.kind {cfg.dataset.kind!r}: finetune needs a multi-label data set with class "
            "names (dataset.kind: voc)"
        )
    if not listing.items:
        raise CamexpError(f"dataset {cfg.dataset.root}: split {split!r} selects no images")
    return listing


def _optimizer(t: TrainConfig, head: nn.Module, body: list[nn.Parameter]) -> torch.optim.Optimizer:
    groups = [{"params": list(head.parameters()), "lr": t.lr_head, "base_lr": t.lr_head}]
    if t.lr_body > 0:
        groups.append({"params": body, "lr": t.lr_body, "base_lr": t.lr_body})
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=t.momentum, weight_decay=t.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=t.weight_decay)


def cosine_factor(epoch: int, epochs: int) -> float:
    """Learning-rate multiplier of `epoch` (0-based) on a cosine from 1 down towards 0."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def _autocast(device: torch.device, amp: bool) -> AbstractContextManager:
    if not (amp and device.type == "cuda"):
        return torch.autocast(device.type, enabled=False)
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def _good(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and multi-hot labels of the readable images of a batch, on `device`."""
    keep = ~batch["bad"].bool()
    return batch["image"][keep].to(device, non_blocking=True), batch["labels"][keep].to(device)


class Trainer:
    """Holds the model, data and optimiser of one fine-tune; `fit` runs the remaining epochs."""

    def __init__(
        self, cfg: FinetuneConfig, *, fresh: bool = False, progress: bool = True, allow_software_change: bool = False
    ):
        t = cfg.train
        self.cfg, self.progress = cfg, progress
        ckpt = resumable(cfg, fresh)  # before the slow parts: a mismatched checkpoint fails fast
        self.software = provenance.continued(
            ckpt or {}, cfg.checkpoint_path, resumes=ckpt is not None, allow=allow_software_change, what="checkpoint"
        )
        self.device = resolve_device(t.device)
        torch.manual_seed(t.seed)
        loaded = build_model(cfg.model)
        train, val = _listing(cfg, t.train_split), _listing(cfg, t.val_split)
        assert train.class_names is not None  # _listing rejects a listing without class names
        self.class_names = train.class_names
        self.spec = loaded.spec
        self.model = loaded.model
        self.net = self.model.net
        head = replace_head(self.net, len(self.class_names))
        head_ids = {id(p) for p in head.parameters()}
        body = [p for p in self.net.parameters() if id(p) not in head_ids]
        self.net.requires_grad_(False)
        for p in list(head.parameters()) + (body if t.lr_body > 0 else []):
            p.requires_grad_(True)
        self.model.to(self.device)
        self.optimizer = _optimizer(t, head, body)
        amp_fp16 = t.amp and self.device.type == "cuda" and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp_fp16)
        pin = self.device.type == "cuda"
        self.train_set = ImageDataset(
            train.items,
            TrainTransform(self.spec, t.crop_scale, t.hflip),
            class_names=self.class_names,
            multilabel=True,
            skip_bad=cfg.dataset.skip_bad_images,
        )
        self.val_loader = DataLoader(
            ImageDataset(
                val.items,
                PixelTransform(self.spec),
                class_names=self.class_names,
                multilabel=True,
                skip_bad=cfg.dataset.skip_bad_images,
            ),
            batch_size=t.batch_size,
            num_workers=t.workers,
            collate_fn=collate,
            pin_memory=pin,
        )
        self.history: list[dict[str, Any]] = []
        if ckpt is not None:
            load_state(self.net, ckpt["state_dict"], cfg.checkpoint_path)
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.history = list(ckpt["history"])
        self.resumed_epochs = len(self.history)

    def fit(self) -> FinetuneResult:
        for epoch in range(len(self.history), self.cfg.train.epochs):
            start = time.perf_counter()
            lr = cosine_factor(epoch, self.cfg.train.epochs)
            for group in self.optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr
            loss = self.train_epoch(epoch)
            ap = self.evaluate()
            self.history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": loss,
                    "val_mAP": float(ap.nanmean()),
                    "val_ap": dict(zip(self.class_names, ap.tolist())),
                    "lr_factor": lr,
                    "seconds": round(time.perf_counter() - start, 3),
                }
            )
            save_checkpoint(
                self.cfg,
                checkpoint_payload(
                    self.cfg,
                    self.net,
                    self.spec,
                    self.class_names,
                    self.history,
                    self.optimizer,
                    self.scaler,
                    self.software,
                ),
            )
        self.model.eval()
        last = self.history[-1]["val_ap"]
        return FinetuneResult(
            self.model,
            self.cfg.checkpoint_path,
            list(self.class_names),
            [last[c] for c in self.class_names],
            self.history,
            self.resumed_epochs,
        )

    def train_epoch(self, epoch: int) -> float:
        """One pass over the train split; returns the mean BCE per image."""
        t = self.cfg.train
        torch.manual_seed(t.seed + epoch)  # augmentation and order depend on the epoch only: resumable
        loader = DataLoader(
            self.train_set,
            batch_size=t.batch_size,
            shuffle=True,
            num_workers=t.workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(t.seed + epoch),
        )
        self.model.train(t.lr_body > 0)  # a frozen body keeps its BatchNorm statistics and no dropout
        total, seen, start = 0.0, 0, time.perf_counter()
        bar = tqdm(
            loader,
            desc=f"{self.cfg.name} epoch {epoch + 1}/{t.epochs}",
            unit="batch",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        for batch in bar:
            x, y = _good(batch, self.device)
            if not len(x):
                continue
            with _autocast(self.device, t.amp):
                logits = self.model(x)
            loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += float(loss.detach()) * len(x)
            seen += len(x)
            bar.set_postfix(loss=f"{total / seen:.4f}", img_s=f"{seen / (time.perf_counter() - start):.1f}")
        if not seen:
            raise CamexpError(f"dataset {self.cfg.dataset.root}: no readable image in split {t.train_split!r}")
        return total / seen

    @torch.no_grad()
    def evaluate(self) -> torch.Tensor:
        """(C,) average precision per class on the val split (NaN: class absent there)."""
        self.model.eval()
        scores, targets = [], []
        for batch in self.val_loader:
            x, y = _good(batch, self.device)
            with _autocast(self.device, self.cfg.train.amp):
                scores.append(self.model(x).float().sigmoid().cpu())
            targets.append(y.cpu())
        return per_class_ap(torch.cat(scores), torch.cat(targets))


def finetune(
    cfg: FinetuneConfig, *, fresh: bool = False, progress: bool = True, allow_software_change: bool = False
) -> FinetuneResult:
    """Fine-tune (or resume fine-tuning) and return the trained model with its validation AP."""
    return Trainer(cfg, fresh=fresh, progress=progress, allow_software_change=allow_software_change).fit()
