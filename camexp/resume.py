"""May this config resume the run in a folder? The same per-image configuration, or the same one selecting
more images (an extension: only the new images are computed), with no per-batch job added after images were
recorded without it whose entry says `resume = "refuse"` (an analysis: its summary would silently cover fewer
images than the run's). A per-batch metric (`recompute`: the runner explains again the images lacking its
rows) and an analysis drawn from the records alone (`any`) may be added at any time.

`check_config` runs before the model is built, from run.json alone; `check_images` runs once the data set
is listed, against the records: every recorded image must be the image the new selection puts at that
index, or the records would mix two images under one number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from camexp.config import FINGERPRINT_VERSION, ExperimentConfig, fingerprint_hash
from camexp.data.base import Item
from camexp.errors import CamexpError
from camexp.jobs import jobs_of
from camexp.metrics import settings_fingerprint
from camexp.results import MAPS_DIR, complete_images, read_all_records

SELECTION = ("dataset.limit", "dataset.subset")  # keys that may grow a run: positions are kept or checked
SHOWN = 3  # differing keys named in a refusal


def fingerprinted_of(cfg: ExperimentConfig, method_params: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """`cfg.fingerprinted` with its metric settings resolved by the metrics that read them (config is a leaf
    and knows no metric's defaults); `method_params` as there."""
    return cfg.fingerprinted(method_params, settings_fingerprint(cfg))


def check_config(
    previous: dict[str, Any], cfg: ExperimentConfig, folder: Path, fingerprinted: dict[str, Any] | None = None
) -> None:
    """Refuse to resume a run of another per-image configuration, naming the keys that differ (old -> new),
    or one that adds a per-batch analysis after images were recorded without it. A different
    `dataset.limit` or `dataset.subset` passes here; `check_images` decides on the images. `fingerprinted`:
    the new run's (`fingerprinted_of`, with its resolved method parameters; default: without them); run.json
    keeps the previous run's config and resolved method parameters."""
    if not isinstance(previous, dict) or not isinstance(previous.get("config"), dict):
        raise CamexpError(
            f"{folder}: its run.json was not written by camexp; write elsewhere with --out (or replace it with --fresh)"
        )
    if (version := previous.get("fingerprint_version")) != FINGERPRINT_VERSION:
        raise CamexpError(
            f"{folder}: holds a run written by {writer(previous)} under fingerprint version {version or 1}; this "
            f"camexp compares configurations under version {FINGERPRINT_VERSION}. Pass --fresh to start over or "
            "--out to write elsewhere"
        )
    _check_added(previous["config"], cfg, folder)
    fingerprinted = fingerprinted_of(cfg) if fingerprinted is None else fingerprinted
    if previous.get("fingerprint") == fingerprint_hash(fingerprinted):
        return
    try:
        old = fingerprinted_of(ExperimentConfig.model_validate(previous["config"]), previous.get("method_params"))
    except (KeyError, TypeError, ValidationError, CamexpError):
        raise CamexpError(
            f"{folder}: holds a run whose configuration this camexp version cannot compare; pass "
            "--fresh to start over or --out to write elsewhere"
        ) from None
    blocking = [k for k in changed_keys(old, fingerprinted) if not k.startswith(SELECTION)]
    if blocking:
        raise CamexpError(
            f"{folder}: holds a run of a different configuration "
            f"({describe(blocking, old, fingerprinted)}); pass --fresh to start over or --out to write "
            "elsewhere"
        )


def _check_added(before: dict[str, Any], cfg: ExperimentConfig, folder: Path) -> None:
    """Refuse the per-batch jobs added after images were recorded without them whose entry says `refuse`."""
    kept_maps = [MAPS_DIR] if (before.get("output") or {}).get("maps") else []  # the maps job (`output.maps`)
    listed = [*before.get("metrics", []), *before.get("analyses", []), *kept_maps]
    added = [j.name for j in jobs_of(cfg) if j.name not in listed and j.resume == "refuse"]
    recorded = len(complete_images(read_all_records(folder), cfg.method_names)) if added else 0
    if recorded and MAPS_DIR in added:
        raise CamexpError(
            f"{folder}: `output: {{maps: true}}` was turned on after {recorded} images were recorded without "
            "their maps; pass --fresh to explain every image again with them, or --out for a new folder"
        )
    if recorded:
        raise CamexpError(
            f"{folder}: analyses {added} were added after {recorded} images were recorded without them; "
            "their numbers would cover only the images explained from now on: pass --fresh to "
            "recompute every image with them, or --out for a new folder"
        )


def check_images(cfg: ExperimentConfig, records: pd.DataFrame, items: list[Item], folder: Path) -> None:
    """Refuse records whose images are not the items now at their indices: a subset that renumbers the
    images, a smaller limit, files renamed on disk. Their records would otherwise mix two images per index."""
    if records.empty:
        return
    ids = records.drop_duplicates("index").set_index("index")["image_id"]
    moved = [(int(i), rid) for i, rid in ids.items() if i >= len(items) or items[i].image_id != rid]
    if moved:
        i, rid = moved[0]
        now = f"is now {items[i].image_id}" if i < len(items) else "is no longer selected"
        raise CamexpError(
            f"{folder}: {len(moved)} of its {len(ids)} recorded images are not where the data set now "
            f"puts them (index {i} was {rid}, {now}); a run is extended only when its images keep their "
            "places (a larger dataset.limit, not a subset that renumbers them); pass --fresh to start "
            "over or --out to write elsewhere"
        )


def writer(meta: dict[str, Any]) -> str:
    """Which camexp wrote a run.json, in words: its version and, where recorded, its commit."""
    software = meta.get("software") or {}
    version = (meta.get("versions") or {}).get("camexp", "an unknown version")
    commit = software.get("camexp_commit")
    return f"camexp {version}" + (f" (commit {commit[:12]})" if commit else "")


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (a key on one side only counts)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [prefix or "(top level)"]
    return [
        k
        for key in sorted(old.keys() | new.keys(), key=str)
        for k in changed_keys(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
    ]


def describe(keys: list[str], old: dict[str, Any], new: dict[str, Any]) -> str:
    """'score: logit -> softmax, ...' for the first few keys."""

    def value(tree: dict[str, Any], key: str) -> Any:
        node: Any = tree
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    shown = ", ".join(f"{k}: {value(old, k)!r} -> {value(new, k)!r}" for k in keys[:SHOWN])
    return shown + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")
