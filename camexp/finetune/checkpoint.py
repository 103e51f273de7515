"""The fine-tune checkpoint: one file that rebuilds the model (`model.weights: path`) and resumes training.

Everything in it is a tensor or a plain Python value, so `torch.load(weights_only=True)` (what
`read_checkpoint` uses) reads it without unpickling code.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from camexp.data.transforms import InputSpec
from camexp.errors import CamexpError
from camexp.finetune.config import FinetuneConfig
from camexp.io import replace_atomically
from camexp.models.weights import read_checkpoint
from camexp.resume import changed_keys, describe

FORMAT = "camexp-finetune/1"


def checkpoint_payload(
    cfg: FinetuneConfig,
    net: nn.Module,
    spec: InputSpec,
    class_names: list[str],
    history: list[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    software: dict[str, Any],
) -> dict[str, Any]:
    """What `read_checkpoint`/`build_model` need (state_dict, num_classes, class_names), plus provenance (the
    config, and `software`: `provenance.continued`) and the optimizer state for resuming."""
    return {
        **software,
        "format": FORMAT,
        "model_name": cfg.model.name,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "input": asdict(spec),
        "epoch": len(history),
        "metrics": history[-1],
        "history": history,
        "config": cfg.model_dump(mode="json"),
        "fingerprint": cfg.fingerprint(),
        "state_dict": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
    }


def save_checkpoint(cfg: FinetuneConfig, payload: dict[str, Any]) -> None:
    """Write atomically: a crash while saving leaves the previous epoch's checkpoint intact."""
    write_atomic(cfg.checkpoint_path, payload)


def write_atomic(path: Path, payload: dict[str, Any]) -> None:
    """torch.save `payload` to `path` through a synced temporary file, so `path` is always a whole checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda tmp: torch.save(payload, tmp), sync=True)


def resumable(cfg: FinetuneConfig, fresh: bool) -> dict[str, Any] | None:
    """The checkpoint to continue from, None to start over; refuses one written by another configuration."""
    path = cfg.checkpoint_path
    if fresh or not path.exists():
        return None
    ckpt = read_checkpoint(path)
    if ckpt.get("format") != FORMAT or ckpt.get("fingerprint") != cfg.fingerprint():
        raise CamexpError(
            f"{path}: holds a checkpoint of a different fine-tune configuration{_changes(ckpt, cfg)}; "
            "pass --fresh to start over or --out to write elsewhere"
        )
    return ckpt


def _changes(ckpt: dict[str, Any], cfg: FinetuneConfig) -> str:
    """' (train.lr_head: 0.05 -> 0.5)': the keys that differ from the checkpoint's configuration, named as
    `camexp run` names them; '' when the checkpoint's configuration cannot be read by this version."""
    try:
        old = FinetuneConfig.model_validate(ckpt.get("config")).fingerprinted()
    except ValidationError:
        return ""
    keys = changed_keys(old, cfg.fingerprinted())
    return f" ({describe(keys, old, cfg.fingerprinted())})" if keys else ""
