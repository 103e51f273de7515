"""Does the data set fit the model and the config? The head must predict the data set's classes (by name and
in order, not just by count), and labels must exist where the config needs them. `camexp check` reports
these problems; `camexp run` refuses to start on the first one. (What the config needs of the labels is
checked in camexp/check.py, which knows the metrics.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from camexp.errors import CamexpError
from camexp.models import LoadedModel

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig
    from camexp.data.base import Item


def check_class_names(dataset_names: list[str] | None, loaded: LoadedModel, weights: str) -> None:
    """Refuse a model whose class list (e.g. a fine-tuned checkpoint's) differs from the data set's."""
    if dataset_names is None or loaded.class_names is None or list(loaded.class_names) == list(dataset_names):
        return
    if len(loaded.class_names) != len(dataset_names):
        diff = f"{len(loaded.class_names)} classes, the data set {len(dataset_names)}"
    else:
        i = next(i for i, (a, b) in enumerate(zip(loaded.class_names, dataset_names)) if a != b)
        diff = f"class {i} is {loaded.class_names[i]!r} where the data set has {dataset_names[i]!r}"
    raise CamexpError(
        f"model.weights {weights}: the model's class list does not match the data set's ({diff}); "
        "use a checkpoint fine-tuned on this data set's classes (camexp finetune)"
    )


def head_problems(
    cfg: ExperimentConfig, items: list[Item], class_names: list[str] | None, loaded: LoadedModel
) -> list[str]:
    """Where the model's head does not fit the data set: class count, label range, class names."""
    n = loaded.num_classes
    if class_names is not None and len(class_names) != n:
        return [
            f"model {cfg.model.name!r} (weights {cfg.model.weights!r}) predicts {n} classes but the "
            f"{cfg.dataset.kind} data set has {len(class_names)}; use weights for that head"
        ]
    top = max((it.label for it in items), default=-1)
    if top >= n:
        return [f"{cfg.dataset.root}: label {top} is out of range for a model with {n} classes (wrong label mapping?)"]
    try:
        check_class_names(class_names, loaded, cfg.model.weights)
    except CamexpError as e:
        return [str(e)]
    return []
