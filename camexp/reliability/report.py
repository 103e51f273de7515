"""`camexp report reliability RESULTS`: the reliability measures (camexp/reliability/measures.py) of every
run below RESULTS, and of all runs pooled, from their records only, as Markdown, one long CSV and figures.

A run's metrics are its per-image metrics with a known direction, exactly those that get an interval in its
summary (`per_image_frames`): record metrics with per-image values (avg_drop, increase, best_share), the
per-batch metrics' mean-over-images rows (insertion, deletion, ROAD, energy pointing, sparseness,
complexity, ...) and analyses' per-image values (mLoc). Across runs the runs' images are pooled (each keeps
its run), over the methods and metrics every run has.

The floors (methods registered with `floor`: random, center) never look at the model, so they sit at the ends
of most rankings and alone make the images agree: every measure is taken over the real methods, and again with
the floors, shown apart. Metrics whose per-image values are the same numbers (MPRT's Spearman and |Spearman|
for maps without a negative value) are counted once, under the first, and the report says which were merged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from camexp.config import StatsConfig
from camexp.errors import CamexpError
from camexp.explain.methods import METHODS
from camexp.metrics.base import CRITERIA
from camexp.provenance import mixed_note
from camexp.reliability.measures import Estimate, Reliability, orient, reliability
from camexp.report.markdown import markdown_table, markdown_text
from camexp.report.runs import find_runs, read_runs
from camexp.report.tables import open_run_config
from camexp.report.uncertainty import cell, extra_values, per_image_frames, row_of, stats_settings
from camexp.results import records_view
from camexp.savefig import new_figure

POOLED = "all runs pooled"
COLUMNS = ["run", "quantity", "subject", "other", "value", "lo", "hi", "n"]
WITH_FLOORS = "_with_floors"  # the suffix of reliability.csv's quantities measured with the floors
SAME_ATOL = 1e-9  # two metrics whose oriented per-image values agree to this are the same numbers
OUTSIDE = "†"  # marks a cell whose value lies outside its own percentile interval


@dataclass
class Table:
    """One run's per-image values: metric key -> frame (image ids x methods), its interval settings, and what
    an incomplete run lacks (None: complete)."""

    name: str
    values: dict[str, pd.DataFrame]
    methods: list[str]
    stats: StatsConfig
    status: str | None = None
    notes: list[str] = field(default_factory=list)  # e.g. that the run's numbers come from mixed software
    floors: list[str] = field(default_factory=list)  # the methods among `methods` that are floors


def floor_methods(specs: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """The record names of the floors among a config's (record name, registered method, params); a plug-in
    that cannot be imported here counts as a real method."""
    out = []
    for name, method, _ in specs:
        try:
            if METHODS.get(method).floor:
                out.append(name)
        except CamexpError:
            continue
    return out


def rankable(wides: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The per-image metrics whose registered row says which way is better (the others cannot rank)."""
    return {k: v for k, v in wides.items() if (row := row_of(k)) is not None and row.lower_is_better is not None}


def run_table(run_dir: Path, stats: dict[str, Any] | None = None) -> Table:
    """A run's rankable per-image values from its folder (records, per_image_metrics.csv, analyses)."""
    run, cfg = open_run_config(run_dir)
    methods = cfg.method_names
    view = records_view(run.records, methods)
    wides, _ = per_image_frames(view, cfg.metrics, extra_values(run_dir, run.records, methods, cfg.analyses))
    settings = stats_settings(run.config.get("stats"), **(stats or {}))
    notes = [note] if (note := mixed_note(run.meta)) else []
    return Table(cfg.name, rankable(wides), methods, settings, run.status, notes, floor_methods(cfg.method_specs()))


def pooled(tables: list[Table], stats: dict[str, Any] | None = None) -> Table:
    """The runs' images together (ids prefixed by their run), over the methods and metrics every run has."""
    methods = [m for m in tables[0].methods if all(m in t.methods for t in tables)]
    keys = [k for k in tables[0].values if all(k in t.values for t in tables)]
    values = {
        k: pd.concat([t.values[k][methods].rename(index=lambda i, t=t: f"{t.name}/{i}") for t in tables]) for k in keys
    }
    floors = [m for m in methods if any(m in t.floors for t in tables)]
    return Table(POOLED, values, methods, stats_settings(None, **(stats or {})), floors=floors)


@dataclass
class Measured:
    """A table's measures: `rel` over its real methods (over every method when fewer than two are real),
    `with_floors` over every method (None: no floor among them, or `rel` has them already); `merged`: metric
    key -> the key with the same per-image values it is counted under."""

    rel: Reliability
    with_floors: Reliability | None
    merged: dict[str, str]
    floors: list[str]


def same_values(x: np.ndarray, keys: list[str]) -> dict[str, str]:
    """(N, K, M) oriented values -> key -> the first earlier key whose values are the same numbers (to
    SAME_ATOL, NaN where NaN), for every key that repeats an earlier one."""
    merged: dict[str, str] = {}
    for j, key in enumerate(keys):
        for i in range(j):
            if keys[i] not in merged and np.allclose(x[:, i], x[:, j], rtol=0.0, atol=SAME_ATOL, equal_nan=True):
                merged[key] = keys[i]
                break
    return merged


def measure(table: Table) -> Measured:
    """Every measure of `table`: its metrics (grouped by criterion, each distinct series of numbers once)
    aligned on the union of their images, oriented, bootstrapped over the real methods and with the floors."""
    order: dict[str | None, int] = {c: i for i, c in enumerate(CRITERIA)}
    keys = sorted(table.values, key=lambda k: order.get(getattr(row_of(k), "criterion", None), len(order)))
    if len(table.methods) < 2 or not keys:
        raise CamexpError(
            f"{table.name}: reliability needs two methods and a per-image metric with a direction "
            f"(has {len(table.methods)} method(s), metrics {keys or 'none'})"
        )
    images = sorted(set().union(*(v.index for v in table.values.values())))
    x = np.stack([table.values[k].reindex(index=images, columns=table.methods).to_numpy(np.float64) for k in keys], 1)
    rows = [row_of(k) for k in keys]
    x = orient(x, [bool(r.lower_is_better) for r in rows if r is not None])
    merged = same_values(x, keys)
    kept = [j for j, k in enumerate(keys) if k not in merged]
    criteria = [r.criterion for j, r in enumerate(rows) if j in kept and r is not None]
    s = table.stats

    def over(methods: list[str]) -> Reliability:
        cols = [table.methods.index(m) for m in methods]
        sub = x[:, kept][:, :, cols]
        return reliability(sub, [keys[j] for j in kept], methods, criteria, s.bootstrap, s.level, s.seed)

    real = [m for m in table.methods if m not in table.floors]
    if len(real) < 2 or len(real) == len(table.methods):
        return Measured(over(table.methods), None, merged, [])
    return Measured(over(real), over(table.methods), merged, [m for m in table.methods if m in table.floors])


# --- output --------------------------------------------------------------------------------------------------


def _outside(e: Estimate) -> np.ndarray:
    """Where the value lies outside its own percentile interval (finite ones only): a statistic that
    resampling biases (σ̂, α, a rank) can, and no rounding of the bounds may hide it."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(e.value) & np.isfinite(e.lo) & np.isfinite(e.hi) & ((e.value < e.lo) | (e.value > e.hi))


def _cells(e: Estimate, index: list[str], columns: list[str] | None = None, digits: int = 2) -> pd.DataFrame:
    """An estimate (1-D over `index`, or 2-D index x columns) as 'value [lo, hi]' text (`cell`: bounds rounded
    outward, so a value inside its interval is printed inside it), marked OUTSIDE where `_outside`."""
    text = np.vectorize(lambda v, lo, hi, out: cell(v, lo, hi, digits) + OUTSIDE * out, otypes=[str])(
        e.value, e.lo, e.hi, _outside(e)
    )
    return pd.DataFrame(text, index=index) if columns is None else pd.DataFrame(text, index=index, columns=columns)


def rank_table(rel: Reliability, by: str) -> pd.DataFrame:
    """Methods x (each metric's rank, each criterion's mean rank, σ̂) for ranks by `by` (mean or median)."""
    rank, crit, sigma = (
        (rel.rank_mean, rel.criterion_mean, rel.sigma_mean)
        if by == "mean"
        else (rel.rank_median, rel.criterion_median, rel.sigma_median)
    )
    out = _cells(Estimate(rank.value.T, rank.lo.T, rank.hi.T), rel.methods, rel.metrics, 1)
    for c, e in crit.items():
        out[f"mean rank: {c}"] = _cells(e, rel.methods, digits=2)[0]
    out["σ̂ across metrics"] = _cells(sigma, rel.methods, digits=2)[0]
    out.index.name = "method"
    return out


def metric_table(rel: Reliability) -> pd.DataFrame:
    """Per metric: what it is, its criterion and direction, and Krippendorff's α."""
    rows = [row_of(k) for k in rel.metrics]
    out = pd.DataFrame(
        {
            "title": [r.title if r is not None else k for r, k in zip(rows, rel.metrics)],
            "criterion": [c or "—" for c in rel.criteria],
            "better": ["lower" if r is not None and r.lower_is_better else "higher" for r in rows],
            "images": rel.images,
            "Krippendorff's α (ordinal)": _cells(rel.alpha, rel.metrics, digits=3)[0].to_numpy(),
        },
        index=rel.metrics,
    )
    out.index.name = "metric"
    return out


def frame(rel: Reliability, run: str, suffix: str = "") -> pd.DataFrame:
    """Every number of `rel` as long rows (COLUMNS): quantity (+ `suffix`), subject (metric or criterion),
    other (method or second metric), value, lo, hi, n (images: with a value of the metric, where τ is defined,
    or all)."""
    rows: list[tuple[Any, ...]] = []

    def add(quantity: str, subjects: list[str], others: list[str] | None, e: Estimate, n: Any = rel.n) -> None:
        counts = np.broadcast_to(np.asarray(n), e.value.shape)
        if others is None:
            rows.extend((run, quantity, s, "", e.value[i], e.lo[i], e.hi[i], counts[i]) for i, s in enumerate(subjects))
            return
        for i, s in enumerate(subjects):
            rows.extend(
                (run, quantity, s, o, e.value[i, j], e.lo[i, j], e.hi[i, j], counts[i, j]) for j, o in enumerate(others)
            )

    for by, rank, crit, sigma in (
        ("mean", rel.rank_mean, rel.criterion_mean, rel.sigma_mean),
        ("median", rel.rank_median, rel.criterion_median, rel.sigma_median),
    ):
        add(f"rank_by_{by}{suffix}", rel.metrics, rel.methods, rank, rel.images[:, None])
        for c, e in crit.items():
            add(f"criterion_rank_by_{by}{suffix}", [c], rel.methods, Estimate(e.value[None], e.lo[None], e.hi[None]))
        sigma_rows = Estimate(sigma.value[None], sigma.lo[None], sigma.hi[None])
        add(f"sigma_by_{by}{suffix}", ["all metrics"], rel.methods, sigma_rows)
    add(f"kendall_tau{suffix}", rel.metrics, rel.metrics, rel.tau, rel.tau_images)
    add(f"krippendorff_alpha_ordinal{suffix}", rel.metrics, None, rel.alpha, rel.images)
    return pd.DataFrame(rows, columns=COLUMNS)


def frames(measured: Measured, run: str) -> pd.DataFrame:
    """`frame` of the real methods, then (quantities suffixed WITH_FLOORS) of every method, and one row
    `same_values_as` (subject: a metric counted once, other: the metric it is counted under) per merge."""
    parts = [frame(measured.rel, run)]
    if measured.with_floors is not None:
        parts.append(frame(measured.with_floors, run, WITH_FLOORS))
    merges = [(run, "same_values_as", k, v, np.nan, np.nan, np.nan, np.nan) for k, v in measured.merged.items()]
    if merges:
        parts.append(pd.DataFrame(merges, columns=COLUMNS))
    return pd.concat(parts, ignore_index=True)


def draw_tau(rel: Reliability, title: str) -> Figure:
    """The metric x metric matrix of mean per-image Kendall τ as a heatmap (−1 to 1), values written in."""
    k = len(rel.metrics)
    fig = new_figure(1.0 + 0.6 * k, 0.8 + 0.55 * k)
    ax = fig.add_subplot()
    im = ax.imshow(rel.tau.value, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(k), rel.metrics, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), rel.metrics, fontsize=8)
    for i in range(k):
        for j in range(k):
            v = rel.tau.value[i, j]
            ax.text(j, i, "—" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="Kendall τ (mean over images)", shrink=0.8)
    ax.set_title(title, fontsize=9)
    return fig


def draw_ranks(rel: Reliability, title: str) -> Figure:
    """Per method, its rank (by mean) under each metric (markers by criterion) and the mean rank ± σ̂."""
    m = len(rel.methods)
    fig = new_figure(1.5 + 0.7 * m, 3.6)
    ax = fig.add_subplot()
    markers: dict[str | None, str] = {**dict(zip(CRITERIA, "os^DvP<>h*", strict=False)), None: "x"}
    offsets = np.linspace(-0.25, 0.25, len(rel.metrics)) if len(rel.metrics) > 1 else np.zeros(1)
    for k, (metric, criterion) in enumerate(zip(rel.metrics, rel.criteria)):
        ax.scatter(
            np.arange(m) + offsets[k], rel.rank_mean.value[k], marker=markers[criterion], s=18, label=metric, alpha=0.8
        )
    mean = np.nanmean(rel.rank_mean.value, axis=0)
    ax.errorbar(
        np.arange(m), mean, yerr=rel.sigma_mean.value, fmt="_", color="black", capsize=4, ms=14, label="mean ± σ̂"
    )
    ax.set_xticks(range(m), rel.methods, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("rank by mean (1 = best)")
    ax.set_ylim(m + 0.5, 0.5)
    ax.legend(fontsize=6, ncols=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=9)
    return fig


@dataclass
class ReliabilityReport:
    markdown: str
    frame: pd.DataFrame
    figures: dict[str, Figure] = field(default_factory=dict)  # file stem -> figure
    warnings: list[str] = field(default_factory=list)


def floors_part(measured: Measured, table: Table) -> list[str]:
    """The Markdown of the measures with the floors, apart; or why the floors are among the methods."""
    floors = ", ".join(table.floors)
    if measured.with_floors is None:
        if not table.floors:
            return []
        return [f"Fewer than two methods are not floors: the floors ({floors}) are measured with them.", ""]
    rel = measured.with_floors
    alpha = pd.DataFrame({"Krippendorff's α (ordinal)": _cells(rel.alpha, rel.metrics, digits=3)[0]})
    alpha.index.name = "metric"
    sigma = pd.DataFrame({"σ̂ across metrics": _cells(rel.sigma_mean, rel.methods, digits=2)[0]})
    sigma.index.name = "method"
    return [
        f"### With the floors ({markdown_text(floors)}), apart: α per metric and σ̂ (ranks by mean) over all "
        f"{len(rel.methods)} methods",
        "",
        markdown_table(alpha),
        "",
        markdown_table(sigma),
        "",
    ]


def section(measured: Measured, table: Table, stem: str) -> list[str]:
    """One run's (or the pool's) Markdown: the rank tables, the metric table with α, τ, the floors apart,
    the merged metrics, the figures."""
    rel, s = measured.rel, table.stats
    tau = _cells(rel.tau, rel.metrics, rel.metrics, 2)
    tau.index.name = "τ"
    real = "" if measured.with_floors is None else f" (the floors {', '.join(measured.floors)} apart, below)"
    merged = [f"{k} (the same values as {v}, to {SAME_ATOL:g})" for k, v in measured.merged.items()]
    estimates = [rel.rank_mean, rel.rank_median, rel.sigma_mean, rel.sigma_median, rel.alpha, rel.tau]
    estimates += [*rel.criterion_mean.values(), *rel.criterion_median.values()]
    marked = any(_outside(e).any() for e in estimates)
    return [
        f"## {markdown_text(table.name)}",
        "",
        *([f"**{markdown_text(table.status)}**", ""] if table.status else []),
        *(markdown_text(note) for note in table.notes),
        *([""] if table.notes else []),
        f"{rel.n} images, {len(rel.methods)} methods{markdown_text(real)}, {len(rel.metrics)} metrics. Cells: "
        f"value [{100 * s.level:g} % percentile bootstrap interval over images: {s.bootstrap} resamples, seed "
        f"{s.seed}; bounds rounded outward].",
        "",
        *([f"Counted once: {markdown_text('; '.join(merged))}.", ""] if merged else []),
        *(
            [f"{OUTSIDE}: the value lies outside its own interval (resampling biases the statistic).", ""]
            if marked
            else []
        ),
        "### Ranks by mean over images (1 = best; ties share their mean rank)",
        "",
        markdown_table(rank_table(rel, "mean")),
        "",
        "### Ranks by median over images (LATEC)",
        "",
        markdown_table(rank_table(rel, "median")),
        "",
        "### Metrics: criterion, direction and Krippendorff's α (images as raters, methods as units)",
        "",
        markdown_table(metric_table(rel)),
        "",
        "### Kendall τ between metrics (per-image τ-b of the methods' rankings, mean over images)",
        "",
        markdown_table(tau),
        "",
        *floors_part(measured, table),
        f"![Kendall τ between metrics]({stem}_tau.png) ![Ranks per method]({stem}_ranks.png)",
        "",
    ]


def reliability_report(results_dir: Path, stats: dict[str, Any] | None = None) -> ReliabilityReport:
    """The reliability of every run below `results_dir` (and of all of them pooled, with two or more), with its
    figures (written with the tables by camexp/report/tables.py's `write_files`); a folder that cannot be
    reported is skipped with a warning."""
    read, warnings = read_runs(find_runs(results_dir), lambda d: run_table(d, stats))
    tables = [t for _, t in read]
    if len(tables) > 1:
        tables.append(pooled(tables, stats))
    parts = [f"# camexp reliability: {markdown_text(str(results_dir))}", ""]
    out: list[pd.DataFrame] = []
    figures = {}
    for t in tables:
        try:
            measured = measure(t)
        except CamexpError as e:
            warnings.append(str(e))
            continue
        rel = measured.rel
        stem = "reliability_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in t.name)
        figures[f"{stem}_tau"], figures[f"{stem}_ranks"] = draw_tau(rel, t.name), draw_ranks(rel, t.name)
        parts += section(measured, t, stem)
        out.append(frames(measured, t.name))
    if not out:
        raise CamexpError(f"{results_dir}: no run to measure ({'; '.join(warnings) or 'no run folders'})")
    if warnings:
        parts += ["## Not reported", "", *(f"- {markdown_text(w)}" for w in warnings), ""]
    return ReliabilityReport("\n".join(parts), pd.concat(out, ignore_index=True), figures, warnings)
