"""The `study:` section of a study config: validated by its own schema, the rest by the core's loader.

camexp/config.py stays a leaf that knows nothing of studies: `load_study` reads the YAML mapping, takes
`study:` out, validates it here (unknown keys are errors, as everywhere) and hands the rest to
`load_experiment`, so the data set, model and runtime keys mean exactly what they mean in a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from camexp.config import ExperimentConfig, MethodSpec, load_yaml, read_yaml
from camexp.errors import CamexpError, ConfigError
from camexp.experiment import load_experiment
from camexp.explain.core import MethodRun, method_runs


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SelectionConfig(_Strict):
    """Which images become stimuli: exactly one of the three ways."""

    top_f1_classes: int | None = Field(
        default=None,
        ge=1,
        description="the classes with the highest F1 of the model on the config's labelled data set (the paper: 5)",
    )
    random: int | None = Field(default=None, ge=1, description="N images drawn at random (with `seed`)")
    image_ids: list[str] | None = Field(default=None, min_length=1, description="these images, by id")
    per_class: int | None = Field(
        default=None,
        ge=1,
        description="top_f1_classes: at most this many images per class (default all; ILSVRC val has 50)",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _exactly_one(self) -> SelectionConfig:
        given = [k for k in ("top_f1_classes", "random", "image_ids") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'top_f1_classes: K', 'random: N' or 'image_ids: [...]'")
        if self.per_class is not None and self.top_f1_classes is None:
            raise ValueError("per_class goes with top_f1_classes")
        return self


class StudyConfig(_Strict):
    """A blind two-method comparison: what is shown, to whom it is explained, and the randomisation seed."""

    methods: list[str | MethodSpec] = Field(default=["gradcam", "gradcam++"], description="method A and method B")
    select: SelectionConfig = SelectionConfig(top_f1_classes=5)
    stimulus: Literal["explanation", "overlay"] = Field(
        default="explanation",
        description="explanation: E = L * I (the paper's Fig. 5); overlay: the heatmap over the image",
    )
    repeats: int = Field(
        default=5, ge=0, description="items shown a second time, sides swapped (intra-rater consistency)"
    )
    practice: int = Field(
        default=0,
        ge=0,
        description="practice items shown first (images of the data set outside the selection); never scored",
    )
    catch: int = Field(
        default=0,
        ge=0,
        description="attention items: a study image's map (A's or B's) against a foil; the tally reports each "
        "rater's catch accuracy",
    )
    catch_foil: Literal["random", "constant"] = Field(
        default="random", description="the catch items' foil map: smooth random blobs, or the same value everywhere"
    )
    seed: int = Field(default=0, description="seeds the item order, the sides and which items repeat")
    title: str = "Which picture shows the object better?"
    question: str = Field(
        default="Which of the two maps best describes the {class_name}?",
        description="shown above every item; every {class_name} becomes the item's class (taken as it is)",
    )
    instructions: str | None = Field(
        default=None, description="shown on the start screen instead of the built-in instructions (plain text)"
    )
    consent: str | None = Field(
        default=None,
        description="consent text on the start screen; a participant must tick 'I agree' before starting",
    )

    @field_validator("methods")
    @classmethod
    def _two(cls, v: list[str | MethodSpec]) -> list[str | MethodSpec]:
        names = [m.name if isinstance(m, MethodSpec) else m for m in v]
        if len(v) != 2 or names[0] == names[1]:
            raise ValueError("list exactly two different methods: A and B")
        return v

    def method_specs(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(name, registered method, parameters) of A and B."""
        return [(m, m, {}) if isinstance(m, str) else (m.name, m.method, dict(m.params)) for m in self.methods]


class _Section(_Strict):
    """The file's `study:` section, validated under its own name so errors read `study.<key>`."""

    study: StudyConfig = StudyConfig()


def load_study(
    path: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[StudyConfig, ExperimentConfig, list[MethodRun]]:
    """The study section, the rest of the file as an experiment config, and the two methods resolved against
    the registry (plug-ins included)."""
    raw = read_yaml(path)
    section = {"study": raw.pop("study")} if "study" in raw else {}
    study = load_yaml(path, _Section, raw=section).study
    cfg = load_experiment(path, overrides, raw=raw)
    try:
        runs = method_runs(study.method_specs())
    except CamexpError as e:
        raise ConfigError(f"{path}: study.methods: {e}") from None
    return study, cfg, runs
