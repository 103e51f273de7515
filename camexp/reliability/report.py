"""`camexp report reliability RESULTS`: the reliability measures (camexp/reliability/measures.py) of every
run below RESULTS, and of all runs pooled, from their records only, as Markdown, one long CSV and figures.

A run's metrics are its per-image metrics with a known direction, exactly those that get an interval in its
summary (`per_image_frames`): record metrics with per-image values (avg_drop, increase, best_share), the
per-batch metrics' mean-over-images rows (insertion, deletion, ROAD, energy pointing, sparseness,
complexity, ...) and analyses' per-image values (mLoc). Across runs the runs' images are pooled (each keeps
its run), over the methods and metrics every run has.
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
    return Table(cfg.name, rankable(wides), methods, settings, run.status, notes)


def pooled(tables: list[Table], stats: dict[str, Any] | None = None) -> Table:
    """The runs' images together (ids prefixed by their run), over the methods and metrics every run has."""
    methods = [m for m in tables[0].methods if all(m in t.methods for t in tables)]
    keys = [k for k in tables[0].values if all(k in t.values for t in tables)]
    values = {
        k: pd.concat([t.values[k][methods].rename(index=lambda i, t=t: f"{t.name}/{i}") for t in tables]) for k in keys
    }
    return Table(POOLED, values, methods, stats_settings(None, **(stats or {})))


def measure(table: Table) -> Reliability:
    """Every measure of `table`: its metrics (grouped by criterion) aligned on the union of their images,
    oriented, bootstrapped."""
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
    lower = [bool(r.lower_is_better) for r in rows if r is not None]
    criteria = [r.criterion for r in rows if r is not None]
    s = table.stats
    return reliability(orient(x, lower), keys, table.methods, criteria, s.bootstrap, s.level, s.seed)


# --- output --------------------------------------------------------------------------------------------------


def _cells(e: Estimate, index: list[str], columns: list[str] | None = None, digits: int = 2) -> pd.DataFrame:
    """An estimate (1-D over `index`, or 2-D index x columns) as 'value [lo, hi]' text."""
    text = np.vectorize(lambda v, lo, hi: cell(v, lo, hi, digits), otypes=[str])(e.value, e.lo, e.hi)
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


def frame(rel: Reliability, run: str) -> pd.DataFrame:
    """Every number of `rel` as long rows (COLUMNS): quantity, subject (metric or criterion), other (method or
    second metric), value, lo, hi, n (images: with a value of the metric, where τ is defined, or all)."""
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
        add(f"rank_by_{by}", rel.metrics, rel.methods, rank, rel.images[:, None])
        for c, e in crit.items():
            add(f"criterion_rank_by_{by}", [c], rel.methods, Estimate(e.value[None], e.lo[None], e.hi[None]))
        add(f"sigma_by_{by}", ["all metrics"], rel.methods, Estimate(sigma.value[None], sigma.lo[None], sigma.hi[None]))
    add("kendall_tau", rel.metrics, rel.metrics, rel.tau, rel.tau_images)
    add("krippendorff_alpha_ordinal", rel.metrics, None, rel.alpha, rel.images)
    return pd.DataFrame(rows, columns=COLUMNS)


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


def section(rel: Reliability, table: Table, stem: str) -> list[str]:
    """One run's (or the pool's) Markdown: the rank tables, the metric table with α, τ, the figures."""
    s = table.stats
    tau = _cells(rel.tau, rel.metrics, rel.metrics, 2)
    tau.index.name = "τ"
    return [
        f"## {markdown_text(table.name)}",
        "",
        *([f"**{markdown_text(table.status)}**", ""] if table.status else []),
        *(markdown_text(note) for note in table.notes),
        *([""] if table.notes else []),
        f"{rel.n} images, {len(rel.methods)} methods, {len(rel.metrics)} metrics. Cells: value [{100 * s.level:g} % "
        f"percentile bootstrap interval over images: {s.bootstrap} resamples, seed {s.seed}].",
        "",
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
    frames, figures = [], {}
    for t in tables:
        try:
            rel = measure(t)
        except CamexpError as e:
            warnings.append(str(e))
            continue
        stem = "reliability_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in t.name)
        figures[f"{stem}_tau"], figures[f"{stem}_ranks"] = draw_tau(rel, t.name), draw_ranks(rel, t.name)
        parts += section(rel, t, stem)
        frames.append(frame(rel, t.name))
    if not frames:
        raise CamexpError(f"{results_dir}: no run to measure ({'; '.join(warnings) or 'no run folders'})")
    if warnings:
        parts += ["## Not reported", "", *(f"- {markdown_text(w)}" for w in warnings), ""]
    return ReliabilityReport("\n".join(parts), pd.concat(frames, ignore_index=True), figures, warnings)
