"""Explain single image files for figures: per model, the target, its confidences and every method's panels.

This is the model side of `camexp explain`; drawing lives in camexp/report/figures.py. Each image goes
through the same explainer core as a run (one forward + one backward for all CAM methods, one batched
forward of the explanation images), plus one guided backward when a `guided-` method is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from camexp.accel import forward_chunk, pass_budget
from camexp.config import ModelConfig
from camexp.errors import CamexpError
from camexp.explain.core import Explainer
from camexp.explain.guided import guided_backprop, guided_cam, split_guided, to_display
from camexp.explain.methods import METHODS
from camexp.explain.scoring import Scorer, target_scores
from camexp.models import LoadedModel


@dataclass
class MethodPanel:
    """One requested method: the base method's map L (H,W), E = L * I (3,H,W), the target's confidence O on
    E, and for `guided-` methods the displayable Guided Backprop x L image (3,H,W)."""

    method: str
    cam: torch.Tensor
    explanation: torch.Tensor
    confidence: float
    guided: torch.Tensor | None = None


@dataclass
class ModelRow:
    """One image explained by one model: a figure row."""

    model: str
    image: torch.Tensor  # (3,H,W) pixel space, as the model saw it
    target: int
    class_name: str
    confidence: float  # Y on the full image
    panels: list[MethodPanel]


def parse_methods(spec: str) -> list[str]:
    """'gradcam,guided-gradcam++' -> names, checked against the registry (a `guided-` prefix is allowed)."""
    names = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in names if split_guided(m)[0] not in METHODS]
    if not names or unknown:
        raise CamexpError(
            f"--methods: unknown method(s) {unknown or spec!r}; known: {METHODS.names()}, each "
            "optionally prefixed 'guided-'"
        )
    return names


def model_configs(model: str | None, models: str | None, weights: str, layer: str | None) -> list[ModelConfig]:
    """ModelConfigs from the CLI: --model or --models a,b,c; --weights/--layer are one value for all models
    or a comma list with one value per model."""
    names = [m.strip() for m in (models or model or "").split(",") if m.strip()]
    if not names:
        raise CamexpError("give --model NAME or --models a,b,c")

    def per_model(option: str, value: str | None) -> list[str | None]:
        parts: list[str | None] = [None] if value is None else [v.strip() or None for v in value.split(",")]
        if len(parts) == 1:
            return parts * len(names)
        if len(parts) != len(names):
            raise CamexpError(f"{option}: {len(parts)} values for {len(names)} models; give one, or one per model")
        return parts

    return [
        ModelConfig(name=n, weights=w or "timm", layer=lay)
        for n, w, lay in zip(names, per_model("--weights", weights), per_model("--layer", layer))
    ]


def resolve_class(spec: str | None, loaded: LoadedModel) -> int | None:
    """--class as a class index or a class name (case-insensitive); None means each image's top-1."""
    if spec is None:
        return None
    if spec.isdigit():
        if int(spec) >= loaded.num_classes:
            raise CamexpError(
                f"--class {spec}: {loaded.name} has {loaded.num_classes} classes (0..{loaded.num_classes - 1})"
            )
        return int(spec)
    names = [n.lower() for n in loaded.class_names or []]
    if spec.lower() not in names:
        raise CamexpError(f"--class {spec!r} is not a class name of {loaded.name}; give a class index instead")
    return names.index(spec.lower())


def class_label(loaded: LoadedModel, index: int) -> str:
    return loaded.class_names[index] if loaded.class_names else f"class {index}"


def explain_batch(
    loaded: LoadedModel,
    x: torch.Tensor,
    methods: list[str],
    target: int | None,
    kind: str = "softmax",
    image_ids: list[str] | None = None,
) -> list[ModelRow]:
    """Rows for images `x` (B,3,H,W in [0,1]) on the model's device; `target` None = top-1 per image;
    `kind` the confidence shown: softmax, or sigmoid for a multi-label (VOC fine-tuned) head; `image_ids`
    seed the noise of seeded methods (random, smoothgradcam++) as a run's image ids do. Forwards run in the
    device's chunks (Score-CAM's masked images too), as in a run."""
    bases = list(dict.fromkeys(split_guided(m)[0] for m in methods))
    scorer = Scorer(
        loaded.model, kind=kind, chunk=forward_chunk(x.device, None), pass_budget=pass_budget(x.device, None)
    )
    ex = Explainer(loaded, bases, scorer=scorer).explain(
        x, None if target is None else torch.full((len(x),), target), image_ids
    )
    y = target_scores(ex.logits, ex.targets, kind)
    o = scorer.explanations(x, ex.maps, ex.targets)
    guided = None
    if any(split_guided(m)[1] for m in methods):
        guided = guided_backprop(loaded.model, x, ex.targets)
    rows = []
    for i in range(len(x)):
        panels = []
        for m in methods:
            base, is_guided = split_guided(m)
            cam = ex.maps[base][i]
            shown = None
            if is_guided:
                assert guided is not None  # computed above whenever a method is guided
                shown = to_display(guided_cam(guided[i : i + 1], cam[None]))[0]
            panels.append(
                MethodPanel(
                    m,
                    cam.cpu(),
                    (cam * x[i]).cpu(),
                    float(o[i, bases.index(base)]),
                    None if shown is None else shown.cpu(),
                )
            )
        t = int(ex.targets[i])
        rows.append(ModelRow(loaded.name, x[i].cpu(), t, class_label(loaded, t), float(y[i]), panels))
    return rows
