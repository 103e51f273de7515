"""`camexp plot RUN --images ...`: `camexp explain`'s figure drawn from a finished run's kept maps, without the model.

The image is read from the run's data set (its saved config) through the run's own input transform (run.json's
`input`); each kept map is upsampled and normalised as the run did before scoring it (docs/definitions.md, D2),
and the confidences Y and O come from the run's records.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from camexp.config import ExperimentConfig
from camexp.data import ImageDataset, InputSpec, PixelTransform, list_dataset
from camexp.errors import CamexpError
from camexp.explain.gallery import MethodPanel, ModelRow
from camexp.explain.maps import upsample_normalize
from camexp.report.figures import draw_explain_grid
from camexp.report.runs import dataset_root
from camexp.results import RUN_JSON, complete_records, read_all_records, read_json, read_maps
from camexp.savefig import save_figure


def run_images(run_dir: Path, meta: dict[str, Any]) -> tuple[ImageDataset, ExperimentConfig]:
    """The run's data set as the run listed and transformed it: its folder as the run resolved it, not a
    relative `dataset.root` taken from wherever `camexp plot` is started."""
    cfg = ExperimentConfig.model_validate(meta["config"])
    spec = InputSpec.from_json(meta["input"])
    try:
        listing = list_dataset(cfg.dataset.model_copy(update={"root": Path(dataset_root(meta, run_dir))}))
    except CamexpError as e:
        raise CamexpError(f"{run_dir}: drawing needs the run's images, from its config's dataset: {e}") from None
    return ImageDataset(listing.items, PixelTransform(spec), class_names=listing.class_names), cfg


def class_name(names: list[str] | None, target: int) -> str:
    """The explained class as the figures name it: the data set's class name, else 'class N'."""
    return names[target] if names and 0 <= target < len(names) else f"class {target}"


def plot_kept_maps(run_dir: Path, images: list[str], methods: list[str] | None, out: Path) -> list[Path]:
    """One figure (PNG + PDF) per image id in `out`, named maps_<image id>: the image, then per method the
    overlay of its kept map and E = L * I with O; the run's maps, targets and confidences, no model."""
    meta = read_json(run_dir / RUN_JSON)
    kept = read_maps(run_dir, methods, images)  # unknown ids or methods, or no maps: its one-line errors
    records = complete_records(read_all_records(run_dir), list(meta["methods"])).set_index(["index", "method"])
    dataset, cfg = run_images(run_dir, meta)
    written: list[Path] = []
    for (index, image_id), rows in kept.groupby(["index", "image_id"], sort=False):
        if index >= len(dataset) or dataset.items[index].image_id != image_id:
            raise CamexpError(
                f"{run_dir}: image {image_id} (index {index}) is no longer where the run's data set puts it "
                f"({cfg.dataset.root}); draw with the data set the run used"
            )
        x = dataset.sample(int(index))["image"]
        size = (x.shape[-2], x.shape[-1])
        panels = []
        for method, layer_map in zip(rows["method"], rows["map"]):
            cam = upsample_normalize(torch.from_numpy(layer_map)[None], size)[0][0]
            panels.append(MethodPanel(method, cam, cam * x, float(records.loc[(index, method), "o"])))
        target = int(rows["target"].iloc[0])
        name = class_name(dataset.class_names, target)
        y = float(records.loc[(index, rows["method"].iloc[0]), "y"])
        row = ModelRow(cfg.model.name, x, target, name, y, panels)
        written += save_figure(draw_explain_grid([row]), out, "maps_" + re.sub(r"[^\w.-]", "_", image_id))
    return written
