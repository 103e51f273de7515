"""The metric contract: record metrics (views of per_image.csv) and per-batch metrics (values per image
computed inside the batch loop), one registry for both.

An entry owns its whole story: the main-table rows it produces (`Row`: key, label, which way is better, scale,
whether the summary is a mean over images and so gets an interval and a leaderboard rank), what it needs
(labels, boxes), its settings (a pydantic model in the metric's own module, read under one config key and
fingerprinted from the entry), how its per-image values are produced and how they are summarised. The
reports read the entries; nothing else names a metric.

Every metric is one `MetricEntry`; its `source` says where its per-image values come from. A record metric
(`source="records"`) is a function `(view, params) -> MetricResult` registered with `@metric(name, rows=...)`
(or built with `Metric(...)`); it is recomputed from the records at any time. A per-batch metric
(`source="batch"`, `@batch_metric(name, rows=...)` or `BatchMetric(...)`)
needs more than the records: more forwards per image (insertion/deletion, ROAD, kept-fraction drop) or boxes
(pointing games). It computes per-image values on the device from the batch context the runner hands every
per-batch job (`camexp.metrics.batch.BatchContext`; the job contract is camexp/jobs.py); the runner appends
them to per_image_metrics.csv in long form, and its `summarize` (by default: the mean over images of each of
its rows) turns those rows into summary rows, so that `camexp report table` recomputes them from the file. A plug-in is
either kind, named by import path (`metrics: [mypkg.metrics:my_metric]`) or entry point (group `camexp.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ValidationError

from camexp.config import FINGERPRINT_IF_SET, SETTINGS_KEYS
from camexp.errors import CamexpError
from camexp.registry import Registry, call_problem

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig
    from camexp.metrics.batch import BatchContext


@dataclass
class RecordsView:
    """Per-image records in wide form: one row per image, one column per method."""

    methods: list[str]
    image_ids: list[str]
    y: torch.Tensor  # (N,) target confidence on the full image
    o: torch.Tensor  # (N, M) target confidence on each method's explanation image
    p_true: torch.Tensor  # (N,) true-class confidence on the full image (NaN: no label)


@dataclass
class MetricResult:
    """`rows`: label -> method -> value, for the main table (metrics as rows, methods as columns);
    `tables`: extra titled tables; `notes`: lines printed under the tables."""

    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def merge(self, other: MetricResult) -> None:
        """Add `other`'s rows, tables and notes after ours."""
        self.rows.update(other.rows)
        self.tables.update(other.tables)
        self.notes += other.notes


# What a row measures, as LATEC and Quantus group metrics (camexp report reliability ranks methods per
# criterion); randomisation: Quantus' name for the sanity checks (the mprt and random_logit analyses);
# robustness: how little a map changes when the input barely does; composite: a score combining criteria (ADCC).
Criterion = Literal["faithfulness", "localization", "complexity", "randomisation", "robustness", "composite"]
CRITERIA: tuple[Criterion, ...] = get_args(Criterion)


@dataclass(frozen=True)
class Row:
    """One number per method that a metric puts in the main table, described once.

    `key`: its name in summary_long.csv and per_image_metrics.csv; `title`: the table's label without the
    direction, which `label` adds; `lower_is_better`: which way is better (None: no direction, never marked or
    ranked); `scale`: per-image value x scale = the summary's unit (100 for a percentage of 0/1 values);
    `image_mean`: the summary row is the mean over images of the per-image values, so it gets a bootstrap
    interval and a leaderboard rank; `null`: a paired comparison's value meaning "no difference" (50 for win
    %); `prefix`: the row stands for every key that starts with `key` (mLoc δ=0, δ=0.5, ...); `per_image`: a
    record metric's per-image values (N, M) from the records' Y (N,) and O (N, M); `criterion`: what the row
    measures (`Criterion`; None: a plug-in's row that declares none, ranked alone)."""

    key: str
    title: str
    lower_is_better: bool | None = None
    scale: float = 1.0
    image_mean: bool = True
    null: float = 0.0
    prefix: bool = False
    show_direction: bool = True
    criterion: Criterion | None = None
    per_image: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        """The main table's row label: the title with the direction, where the row shows one."""
        if not self.show_direction or self.lower_is_better is None:
            return self.title
        return f"{self.title} ({'lower' if self.lower_is_better else 'higher'} is better)"

    def matches(self, key: str) -> bool:
        return key.startswith(self.key) if self.prefix else key == self.key


@dataclass(frozen=True)
class MetricParams:
    relperf_min_true_prob: float = 0.0


MetricFn = Callable[[RecordsView, MetricParams], MetricResult]


@dataclass(frozen=True)
class PairColumns:
    """How summary.md's pairwise table shows a row of pairwise.csv: its value with `digits` decimals in the
    column `column` (formatted with the row's `metric` and `interval`), and with `sign_test` the exact sign
    test's p-value and untied images in a column of their own. The default: a paired difference of means."""

    column: str = "Δ {metric} (A − B)"
    digits: int = 2
    sign_test: bool = False


@dataclass(frozen=True)
class Pairwise:
    """A record metric's statistic per pair of methods, read from the confidences O (images x methods, a frame).

    `values(o)`: per image and pair, the values whose resample means give its bootstrap interval;
    `table(o, n_boot, level, seed, boot)`: its rows of pairwise.csv from O and those resample means (the
    `metric` column is the metric's name, filled in by the report);
    `select(view, params)`: (N,) bool, the images it uses (None: all); `per_method`: with two methods, each
    method's value against the other (and 100 minus the pair's interval) is also a per-method row; `shown`:
    how summary.md's pairwise table shows its rows (those whose `metric` is the metric's name)."""

    values: Callable[[pd.DataFrame], pd.DataFrame]
    table: Callable[[pd.DataFrame, int, float, int, Any], pd.DataFrame]
    select: Callable[[RecordsView, MetricParams], torch.Tensor] | None = None
    per_method: bool = False
    shown: PairColumns = PairColumns()


@dataclass(frozen=True)
class PerImage:
    """Values of one per-batch metric for one method on some images of a batch, still on the device.

    `pos`: (N,) positions among the batch's good images; `cls`: (N,) the class each value is about; `value`:
    (N,) float64, NaN where the image was seen but has no value (no box of its class, not selected), so that
    every processed image leaves a row and the skipped ones are counted from the file; `curve`: optionally
    (N, T) the whole curve, written only with `perturbation.curves`."""

    method: str
    metric: str
    pos: torch.Tensor
    cls: torch.Tensor
    value: torch.Tensor
    curve: torch.Tensor | None = None


# Whether a per-batch job may be added to a run that has recorded images (camexp/resume.py): `recompute` its
# images lacking the job's rows are explained again; `refuse` it would cover only the images explained from
# now on, so the resumed run is refused; `any` it reads the records alone and covers every image.
Resume = Literal["recompute", "refuse", "any"]
Note = Callable[["ExperimentConfig"], str]
# (this metric's rows of the run's final images and methods, methods in run order, the run's config) -> summary
Summarize = Callable[[pd.DataFrame, list[str], "ExperimentConfig"], MetricResult]
# (the metric's validated settings, the model's input size (H, W)) -> a one-line problem, or None
Check = Callable[[Any, tuple[int, int]], "str | None"]


@dataclass(frozen=True)
class Curve:
    """How a per-batch metric's per-image curves (`PerImage.curve`, written with `perturbation.curves`) are
    drawn: `x(cfg, points)`, the fraction of pixels at each of a curve's points; `axis`, the x axis' label."""

    x: Callable[[ExperimentConfig, int], np.ndarray]
    axis: str


# insertion / deletion: curves sampled at changed fractions s / S, s = 0..S
CHANGED = Curve(lambda cfg, points: np.linspace(0.0, 1.0, points), "fraction of pixels changed")


# Where a metric's per-image values come from: `records` recomputes them from per_image.csv at any time;
# `batch` computes them per batch during the run (more forwards, boxes) into per_image_metrics.csv.
Source = Literal["records", "batch"]
# the costs of a metric that reads the records (per_image.csv) or the run's maps alone: nothing beyond the run
RECORDS_COST = "none (the records)"
MAPS_COST = "none (the maps)"
# batch: (the batch context) -> its values per method on the batch's images
BatchFn = Callable[["BatchContext"], list[PerImage]]


@dataclass(frozen=True)
class MetricEntry:
    """A registered metric, whichever its source: one shape, so that callers branch on `source` alone.

    `compute`: with `source` `records` a `MetricFn` (view, params) -> MetricResult, its summary recomputed from
    the records at any time; with `batch` a `BatchFn` (batch) -> [PerImage] per batch, summarised from the
    file by `summary_of`. `rows`: the main-table rows it produces (see `Row`; a per-batch metric's PerImage
    values carry a row's key as their `metric`, default: one row named after the metric); an image counts as
    done for a per-batch metric once a value of any of them exists. `needs_labels` / `needs_boxes`: the data
    set must have true labels / boxes. `settings`: the pydantic model of its settings, read from the config
    under `settings_key` (default: the metric's name; camexp's own metrics read the top-level keys
    perturbation, keep, pointing, road); `check(settings, input size)` finds a setting that cannot work with
    the model's input before the first batch. `summary`: one line on what it is. `summarize(rows, methods,
    cfg)`: a per-batch metric's summary, by default the mean over images of every `image_mean` row (times its
    scale), with a note on the images and `note(cfg)` (the settings). `pairwise`: the statistic a record
    metric adds to pairwise.csv (see `Pairwise`); `table_files`: (table title, file stem) of its extra tables
    written as CSV to the run folder. `resume`: added to a recorded run, what a per-batch metric does (see
    `Resume`); `model_calls`: it calls the model beyond the run's own forward (False: it reads the maps
    alone); `compares`: it compares methods with each other, so a run needs at least two; `curve`: how its
    per-image curves are drawn (see `Curve`); `cost`: what it costs per image beyond the run's own forward, in
    words (forwards, backwards, re-explanations; `camexp metrics` lists it). The runner runs a per-batch metric
    as a per-batch job (camexp/jobs.py)."""

    name: str
    compute: Callable[..., Any]
    source: Source = "records"
    rows: tuple[Row, ...] = ()
    needs_labels: bool = False
    needs_boxes: bool = False
    settings: type[BaseModel] | None = None
    settings_key: str = ""
    check: Check | None = None
    summary: str = ""
    summarize: Summarize | None = None
    note: Note = field(default=lambda cfg: "", compare=False)
    pairwise: Pairwise | None = None
    table_files: tuple[tuple[str, str], ...] = ()
    resume: Resume = "recompute"
    model_calls: bool = True
    compares: bool = False
    curve: Curve = CHANGED
    cost: str = ""

    @property
    def row_names(self) -> tuple[str, ...]:
        return tuple(r.key for r in self.rows) or (self.name,)

    @property
    def key(self) -> str:
        """The config key its settings are read under."""
        return self.settings_key or self.name

    def summary_of(self, rows: pd.DataFrame, methods: list[str], cfg: ExperimentConfig) -> MetricResult:
        """A per-batch metric's summary rows and notes from its rows of per_image_metrics.csv."""
        if self.summarize is not None:
            return self.summarize(rows, methods, cfg)
        out = MetricResult()
        for row in self.rows:
            if row.image_mean:
                out.merge(mean_rows(row, self.note)(rows[rows["metric"] == row.key], methods, cfg))
        return out


def Metric(name: str, fn: MetricFn, needs_labels: bool = False, rows: tuple[Row, ...] = (), **meta: Any) -> MetricEntry:
    """A record metric's entry: `fn(view, params) -> MetricResult` (see `MetricEntry` for `meta`). It reads the
    records alone, so its cost is none unless it says otherwise."""
    return MetricEntry(name, fn, "records", rows, needs_labels, **{"cost": RECORDS_COST, **meta})


def BatchMetric(name: str, compute: BatchFn, **meta: Any) -> MetricEntry:
    """A per-batch metric's entry: `compute(batch) -> [PerImage]` (see `MetricEntry` for `meta`)."""
    return MetricEntry(name, compute, "batch", **meta)


def _as_metric(name: str, obj: object) -> MetricEntry:
    """A plug-in metric, the signatures of the functions camexp will call checked before the first image."""
    if isinstance(obj, MetricEntry):
        entry = obj
    elif callable(obj):
        entry = Metric(name, obj)
    else:
        raise TypeError(
            "a metric must be a function (RecordsView, MetricParams) -> MetricResult or a camexp "
            f"BatchMetric, not {type(obj).__name__}"
        )
    if entry.source == "records":
        problem = call_problem(entry.compute, "view", "params")
    else:
        summarize = entry.summarize and call_problem(entry.summarize, "rows", "methods", "cfg")
        problem = call_problem(entry.compute, "batch") or summarize or ""
    if problem:
        raise TypeError(problem)
    return entry


METRICS: Registry[MetricEntry] = Registry("metric", _as_metric)


def metric(
    name: str, needs_labels: bool = False, rows: tuple[Row, ...] = (), **meta: Any
) -> Callable[[MetricFn], MetricEntry]:
    """Register a record metric `fn(view, params) -> MetricResult` under `name` (see `MetricEntry` for `meta`)."""

    def register(fn: MetricFn) -> MetricEntry:
        return METRICS.register(name, Metric(name, fn, needs_labels, rows, **meta))

    return register


def batch_metric(name: str, summary: str = "", **meta: Any) -> Callable[[BatchFn], MetricEntry]:
    """Register `compute(batch) -> [PerImage]` as per-batch metric `name` (see `MetricEntry` for `meta`)."""

    def register(fn: BatchFn) -> MetricEntry:
        return METRICS.register(name, BatchMetric(name, fn, summary=summary, **meta))

    return register


def mean_rows(row: Row, note: Note = lambda cfg: "") -> Summarize:
    """A Summarize that averages each method's non-NaN values (times the row's scale) into the row, with a
    note on how many images (and `note(cfg)`: the settings)."""

    def summarize(rows: pd.DataFrame, methods: list[str], cfg: ExperimentConfig) -> MetricResult:
        valid = rows.dropna(subset=["value"])
        means = valid.groupby("method")["value"].mean() * row.scale
        images = valid["index"].nunique()
        return MetricResult(
            rows={row.label: {m: float(means.get(m, float("nan"))) for m in methods}},
            notes=[f"{row.title}: mean over {images} images{note(cfg)}."],
        )

    return summarize


def batch_metrics(names: list[str]) -> list[MetricEntry]:
    """The per-batch metrics among `names`, in order."""
    return [m for m in map(METRICS.get, names) if m.source == "batch"]


def record_metrics(names: list[str]) -> list[MetricEntry]:
    """The record metrics among `names`, in registration order (so that output files do not depend on the
    order of the config's list)."""
    return [entry for name, entry in METRICS.items() if name in names and entry.source == "records"]


def curve_of(key: str) -> Curve:
    """How the curves of per-batch metric row `key` (a curve's `metric` in per_image_curves.csv) are drawn."""
    return next((e.curve for _, e in METRICS.items() if key in e.row_names), CHANGED)


def table_files() -> dict[str, str]:
    """Table title -> file stem, for every registered metric's extra tables written as CSV."""
    return {title: stem for _, entry in METRICS.items() for title, stem in entry.table_files}


def all_rows() -> list[Row]:
    """The rows of every registered metric (built-in and plug-ins loaded so far)."""
    return [r for _, entry in METRICS.items() for r in entry.rows]


# --- settings ------------------------------------------------------------------------------------------------


class SettingsOwner(Protocol):
    """A registry entry that may declare settings: a pydantic model read from the config under `key`."""

    @property
    def name(self) -> str: ...

    @property
    def settings(self) -> type[BaseModel] | None: ...

    @property
    def key(self) -> str: ...


# The registries whose entries declare settings, validated together once per run: the metrics, and the analyses
# (camexp.analyses adds its registry: a later layer, which this module does not import).
SETTINGS_OWNERS: list[Registry[Any]] = [METRICS]


def settings_owners() -> list[SettingsOwner]:
    """Every registered entry (metric or analysis) that declares settings."""
    return [e for registry in SETTINGS_OWNERS for _, e in registry.items() if e.settings is not None]


def settings_model(key: str) -> type[BaseModel] | None:
    """The settings model a registered metric or analysis reads under config key `key`, or None."""
    return next((e.settings for e in settings_owners() if e.key == key), None)


def settings_of(cfg: ExperimentConfig, key: str) -> Any:
    """The validated settings under `key` (defaults filled in); one CamexpError naming the key otherwise."""
    model = settings_model(key)
    if model is None:
        raise CamexpError(f"settings.{key}: no metric or analysis reads settings under {key!r}")
    try:
        return model.model_validate(cfg.metric_settings(key))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        prefix = key if key in SETTINGS_KEYS else f"settings.{key}"
        raise CamexpError(f"{prefix}.{where}: {msg}") from None


def settings_keys(cfg: ExperimentConfig) -> list[str]:
    """The settings keys of a config: the top-level ones read by a metric or analysis registered in this process,
    and every key under `settings:` (each must be a registered metric's or analysis'; `validate_settings` checks).
    A process that never imports camexp.analyses (a metric's own test, the metrics bench) reads no analysis key."""
    return [*(k for k in SETTINGS_KEYS if settings_model(k) is not None), *cfg.settings]


def validate_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """Every settings key of `cfg` and of the registered metrics and analyses, validated once (CamexpError naming
    the first bad key): what the runner hands to every batch (`BatchContext.settings`)."""
    registered = [e.key for e in settings_owners()]
    return {key: settings_of(cfg, key) for key in dict.fromkeys([*settings_keys(cfg), *registered])}


def settings_fingerprint(cfg: ExperimentConfig, owners: Registry[Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every settings key's validated values with the defaults filled in, dumped for the fingerprint (key ->
    values); `owners`: only the keys that registry's entries read. Fields declared with `exclude=True` (what is
    written, not computed: `perturbation.curves`) are left out, and so are fields marked FINGERPRINT_IF_SET while
    at their default."""
    keys = settings_keys(cfg)
    if owners is not None:
        keys = [k for k in keys if any(e.settings is not None and e.key == k for _, e in owners.items())]
    return {key: _fingerprinted(settings_of(cfg, key)) for key in keys}


def _fingerprinted(settings: BaseModel) -> dict[str, Any]:
    dumped = settings.model_dump(mode="json")
    for name, info in type(settings).model_fields.items():
        if info.json_schema_extra == FINGERPRINT_IF_SET and getattr(settings, name) == info.default:
            dumped.pop(name, None)
    return dumped


def metric_problems(cfg: ExperimentConfig, size: tuple[int, int]) -> list[str]:
    """What the listed per-batch metrics' settings cannot do with the model's input size (H, W)."""
    found = (m.check(settings_of(cfg, m.key), size) for m in batch_metrics(cfg.metrics) if m.check is not None)
    return [p for p in found if p]
