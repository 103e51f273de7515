"""`camexp finetune` configuration: its own YAML schema, reusing the experiment's model and dataset sections.

A separate top-level schema (not a `finetune:` section of an experiment) because training and explaining are
different jobs with different keys: a fine-tune reads two splits and writes a checkpoint; an experiment
reads that checkpoint through `model.weights`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from camexp.config import DatasetConfig, ModelConfig, PlainName, _Strict, load_yaml


class TrainConfig(_Strict):
    """Optimisation and augmentation; defaults are a conventional SGD fine-tune of an ImageNet backbone."""

    train_split: str = "train"
    val_split: str = "val"
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr_head: float = Field(0.01, gt=0, description="the new 20-way head, trained from scratch")
    lr_body: float = Field(0.001, ge=0, description="the pretrained body; 0 freezes it (a linear probe)")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    weight_decay: float = Field(1e-4, ge=0)
    crop_scale: tuple[float, float] = Field((0.25, 1.0), description="random resized crop: area fraction range")
    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    amp: bool = Field(True, description="mixed precision on a GPU (bfloat16 where supported, else float16)")
    device: str = "auto"
    workers: int = Field(0, ge=0)
    seed: int = 0

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("give [min, max] area fractions with 0 < min <= max <= 1")
        return v


class FinetuneOutput(_Strict):
    checkpoint: Path | None = Field(None, description="the checkpoint file (default checkpoints/<name>.pt)")


class FinetuneConfig(_Strict):
    """A multi-label fine-tune: backbone + ImageNet weights to start from, data set, training, output."""

    name: PlainName
    model: ModelConfig
    dataset: DatasetConfig
    train: TrainConfig = TrainConfig()
    output: FinetuneOutput = FinetuneOutput()

    @model_validator(mode="after")
    def _splits_in_train(self) -> FinetuneConfig:
        if self.dataset.split is not None:
            raise ValueError("dataset.split is not used by finetune: set train.train_split and train.val_split")
        return self

    @property
    def checkpoint_path(self) -> Path:
        """Where the checkpoint is written after every epoch (and read from to resume)."""
        return self.output.checkpoint or Path("checkpoints") / f"{self.name}.pt"

    def fingerprinted(self) -> dict[str, Any]:
        """What a resumed fine-tune must share with the one it continues (epochs may grow), as a nested dict."""
        return self.model_dump(mode="json", exclude={"output": True, "train": {"epochs", "device", "workers"}})

    def fingerprint(self) -> str:
        """Hash of `fingerprinted()`."""
        return hashlib.sha256(json.dumps(self.fingerprinted(), sort_keys=True).encode()).hexdigest()[:16]


def load_finetune_config(path: str | Path, overrides: dict[str, Any] | None = None) -> FinetuneConfig:
    """Read and validate a fine-tune YAML; `overrides` maps dotted keys (e.g. 'train.epochs')."""
    return load_yaml(path, FinetuneConfig, overrides)
