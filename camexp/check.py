"""`camexp check`: everything that can be verified before a long run, reported at once.

Data (root, layout, images paired with annotations, every image decoded as the run decodes it, boxes by
the loaders' rules of camexp/data/boxes.py),
model (weights reachable, layer resolves, head size matches the data set's classes) and the config's
needs (true labels for `target: true` and `relperf`, a GAP+linear head for `cam`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from tqdm import tqdm

from camexp.analyses import ANALYSES
from camexp.config import ExperimentConfig
from camexp.data import Listing, list_dataset
from camexp.data.base import Item, decode
from camexp.errors import CamexpError
from camexp.explain.methods import METHODS
from camexp.metrics import METRICS, metric_problems
from camexp.models import LoadedModel, build_model
from camexp.models.classes import head_problems
from camexp.models.filters import NEEDS_LABELS

MAX_NAMED = 5  # problems of one kind named one by one; the rest are counted
QUICK_SAMPLE = 100  # images decoded by `camexp check --quick`
T = TypeVar("T")


def label_problems(cfg: ExperimentConfig, items: list[Item]) -> list[str]:
    """What the config needs of the labels that the data set lacks (target: true and relperf need a single
    true label for every image, dataset.min_true_prob for some; the pointing games need boxes)."""
    boxed = [m for m in cfg.metrics if METRICS.get(m).needs_boxes]
    problems = (
        [
            f"{cfg.dataset.root}: metric(s) {boxed} need ground-truth boxes, but no {cfg.dataset.kind} image has "
            "any (use kind: voc, or imagenet_val with LOC_val_solution.csv)"
        ]
        if boxed and not any(it.boxes for it in items)
        else []
    )
    needs = [f"metric {m}" for m in cfg.metrics if METRICS.get(m).needs_labels] + (
        ["target: true"] if cfg.target == "true" else []
    )
    if cfg.dataset.min_true_prob is not None and not any(it.label >= 0 for it in items):
        problems.append(
            f"{cfg.dataset.root}: {NEEDS_LABELS}, and no {cfg.dataset.kind} image has one (remove "
            "dataset.min_true_prob, or give dataset.labels)"
        )
    unlabelled = sum(1 for it in items if it.label < 0)
    if not needs or not unlabelled:
        return problems
    return problems + [
        f"{cfg.dataset.root}: {' and '.join(needs)} need(s) a true label for every image (a single "
        f"true label per image), but {unlabelled} {cfg.dataset.kind} image(s) have none (give "
        "dataset.labels, or use target: predicted)"
    ]


@dataclass
class CheckReport:
    """What `check_experiment` found; `errors` empty means the run can start."""

    name: str
    dataset_kind: str
    counts: dict[str, int] = field(default_factory=dict)
    listed: int | None = None
    decoded: int = 0
    dataset_classes: int | None = None
    model_classes: int | None = None
    layer: str | None = None
    model_rows: list[tuple[str, str]] = field(default_factory=list)  # what the analyses' checks found of the model
    images_with_boxes: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def check_experiment(cfg: ExperimentConfig, *, quick: bool = False, progress: bool = False) -> CheckReport:
    """Check the data set and the model of `cfg` without running any explanation; `quick` decodes a sample
    of the images instead of all."""
    report = CheckReport(name=cfg.name, dataset_kind=cfg.dataset.kind)
    listing = _check_dataset(cfg, report, quick, progress)
    loaded = _check_model(cfg, report)
    if listing is not None and loaded is not None:
        _check_fit(cfg, listing, loaded, report)
    return report


def _attempt(step: Callable[[], T], report: CheckReport) -> T | None:
    """`step()`, or None with its user-facing error recorded, so one check's failure does not hide the others."""
    try:
        return step()
    except CamexpError as e:
        report.errors.append(str(e))
        return None


def _check_dataset(cfg: ExperimentConfig, report: CheckReport, quick: bool, progress: bool) -> Listing | None:
    listing = _attempt(lambda: list_dataset(cfg.dataset), report)
    if listing is None:
        return None
    items = listing.items
    report.provenance = listing.provenance
    report.counts = {cfg.dataset.split or listing.provenance.get("split") or "all": len(items)}
    report.listed = listing.provenance["listed"]
    report.dataset_classes = len(listing.class_names) if listing.class_names else None
    report.images_with_boxes = sum(1 for it in items if it.boxes)
    if not items:
        report.errors.append(f"{cfg.dataset.root}: the subset/limit selects no images")
    _check_images(items, report, quick, progress)
    if skipped := listing.provenance.get("skipped_boxes"):
        report.warnings.append(f"{len(skipped)} malformed box(es) skipped (dataset.bad_boxes: skip), e.g. {skipped[0]}")
    if unmatched := listing.provenance.get("labels_without_image"):
        report.warnings.append(
            f"{listing.provenance['annotations']}: {unmatched} labelled images are not in the "
            "image folder (expected for a subset of val)"
        )
    if listing.multilabel and (empty := sum(1 for it in items if not it.labels)):
        report.warnings.append(f"{empty} images have no (non-difficult) object label")
    report.errors += label_problems(cfg, items)
    return listing


def _check_images(items: list[Item], report: CheckReport, quick: bool, progress: bool) -> None:
    """Decode every image as the run will (a truncated JPEG passes a header read but not this), or with
    `quick` an evenly spread sample of at most QUICK_SAMPLE; the sizes must match what the boxes were
    checked against (camexp/data/boxes.py, applied while listing)."""
    chosen = items[:: max(1, -(-len(items) // QUICK_SAMPLE))] if quick else items
    problems: list[str] = []
    for it in tqdm(chosen, desc="decoding images", unit="img", disable=not progress, leave=False):
        try:
            decode(it)
        except CamexpError as e:
            problems.append(str(e))
    report.decoded = len(chosen)
    report.errors += problems[:MAX_NAMED]
    if len(problems) > MAX_NAMED:
        report.errors.append(f"... and {len(problems) - MAX_NAMED} more like these")


def _check_model(cfg: ExperimentConfig, report: CheckReport) -> LoadedModel | None:
    loaded = _attempt(lambda: build_model(cfg.model), report)
    if loaded is None:
        return None
    report.model_classes, report.layer = loaded.num_classes, loaded.layer_name
    for check in filter(None, (ANALYSES.get(name).check for name in cfg.analyses)):
        report.model_rows += _attempt(partial(check, cfg, loaded), report) or []
    report.errors += [why for _, m, _ in cfg.method_specs() if (why := METHODS.get(m).unavailable(loaded))]
    return loaded


def _check_fit(cfg: ExperimentConfig, listing: Listing, loaded: LoadedModel, report: CheckReport) -> None:
    """The model's head must predict the data set's classes; the metrics' settings must fit its input."""
    report.errors += head_problems(cfg, listing.items, listing.class_names, loaded)
    report.errors += metric_problems(cfg, loaded.spec.size)
    if listing.multilabel and cfg.confidence == "softmax":
        report.warnings.append("multi-label data set with confidence: softmax; the papers' VOC setting is sigmoid")


def _images_row(report: CheckReport) -> str:
    if report.listed is None:
        return "- (the data set could not be listed: see the errors)"
    selected = sum(report.counts.values())
    counts = ", ".join(f"{split}: {n}" for split, n in report.counts.items())
    scope = "all" if report.decoded == selected else "a --quick sample"
    return f"{counts} of {report.listed} listed; {report.decoded} decoded ({scope})"


def render(report: CheckReport, console: Console | None = None) -> None:
    """Print the report as a short table, then its errors and warnings."""
    console = console or Console()
    table = Table(title=f"check: {report.name}", show_header=False)
    layout = report.provenance.get("layout")
    rows = [
        ("data set", report.dataset_kind + (f" ({layout})" if layout else "")),
        ("images", _images_row(report)),
        ("images with boxes", str(report.images_with_boxes)),
        ("classes (data / model)", f"{report.dataset_classes or '-'} / {report.model_classes or '-'}"),
        ("layer", report.layer or "-"),
        *report.model_rows,
        ("status", "[green]ok[/]" if report.ok else f"[red]{len(report.errors)} error(s)[/]"),
    ]
    for key, value in rows:
        table.add_row(key, value if key == "status" else Text(value))
    console.print(table)
    for e in report.errors:
        console.print(f"[red]error:[/] {escape(e)}", markup=True, highlight=False)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", markup=True, highlight=False)
