"""The model's head must predict the data set's classes, by name and in order, not just by count."""
from __future__ import annotations

from camexp.errors import CamexpError
from camexp.models import LoadedModel


def check_class_names(dataset_names: list[str] | None, loaded: LoadedModel, weights: str) -> None:
    """Refuse a model whose class list (e.g. a fine-tuned checkpoint's) differs from the data set's."""
    if dataset_names is None or loaded.class_names is None or list(loaded.class_names) == list(dataset_names):
        return
    if len(loaded.class_names) != len(dataset_names):
        diff = f"{len(loaded.class_names)} classes, the data set {len(dataset_names)}"
    else:
        i = next(i for i, (a, b) in enumerate(zip(loaded.class_names, dataset_names)) if a != b)
        diff = f"class {i} is {loaded.class_names[i]!r} where the data set has {dataset_names[i]!r}"
    raise CamexpError(f"model.weights {weights}: the model's class list does not match the data set's ({diff}); "
                      "use a checkpoint fine-tuned on this data set's classes (camexp finetune)")
