"""`camexp distill` configuration: its own YAML schema (unknown keys are errors), reusing the experiment's model
and dataset sections.

An arm is `ce`, optionally with `+kd` (Hinton's distillation loss) and/or `+exp_<map>` (the explanation loss
with the teacher's and the student's maps of method <map>: `gradcampp` is Grad-CAM++ with the exact alpha,
`gradcam` Grad-CAM, or any registered gradient method of (A, G) under its name, `+` written as `p`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from camexp.config import DatasetConfig, ModelConfig, PlainName, _Strict, load_yaml
from camexp.distill.loss import KdWeighting
from camexp.errors import CamexpError
from camexp.explain.methods import METHODS

DISTILL_PAPERS = ("poster3", "poster4")


@dataclass(frozen=True)
class Arm:
    """A parsed arm: whether it adds the KD loss, and the registered method of its explanation loss (or None)."""

    name: str
    kd: bool
    method: str | None

    @property
    def needs_teacher(self) -> bool:
        return self.kd or self.method is not None


def method_of(token: str) -> str:
    """The registered method an arm's `exp_<token>` names: '+' is written 'p' (gradcampp = gradcam++)."""
    for name in METHODS.names():
        if token in (name, name.replace("+", "p")):
            return name
    raise CamexpError(f"exp_{token}: no method {token!r}; known: {[n.replace('+', 'p') for n in METHODS.names()]}")


def parse_arm(name: str) -> Arm:
    """`ce[+kd][+exp_<map>]` -> Arm; the map must be a gradient method of A and G (no extra model calls)."""
    parts = name.split("+")
    extra = parts[1:]
    exps = [p for p in extra if p.startswith("exp_")]
    if parts[0] != "ce" or len(exps) > 1 or extra.count("kd") > 1 or len(extra) != extra.count("kd") + len(exps):
        raise CamexpError(f"arm {name!r}: write ce, ce+kd, ce+exp_<map> or ce+kd+exp_<map> (e.g. ce+exp_gradcampp)")
    method = method_of(exps[0].removeprefix("exp_")) if exps else None
    if method is not None:
        m = METHODS.get(method)
        if not m.needs_grad or m.needs_model or m.class_agnostic:
            raise CamexpError(f"arm {name!r}: {method} is not a class map of A and G alone; use e.g. gradcampp")
    return Arm(name, "kd" in extra, method)


class LossConfig(_Strict):
    """The paper's loss; every choice recorded. Defaults: the paper's alpha = 0.01 and KD with T = 4."""

    alpha: float = Field(0.01, ge=0, description="weight of the explanation loss (the paper's 0.01)")
    kd_weight: float = Field(0.9, ge=0, description="lambda, weight of the KD loss where an arm has +kd")
    kd_weighting: KdWeighting = Field(
        "camexp",
        description="how task and KD losses combine in +kd arms: camexp (task + lambda KD), hinton "
        "((1 - lambda) task + lambda KD) or attention_transfer ((1 - lambda) task + 2 lambda / C KD)",
    )
    temperature: float = Field(4.0, gt=0, description="KD temperature T (loss scaled by T^2)")
    map_norm: Literal["none", "l2", "cosine"] = Field(
        "none", description="none: squared L2 of the raw maps (the paper's); l2: unit-norm maps; cosine: 1 - cos"
    )
    target: Literal["label", "teacher_top1"] = Field(
        "label",
        description="the class c of the maps: the label (every positive class of a multi-label image, "
        "summed) or the teacher's top-1 class",
    )

    @model_validator(mode="after")
    def _task_weight_not_negative(self) -> LossConfig:
        if self.kd_weighting != "camexp" and self.kd_weight > 1:
            raise ValueError(
                f"kd_weighting {self.kd_weighting} weighs the task loss by 1 - kd_weight: keep kd_weight <= 1"
            )
        return self


class DistillTrain(_Strict):
    """Optimisation; defaults are the conventional CIFAR WRN schedule (SGD 0.1, step decay x0.2)."""

    train_split: str = "train"
    val_split: str = "test"
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["step", "cosine"] = "step"
    milestones: list[int] = Field([60, 120, 160], description="step: epochs after which lr is multiplied by gamma")
    gamma: float = Field(0.2, gt=0, le=1)
    image_size: tuple[int, int] | None = Field(None, description="(h, w) of the input; default: the student's")
    augment: Literal["none", "flip", "crop_flip"] = Field(
        "crop_flip", description="crop_flip: pad by `pad` pixels, random crop, horizontal flip (CIFAR convention)"
    )
    pad: int = Field(4, ge=0)
    teacher_maps: Literal["auto", "cache", "recompute"] = Field(
        "auto",
        description="cache: teacher maps and logits once per image (needs augment: none); recompute: on "
        "every augmented batch; auto: cache without augmentation, else recompute",
    )
    device: str = "auto"
    workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _cache_needs_fixed_images(self) -> DistillTrain:
        if self.teacher_maps == "cache" and self.augment != "none":
            raise ValueError(
                "teacher_maps: cache needs augment: none (augmented images would not match the cached "
                "teacher maps); use recompute or auto"
            )
        return self

    @property
    def cache_teacher(self) -> bool:
        return self.teacher_maps == "cache" or (self.teacher_maps == "auto" and self.augment == "none")


class DistillOutput(_Strict):
    dir: Path | None = Field(None, description="results folder (default results/<name>)")


class DistillConfig(_Strict):
    """Student arms trained from one teacher on one data set, with paired seeds."""

    name: PlainName
    paper: Literal[DISTILL_PAPERS] | None = None  # type: ignore[valid-type]
    teacher: ModelConfig | None = None
    student: ModelConfig
    dataset: DatasetConfig
    arms: list[str] = ["ce", "ce+exp_gradcampp"]
    seeds: list[int] = [0]
    teacher_seed: int = Field(
        0, ge=0, description="draws a `weights: random` teacher: the same teacher for every run and resume"
    )
    loss: LossConfig = LossConfig()
    train: DistillTrain = DistillTrain()
    output: DistillOutput = DistillOutput()

    @field_validator("arms")
    @classmethod
    def _arms(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("list one or more distinct arms")
        for a in v:
            try:
                parse_arm(a)
            except CamexpError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v) or min(v) < 0:
            raise ValueError("list one or more distinct non-negative seeds")
        return v

    @model_validator(mode="after")
    def _teacher_when_needed(self) -> DistillConfig:
        if self.teacher is None and any(a.needs_teacher for a in self.parsed_arms):
            raise ValueError("arms with kd or exp_<map> need a teacher: model spec (teacher.name, teacher.weights)")
        if self.dataset.split is not None:
            raise ValueError("dataset.split is not used by distill: set train.train_split and train.val_split")
        return self

    @property
    def parsed_arms(self) -> list[Arm]:
        return [parse_arm(a) for a in self.arms]

    @property
    def output_dir(self) -> Path:
        return self.output.dir or Path("results") / self.name

    def fingerprint(self, arm: str, seed: int) -> str:
        """What a resumed arm must share with the one it continues (epochs may grow; arms and seeds may be added)."""
        keep = self.model_dump(
            mode="json",
            exclude={
                "output": True,
                "arms": True,
                "seeds": True,
                "paper": True,
                "train": {"epochs", "device", "workers"},
            },
        )
        keep.update(arm=arm, seed=seed)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def load_distill_config(path: str | Path, overrides: dict[str, Any] | None = None) -> DistillConfig:
    """Read and validate a distill YAML; `overrides` maps dotted keys (e.g. 'train.epochs')."""
    return load_yaml(path, DistillConfig, overrides)
