"""`camexp study make`: select the images, compute both methods' maps with the explainer core, and write the
blind page (page/: what raters load), key.json (which side is which method) and study.json (everything
that defines the study).

Images are numbered in the order raters first see them (item_000, item_001, ...); each has an original
(`_o`) and two stimuli (`_a`: left at its first showing, `_b`: right). Method A is on the left for half of
the images (a seeded balanced draw); `repeats` images are shown once more at the end, sides swapped, so a
rater's consistency can be measured. Nothing under page/ names a method: only key.json un-blinds.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from camexp.accel import disable_tf32, forward_chunk, pass_budget, resolve_device
from camexp.analyses import ANALYSES
from camexp.config import ExperimentConfig
from camexp.csvsafe import write_csv
from camexp.data import ImageDataset, build_dataset, collate
from camexp.errors import CamexpError, os_reason
from camexp.explain.core import Explainer
from camexp.explain.scoring import Scorer
from camexp.lock import hold
from camexp.metrics import settings_fingerprint
from camexp.models import LoadedModel, build_model
from camexp.report.figures import overlay
from camexp.report.runs import STUDY_JSON, STUDY_REPORT
from camexp.results import FULL_OR_READ_ONLY, refuse_other_kind, write_json
from camexp.study.config import StudyConfig, load_study
from camexp.study.select import F1_CSV, chosen_indices, f1_table, predict, top_f1_indices
from camexp.study.store import DB_FILES

KEY_JSON, PAGE, ITEMS_JS = "key.json", "page", "items.js"
PAGE_FILES = ("index.html", "study.css", "study.js")  # copied from camexp/study/page/
# What a study folder holds: a new study replaces all of it (an old tally counted answers to the old page).
STUDY_FILES = (
    PAGE,
    KEY_JSON,
    STUDY_JSON,
    F1_CSV,
    STUDY_REPORT,
    str(Path(STUDY_REPORT).with_suffix(".csv")),
    *DB_FILES,
)


def balanced_sides(rng: np.random.Generator, n: int) -> list[bool]:
    """n sides in random order, method A on the left for half of them; of an odd n the extra left slot goes
    to A or to B by a coin of `rng`, so neither method is favoured by the side it is shown on."""
    return [bool(s) for s in rng.permutation(np.arange(n) < (n + int(rng.integers(2))) // 2)]


@dataclass
class Plan:
    """The blind layout: `order[k]` is the selection position of the k-th image shown, `a_is_A[k]` whether
    its `_a` stimulus (left at its first showing) is method A, `repeats` the images shown again, swapped.
    `practice` images follow the n study images (k = n, n + 1, ...; `a_is_A` covers them too). `catch[j]` is
    a study image shown once more as an attention item: its `_a` map (`catch_a[j]`) or its `_b` map against a
    foil (`_c`), the map on the left when `catch_left[j]`."""

    order: list[int]
    a_is_A: list[bool]
    repeats: list[int]
    practice: int = 0
    catch: list[int] = field(default_factory=list)
    catch_a: list[bool] = field(default_factory=list)
    catch_left: list[bool] = field(default_factory=list)

    @classmethod
    def draw(cls, n: int, repeats: int, seed: int, practice: int = 0, catch: int = 0) -> Plan:
        rng = np.random.default_rng(seed)
        order = rng.permutation(n).tolist()
        sides = balanced_sides(rng, n)
        again = rng.permutation(rng.choice(n, min(repeats, n), replace=False)).tolist() if repeats else []
        plan = cls(order, sides, [int(r) for r in again])
        if practice:
            plan.practice, plan.a_is_A = practice, sides + balanced_sides(rng, practice)
        if catch:
            plan.catch = [int(k) for k in rng.choice(n, min(catch, n), replace=False)]
            plan.catch_a, plan.catch_left = balanced_sides(rng, len(plan.catch)), balanced_sides(rng, len(plan.catch))
        return plan

    def items(self) -> list[tuple[int, bool]]:
        """(image k, swapped) per scored item in presentation order: every image once, then the repeats swapped."""
        return [(k, False) for k in range(len(self.order))] + [(k, True) for k in self.repeats]

    def presentation(self) -> list[int]:
        """Item numbers in the order a page without a server shows them. Items are numbered: the scored items
        (`items()`), then the practice items, then the catch items; shown: practice first, the first showings
        with the catch items spread evenly among them, then the repeats."""
        n, trials = len(self.order), len(self.items())
        first: list[int] = list(range(n))
        for j in reversed(range(len(self.catch))):
            first.insert(round((j + 1) * n / (len(self.catch) + 1)), trials + self.practice + j)
        return list(range(trials, trials + self.practice)) + first + list(range(n, trials))


@dataclass
class StudyResult:
    """What `make_study` wrote and chose."""

    folder: Path
    study_id: str
    images: int
    items: int
    f1: pd.DataFrame | None
    classes: list[str] = field(default_factory=list)


def make_study(
    config: Path, out: Path | None = None, device: str | None = None, force: bool = False, progress: bool = True
) -> StudyResult:
    """Build the study of `config` into `out` (default the config's output folder, results/<name>), holding the
    folder's lock (camexp/lock.py) throughout, so that a second `study make` (or a run) into it stops with one line."""
    study, cfg, _ = load_study(config, {"runtime.device": device, "output.dir": str(out) if out else None})
    folder = cfg.output_dir
    with hold(folder, command="camexp study make"), _writes_named(folder):
        _check_folder(folder, force)
        return _make(config, study, cfg, folder, progress)


def _check_folder(folder: Path, force: bool) -> None:
    """Refuse a run or distillation folder, and a finished study (study.json, written last) unless `force`."""
    refuse_other_kind(folder, STUDY_JSON)
    if (folder / STUDY_JSON).exists() and not force:
        raise CamexpError(
            f"{folder} already holds a study ({STUDY_JSON}); pass --force to replace it (answers given "
            "to the old page will then be refused by the tally)"
        )


@contextmanager
def _writes_named(folder: Path) -> Iterator[None]:
    """A write into the study folder that fails (full disk, quota, read-only, a file in the way) is one line
    naming the path and the reason instead of a traceback; other OSErrors (reading the data) pass."""
    try:
        yield
    except OSError as e:
        path = Path(e.filename) if e.filename else None
        if e.errno not in FULL_OR_READ_ONLY and (path is None or folder not in (path, *path.parents)):
            raise
        raise CamexpError(
            f"{path or folder}: {os_reason(e)} while writing the study; free space or make the folder writable "
            "(or choose another with --out), then run the same command again"
        ) from None


def _make(config: Path, study: StudyConfig, cfg: ExperimentConfig, folder: Path, progress: bool) -> StudyResult:
    """Select, explain and write the study into `folder` (checked and locked by `make_study`)."""
    torch.manual_seed(cfg.runtime.seed)  # as a run does: `weights: random` and seeded methods draw the same
    dev = resolve_device(cfg.runtime.device)
    disable_tf32(dev)
    loaded = build_model(cfg.model, dev)
    chunk = cfg.runtime.forward_chunk
    budget = pass_budget(dev, chunk)
    scorer = Scorer(loaded.model, cfg.occlusion, cfg.confidence, forward_chunk(dev, chunk), pass_budget=budget)
    explainer = Explainer(loaded, study.method_specs(), cfg.score, scorer)  # a method the model lacks fails here
    ds = build_dataset(cfg.dataset, loaded.spec)
    labels = np.array([it.label for it in ds.items])
    f1 = None
    sel = study.select
    if sel.top_f1_classes is not None:
        if ds.multilabel or not (labels >= 0).any():
            raise CamexpError(
                f"{config}: study.select.top_f1_classes needs a single true label per image, and "
                f"this {cfg.dataset.kind} data set has none (use random: N or image_ids)"
            )
        f1 = f1_table(
            labels, predict(loaded, ds, list(range(len(ds))), dev, cfg.runtime.batch_size, progress), loaded.class_names
        )
        chosen = top_f1_indices(labels, f1, sel.top_f1_classes, sel.per_class)
    else:
        chosen = chosen_indices(sel, [it.image_id for it in ds.items])
    if not chosen:
        raise CamexpError(f"{config}: study.select chose no image of the {len(ds)} listed")
    others = sorted(set(range(len(ds))) - set(chosen))
    if len(others) < study.practice:
        raise CamexpError(
            f"{config}: study.practice: {study.practice} practice images asked, but the data set has only "
            f"{len(others)} image(s) outside the selection"
        )
    practice = sorted(random.Random(study.seed).sample(others, study.practice))
    plan = Plan.draw(len(chosen), study.repeats, study.seed, study.practice, study.catch)
    for stale in STUDY_FILES:  # a replaced study's, or what a make that failed half-way left
        shutil.rmtree(folder / stale) if (folder / stale).is_dir() else (folder / stale).unlink(missing_ok=True)
    (folder / PAGE / "img").mkdir(parents=True, exist_ok=True)
    shown = [chosen[i] for i in plan.order] + practice
    images = _write_stimuli(study, explainer, ds, shown, plan, folder / PAGE, cfg, progress)
    return _write_study(study, cfg, config, loaded, folder, images, plan, f1)


def _write_stimuli(
    study: StudyConfig,
    explainer: Explainer,
    ds: ImageDataset,
    shown: list[int],
    plan: Plan,
    page: Path,
    cfg: ExperimentConfig,
    progress: bool,
) -> list[dict[str, Any]]:
    """Explain the shown images (data set indices, display order) for their target class (the true label,
    else the top-1 prediction) and write each one's original and two stimuli; one dict per image."""
    loaded, names = explainer.loaded, explainer.methods
    dev = loaded.model.mean.device
    out: list[dict[str, Any]] = []
    loader = DataLoader(Subset(ds, shown), batch_size=cfg.runtime.batch_size, shuffle=False, collate_fn=collate)
    with tqdm(total=len(shown), unit="img", desc="stimuli", disable=not progress) as bar:
        for batch in loader:
            if batch["bad"].any():
                raise CamexpError(f"{ds.items[int(batch['index'][batch['bad'].bool()][0])].path}: unreadable image")
            x = batch["image"].to(dev)
            labels = batch["label"].to(dev)
            pred = explainer.scorer.logits(x).argmax(1)
            targets = torch.where(labels >= 0, labels, pred)
            ex = explainer.explain(x, targets, batch["image_id"])
            for i in range(len(x)):
                k = len(out)
                first, second = names if plan.a_is_A[k] else names[::-1]
                stem = f"img/item_{k:03d}"
                _png(x[i].cpu().permute(1, 2, 0).numpy(), page / f"{stem}_o.png")
                for side, name in (("a", first), ("b", second)):
                    _png(_stimulus(study.stimulus, x[i].cpu(), ex.maps[name][i].cpu()), page / f"{stem}_{side}.png")
                if k in plan.catch:
                    cam = foil(study.catch_foil, tuple(x.shape[-2:]), study.seed + k)
                    _png(_stimulus(study.stimulus, x[i].cpu(), cam), page / f"{stem}_c.png")
                t = int(targets[i])
                out.append(
                    {
                        "image": k,
                        "image_id": batch["image_id"][i],
                        "label": int(labels[i]),
                        "predicted": int(pred[i]),
                        "target": t,
                        "class_name": loaded.class_names[t] if loaded.class_names else f"class {t}",
                        "a": "A" if plan.a_is_A[k] else "B",
                    }
                )
            bar.update(len(x))
    return out


def foil(kind: str, size: tuple[int, int], seed: int) -> torch.Tensor:
    """A catch item's map that shows nothing of the object: the same value everywhere (constant), or smooth
    random blobs (random: 7 x 7 uniform noise upsampled bilinearly, stretched to [0, 1])."""
    if kind == "constant":
        return torch.full(size, 0.5)
    g = torch.Generator().manual_seed(seed)
    cam = torch.nn.functional.interpolate(torch.rand(1, 1, 7, 7, generator=g), size=size, mode="bilinear")[0, 0]
    return (cam - cam.min()) / (cam.max() - cam.min())


def _stimulus(kind: str, image: torch.Tensor, cam: torch.Tensor) -> np.ndarray:
    """(H,W,3) in [0,1]: E = L * I (explanation) or the jet heatmap blended over the image (overlay)."""
    return (cam[None] * image).permute(1, 2, 0).numpy() if kind == "explanation" else overlay(image, cam)


def _png(hwc: np.ndarray, path: Path) -> None:
    Image.fromarray((np.clip(hwc, 0, 1) * 255).round().astype(np.uint8)).save(path, optimize=True)


def _catalogue(images: list[dict[str, Any]], plan: Plan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per item (numbered as `Plan.presentation` says): key.json's entry (kind trial / practice / catch; which
    method, or for a catch item map or foil, is on each side at that showing) and items.js's entry (what the
    page shows: class name and the three pictures; nothing that tells a catch item apart)."""
    n = len(plan.order)
    key: list[dict[str, Any]] = []
    page: list[dict[str, Any]] = []

    def add(kind: str, k: int, files: tuple[str, str], **fields: Any) -> None:
        key.append({"item": len(key), "kind": kind, **fields})
        stem = f"img/item_{k:03d}"
        page.append(
            {
                "class_name": images[k]["class_name"],
                "original": f"{stem}_o.png",
                "left": f"{stem}_{files[0]}.png",
                "right": f"{stem}_{files[1]}.png",
                **({"practice": True} if kind == "practice" else {}),
            }
        )

    other = {"A": "B", "B": "A"}
    for k, swapped in [*plan.items(), *((n + j, False) for j in range(plan.practice))]:
        a = images[k]["a"]
        sides, files = (a, other[a]), ("a", "b")
        (left, right), files = (sides[::-1], files[::-1]) if swapped else (sides, files)
        if k < n:
            add("trial", k, files, image=k, left=left, right=right, repeat=swapped)
        else:
            add("practice", k, files, image=None, practice_image=k - n, left=left, right=right, repeat=False)
    for k, map_a, map_left in zip(plan.catch, plan.catch_a, plan.catch_left, strict=True):
        m = "a" if map_a else "b"
        files, sides = ((m, "c"), ("map", "foil")) if map_left else (("c", m), ("foil", "map"))
        map_of = images[k]["a"] if map_a else other[images[k]["a"]]
        add("catch", k, files, image=k, left=sides[0], right=sides[1], repeat=False, map_of=map_of)
    return key, page


def _write_study(
    study: StudyConfig,
    cfg: ExperimentConfig,
    config: Path,
    loaded: LoadedModel,
    folder: Path,
    images: list[dict[str, Any]],
    plan: Plan,
    f1: pd.DataFrame | None,
) -> StudyResult:
    """key.json, f1_per_class.csv, the page (its static files and items.js) and, last, study.json."""
    names = [r[0] for r in study.method_specs()]
    n = len(plan.order)
    items, shown = _catalogue(images, plan)
    images, practice_images = images[:n], images[n:]
    body = {"methods": {"A": names[0], "B": names[1]}, "images": images, "items": items}
    if practice_images:
        body["practice_images"] = practice_images
    # The config with the analyses' settings (the form it had when they were config sections, so that study ids
    # stay as they were); the metrics' settings never change a map.
    fingerprint = cfg.fingerprint(None, settings_fingerprint(cfg, ANALYSES))
    definition = {"study": study.model_dump(mode="json"), "fingerprint": fingerprint, **body}
    study_id = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:12]
    write_json(folder / KEY_JSON, {"study_id": study_id, **body})
    classes = list(dict.fromkeys(im["class_name"] for im in images))
    if f1 is not None:
        write_csv(f1, folder / F1_CSV, index=False, float_format="%.4f")
    page = folder / PAGE
    for name in PAGE_FILES:
        (page / name).write_bytes(resources.files("camexp.study").joinpath("page").joinpath(name).read_bytes())
    data = {
        "id": study_id,
        "title": study.title,
        "question": study.question,
        "instructions": study.instructions,
        "consent": study.consent,
        "items": shown,
        "order": plan.presentation(),
    }
    (page / ITEMS_JS).write_text(f"window.CAMEXP_STUDY = {json.dumps(data, indent=1)};\n")
    # last: study.json marks a finished study (camexp report table lists it; a new make into the folder needs --force)
    write_json(
        folder / STUDY_JSON,
        {
            "study_id": study_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config_path": str(config),
            "config": cfg.model_dump(mode="json"),
            "study": study.model_dump(mode="json"),
            "model": {"name": loaded.name, "layer": loaded.layer_name, "weights": cfg.model.weights},
            "images": len(images),
            "image_ids": sorted(im["image_id"] for im in images),
            "items": len(items),
            "repeats": len(plan.repeats),
            "practice": plan.practice,
            "catch": len(plan.catch),
            "classes": classes,
            "selection_f1": None if f1 is None else f1.head(study.select.top_f1_classes or 0).to_dict("records"),
        },
    )
    return StudyResult(folder, study_id, len(images), len(items), f1, classes)
