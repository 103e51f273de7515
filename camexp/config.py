"""Experiment configuration: YAML validated by pydantic, so every key, type and value is checked.

pydantic gives us typed models, `extra="forbid"` (unknown keys are errors) and error locations that name
the offending key path, which is what a one-line config error needs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from camexp.errors import ConfigError

FAITHFULNESS_METRICS = ("avg_drop", "increase", "win", "relperf")
PAPER_TABLES = ("table1", "table2", "table3", "table4", "table5", "table6", "table7", "table8", "equiv1", "equiv2")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetConfig(_Strict):
    """Where the images come from. `kind` picks a loader from `camexp.data`."""

    kind: str = "folder"
    root: Path
    split: str | None = None
    labels: Path | None = Field(None, description="folder kind: optional CSV with columns image_id,label")
    limit: int | None = Field(None, ge=1)
    skip_bad_images: bool = False
    extensions: list[str] = [".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"]


class ModelConfig(_Strict):
    """A timm model name (or `tv:NAME` for torchvision), its weights and the explained layer."""

    name: str
    weights: str = "timm"
    layer: str | None = None


class RuntimeConfig(_Strict):
    device: Literal["auto", "cpu", "cuda"] | str = "auto"
    batch_size: int = Field(8, ge=1)
    workers: int = Field(0, ge=0)
    seed: int = 0
    forward_chunk: int | None = Field(None, ge=1, description="max images per no-grad forward of explanation images")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="autocast dtype of the forward passes")


class OutputConfig(_Strict):
    dir: Path | None = None


class ExperimentConfig(_Strict):
    """A whole experiment; see README.md for every key."""

    name: str
    paper: Literal[PAPER_TABLES] | None = None  # type: ignore[valid-type]
    dataset: DatasetConfig
    model: ModelConfig
    methods: list[str] = ["gradcam", "gradcam++"]
    score: Literal["logit", "softmax"] = "logit"
    confidence: Literal["softmax", "sigmoid"] = "softmax"
    target: Literal["predicted", "true"] = "predicted"
    occlusion: Literal["pixel", "normalized"] = "pixel"
    metrics: list[str] = ["avg_drop", "increase", "win"]
    analyses: list[str] = []
    relperf_min_true_prob: float = Field(0.0, ge=0.0, le=1.0)
    runtime: RuntimeConfig = RuntimeConfig()
    output: OutputConfig = OutputConfig()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\") or v.startswith("."):
            raise ValueError("must be a plain folder name (no slashes, not starting with '.')")
        return v

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: list[str]) -> list[str]:
        from camexp.explain.methods import METHODS

        unknown = [m for m in v if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; known: {sorted(METHODS)}")
        if not v:
            raise ValueError("list at least one method")
        if len(set(v)) != len(v):
            raise ValueError("a method is listed twice")
        return v

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        from camexp.metrics import METRICS

        unknown = [m for m in v if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
        return v

    @field_validator("analyses")
    @classmethod
    def _known_analyses(cls, v: list[str]) -> list[str]:
        from camexp.analyses import ANALYSES

        unknown = [a for a in v if a not in ANALYSES]
        if unknown:
            raise ValueError(f"unknown analysis(es) {unknown}; known: {sorted(ANALYSES)}")
        return v

    @model_validator(mode="after")
    def _metric_needs(self) -> "ExperimentConfig":
        if "win" in self.metrics and len(self.methods) < 2:
            raise ValueError("metric 'win' compares methods: list at least two methods (or drop 'win')")
        return self

    @property
    def output_dir(self) -> Path:
        return self.output.dir if self.output.dir is not None else Path("results") / self.name

    def fingerprint(self) -> str:
        """Hash of everything that changes per-image values (not batch size, device, workers or output; amp does)."""
        keep = self.model_dump(mode="json", exclude={"runtime", "output", "metrics", "analyses", "relperf_min_true_prob", "paper"})
        if self.runtime.amp != "off":  # reduced precision changes Y and O; 'off' keeps older fingerprints valid
            keep["amp"] = self.runtime.amp
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def _format_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {loc}: {msg}{more}"


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate a YAML experiment; `overrides` maps dotted keys (e.g. 'runtime.batch_size')."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (name, dataset, model, methods, ...)")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    _resolve_paths(raw, path.parent)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_error(path, e)) from None


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Relative dataset paths are taken relative to the config file's folder when they exist there."""
    ds = raw.get("dataset")
    if not isinstance(ds, dict):
        return
    for key in ("root", "labels"):
        v = ds.get(key)
        if isinstance(v, str) and not Path(v).is_absolute() and not Path(v).exists() and (base / v).exists():
            ds[key] = str(base / v)
