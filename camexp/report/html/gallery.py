"""A run's image gallery: its per-image values as one data file the pages load (gallery-data.js), and per image
the photograph and every method's kept map over it as JPEG files, a thumbnail and one at the input size.

The image files are made once and reused: each is named by the image's record index and the method's place,
and `img/manifest.json` keeps the key it was made from (image id, explained class, the input transform and the
kept map's own values), so a second build writes none and an extension run's build writes only its new images'.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from camexp.config import ExperimentConfig
from camexp.data import ImageDataset
from camexp.errors import CamexpError
from camexp.explain.maps import upsample_normalize
from camexp.io import write_text_atomically
from camexp.report.figures import overlay
from camexp.report.kept_maps import class_name, run_images
from camexp.report.uncertainty import extra_values, label_of, lower_is_better, per_image_frames
from camexp.results import MAPS_DIR, map_shards, read_maps, records_view

THUMB = 112  # pixels on the thumbnail's shorter side
QUALITY = 85  # JPEG quality of every image file
DATA_JS = "gallery-data.js"
IMG, MANIFEST = "img", "manifest.json"
NO_MAPS = (
    "This run kept no maps, so it has no gallery: run it with `output: {maps: true}` in its config (with --fresh "
    "when it has recorded images already: maps cannot be added to them)"
)


@dataclass
class GalleryFiles:
    """What a build did for one run's gallery: images and methods shown, image files made and reused, their
    bytes on disk, and a note when the photographs could not be read (overlays then on grey)."""

    images: int
    methods: int
    made: int
    reused: int
    bytes: int
    note: str | None = None


def has_maps(run_dir: Path) -> bool:
    return bool(map_shards(run_dir / MAPS_DIR))


def _key(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def file_name(index: int, which: str, full: bool) -> str:
    """The image file of record `index` ('o': the photograph, else the method's place), as site.js names it."""
    return f"{IMG}/{index // 1000}/{index}_{which}{'f' if full else ''}.jpg"


def _jpeg(pixels: np.ndarray, path: Path, size: tuple[int, int] | None = None) -> None:
    """(H,W,3) values in [0,1] as a JPEG at `path` (resized to `size` (w, h) when given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8))
    if size is not None:
        img = img.resize(size, Image.Resampling.LANCZOS)
    img.save(path, format="JPEG", quality=QUALITY)


def _thumb_size(h: int, w: int) -> tuple[int, int]:
    return (max(1, round(w * THUMB / h)), THUMB) if h <= w else (THUMB, max(1, round(h * THUMB / w)))


def photographs(run_dir: Path, meta: dict[str, Any]) -> tuple[ImageDataset | None, str | None]:
    """The run's data set as the run transformed it, or None and why (moved, deleted: overlays on grey)."""
    try:
        return run_images(run_dir, meta)[0], None
    except CamexpError as e:
        return None, f"The run's images could not be read, so the maps are drawn on grey: {e}"


def write_images(
    run_dir: Path, meta: dict[str, Any], dataset: ImageDataset | None, methods: list[str], out: Path
) -> GalleryFiles:
    """Every kept map of the run over its photograph into `out` (thumbnail and full size), and the photograph,
    made only where the manifest's key differs; files no map needs any more are removed."""
    kept = read_maps(run_dir, methods)
    manifest_path = out / IMG / MANIFEST
    old: dict[str, str] = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    new: dict[str, str] = {}
    spec = json.dumps(meta.get("input"), sort_keys=True)
    made = 0
    for (index, image_id), rows in kept.groupby(["index", "image_id"], sort=False):
        readable = _readable(dataset, int(index), str(image_id))
        seen = "photo" if readable else "grey"  # a map drawn on grey is made again once the image is back
        layer_maps = {str(methods.index(m)): (t, a) for m, t, a in zip(rows["method"], rows["target"], rows["map"])}
        keys = {"o": _key(image_id, seen, spec)}
        keys |= {which: _key(image_id, seen, spec, t, a.tobytes()) for which, (t, a) in layer_maps.items()}
        x: torch.Tensor | None = None  # decoded only when a file of this image is to be made
        for which, key in keys.items():
            names = (file_name(int(index), which, False), file_name(int(index), which, True))
            new |= dict.fromkeys(names, key)
            if all(old.get(n) == key and (out / n).is_file() for n in names):
                continue
            if x is None:
                x = _photograph(dataset if readable else None, int(index), meta)
            if which == "o":
                pixels = x.permute(1, 2, 0).clamp(0, 1).numpy()
            else:
                cam = upsample_normalize(torch.from_numpy(layer_maps[which][1])[None], (x.shape[-2], x.shape[-1]))
                pixels = overlay(x, cam[0][0])
            _jpeg(pixels, out / names[1])
            _jpeg(pixels, out / names[0], _thumb_size(x.shape[-2], x.shape[-1]))
            made += 2
    for stale in set(old) - set(new):
        (out / stale).unlink(missing_ok=True)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(manifest_path, json.dumps(new, indent=0, sort_keys=True))
    size = sum((out / n).stat().st_size for n in new)
    return GalleryFiles(kept["index"].nunique(), len(methods), made, len(new) - made, size)


def _readable(dataset: ImageDataset | None, index: int, image_id: str) -> bool:
    """Whether the run's image `index` is still where the run read it (without decoding it)."""
    if dataset is None or index >= len(dataset):
        return False
    item = dataset.items[index]
    return item.image_id == image_id and item.path.is_file()


def _photograph(dataset: ImageDataset | None, index: int, meta: dict[str, Any]) -> torch.Tensor:
    """The image as the run saw it, (3,H,W) in [0,1]; mid-grey at the run's input size without a data set."""
    if dataset is not None:
        return dataset.sample(index)["image"]
    h, w = (meta.get("input") or {}).get("size") or (224, 224)
    return torch.full((3, int(h), int(w)), 0.5)


def _column(frame: pd.DataFrame) -> list[list[float | None]]:
    """Rows of a (images x methods) frame as lists, NaN as null (JSON has no NaN)."""
    return [[None if pd.isna(v) else float(v) for v in row] for row in frame.to_numpy()]


def gallery_data(
    run_dir: Path, cfg: ExperimentConfig, records: pd.DataFrame, title: str, class_names: list[str] | None
) -> dict[str, Any]:
    """The data the gallery and image pages show, by columns (one entry per image, in image-id order): ids,
    record index, explained class and its name, true label, top-1, correct (null without a label), Y, and
    every per-image value per method (O, and each metric's per-image values: records, per_image_metrics.csv,
    analyses), with its label and direction."""
    methods = cfg.method_names
    view = records_view(records, methods)
    wides, _ = per_image_frames(view, cfg.metrics, extra_values(run_dir, records, methods, cfg.analyses))
    first = records.drop_duplicates("image_id").set_index("image_id")
    ids = sorted(first.index.astype(str))
    first = first.loc[ids]
    o = records.pivot(index="image_id", columns="method", values="o").loc[ids, methods]
    values = {"o": {"label": "O: confidence on the explanation image", "lower": False, "values": _column(o)}}
    for key, wide in wides.items():
        lower = lower_is_better(key)
        values[key] = {"label": label_of(key), "lower": lower, "values": _column(wide.reindex(index=ids))}
    label = first["label"].astype(int)
    targets = first["target"].astype(int)
    return {
        "title": title,
        "methods": methods,
        "ids": ids,
        "index": first["index"].astype(int).tolist(),
        "target": targets.tolist(),
        "class": [class_name(class_names, t) for t in targets],
        "label": label.tolist(),
        "pred": first["pred"].astype(int).tolist(),
        "correct": [None if lab < 0 else bool(p == lab) for lab, p in zip(label, first["pred"].astype(int))],
        "y": [float(v) for v in first["y"]],
        "values": values,
    }


def write_data(folder: Path, data: dict[str, Any]) -> Path:
    """The gallery's data as a script that sets `window.CAMEXP_GALLERY` (a file:// page cannot fetch JSON)."""
    path = folder / DATA_JS
    write_text_atomically(path, f"window.CAMEXP_GALLERY = {json.dumps(data, allow_nan=False)};\n")
    return path
