"""Summaries of runs as tables: a run's own summary files, and the report across many runs."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from camexp.analyses import ANALYSIS_RESULTS
from camexp.config import StatsConfig
from camexp.metrics import ROW_LABELS, MetricParams, MetricResult, compute_metrics
from camexp.report.paper import PUBLISHED, PUBLISHED_RELPERF
from camexp.report.uncertainty import RunStats, compute_stats, extra_values, main_cells, pairwise_markdown, \
    stats_settings, with_missing_rows, write_stats
from camexp.results import RECORDS, RUN_JSON, complete_images, read_json, read_records, records_view


@dataclass
class RunSummary:
    """The summary of one run folder: main table (metrics x methods), extra tables and notes."""

    name: str
    paper: str | None
    main: pd.DataFrame
    result: MetricResult
    images: int
    extra_notes: list[str] = field(default_factory=list)
    stats: RunStats | None = None  # intervals and paired comparisons (camexp/report/uncertainty.py)


def summarize(name: str, paper: str | None, records: pd.DataFrame, methods: list[str], metrics: list[str],
              params: MetricParams, run_dir: Path | None = None, analyses: Sequence[str] = (),
              stats: StatsConfig | None = None) -> RunSummary:
    """Compute the metrics from records, and the analyses' numbers from their files in `run_dir` (never
    from a run's memory); with `stats`, every per-image metric's intervals and paired comparisons too."""
    view = records_view(records, methods)
    result = compute_metrics(metrics, view, params)
    for a in analyses:
        if run_dir is not None and a in ANALYSIS_RESULTS:
            result.merge(ANALYSIS_RESULTS[a](run_dir, records, methods))
    main = pd.DataFrame(result.rows).T.reindex(columns=methods)
    main.index.name = "metric"
    run_stats = compute_stats(view, metrics, params, stats, extra_values(run_dir, records, methods, analyses)) \
        if stats else None
    if run_stats is not None:
        main = with_missing_rows(main, run_stats)
    return RunSummary(name, paper, main, result, images=len(view.image_ids), stats=run_stats)


def summarize_run_dir(run_dir: Path, stats: dict[str, Any] | None = None) -> RunSummary:
    """Recompute a finished (or partial: over the images recorded for every method) run's summary from its
    folder; intervals with the `stats:` settings the run recorded, updated by `stats` (None values keep)."""
    meta = read_json(run_dir / RUN_JSON)
    cfg = meta["config"]
    methods = [m if isinstance(m, str) else m["name"] for m in cfg["methods"]]  # a method spec: its record name
    records = read_records(run_dir / RECORDS)
    records = records[records["index"].isin(complete_images(records, methods))]
    return summarize(cfg["name"], cfg.get("paper"), records, methods, cfg["metrics"],
                     MetricParams(relperf_min_true_prob=cfg.get("relperf_min_true_prob", 0.0)),
                     run_dir, cfg.get("analyses", []), stats_settings(cfg.get("stats"), **(stats or {})))


def with_paper(summary: RunSummary) -> pd.DataFrame:
    """Main table with the published value beside each of ours ('ours / paper')."""
    if summary.paper not in PUBLISHED:
        return summary.main
    _, rows = PUBLISHED[summary.paper]
    out = cells(summary)
    for row, per_method in rows.items():
        for method, value in per_method.items():
            if method in out.columns:
                ours = out.at[row, method] if row in out.index else _fmt(float("nan"))
                out.loc[row, method] = f"{ours} / {value:.2f}"
    return out


def cells(summary: RunSummary) -> pd.DataFrame:
    """The main table as text: each number with its interval where the summary has them."""
    return summary.main.map(_fmt) if summary.stats is None else main_cells(summary.main, summary.stats, _fmt)


def relperf_with_paper(summary: RunSummary, table: pd.DataFrame) -> pd.DataFrame:
    if summary.paper not in PUBLISHED_RELPERF or table.empty:
        return table
    _, pub = PUBLISHED_RELPERF[summary.paper]
    out = table.copy()
    for col, i in (("paper R", 0), ("paper mean log R", 1), ("paper std log R", 2)):
        out[col] = [pub.get(pair, (float("nan"),) * 3)[i] for pair in out.index]
    return out


def _fmt(v: object) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def to_markdown(summary: RunSummary, compare_paper: bool = False) -> str:
    """A run's summary as Markdown, in the paper's layout (metrics as rows, methods as columns)."""
    lines = [f"## {summary.name}", "", f"{summary.images} images."]
    if compare_paper and summary.paper in PUBLISHED:
        lines.append(f"Cells: ours / published ({PUBLISHED[summary.paper][0]}).")
    main = with_paper(summary) if compare_paper else cells(summary)
    lines += ["", main.to_markdown(), ""]
    if summary.stats is not None:
        lines += [summary.stats.legend(), ""]
    for title, table in summary.result.tables.items():
        if compare_paper and title.startswith("Relative performance"):
            table = relperf_with_paper(summary, table)
            if summary.paper in PUBLISHED_RELPERF:
                title += f" — beside {PUBLISHED_RELPERF[summary.paper][0]}"
        shown = table.map(lambda v: "—" if pd.isna(v) else f"{v:.3f}" if isinstance(v, float) else v)
        lines += [f"### {title}", "", shown.to_markdown(), ""]
    pairwise = pairwise_markdown(summary.stats) if summary.stats is not None else ""
    if pairwise:
        lines += ["### Paired comparisons (bootstrap intervals over the same images; exact sign test for win %)",
                  "", pairwise, ""]
    lines += [*summary.result.notes, *summary.extra_notes]
    return "\n".join(lines).rstrip() + "\n"


def write_summary(run_dir: Path, summary: RunSummary) -> None:
    """summary.csv (main table) and summary.md (everything) into the run folder."""
    summary.main.to_csv(run_dir / "summary.csv", float_format="%.4f")
    for title, table in summary.result.tables.items():
        slug = "win_matrix" if title.startswith("Win") else "relperf" if title.startswith("Relative") else None
        if slug:
            table.to_csv(run_dir / f"{slug}.csv", float_format="%.6f")
    (run_dir / "summary.md").write_text(to_markdown(summary))
    if summary.stats is not None:
        write_stats(run_dir, summary.stats)


def find_runs(results_dir: Path) -> list[Path]:
    """Every run folder (holding run.json and records) below `results_dir`, sorted."""
    return sorted(p.parent for p in results_dir.rglob(RUN_JSON) if (p.parent / RECORDS).exists())


def report(results_dir: Path, compare_paper: bool = False, stats: dict[str, Any] | None = None
           ) -> tuple[str, pd.DataFrame]:
    """Markdown for every run below `results_dir` and one long CSV-ready frame (run, metric, method, value,
    lo, hi); intervals with each run's recorded `stats:` settings, updated by `stats`."""
    parts, frames = [f"# camexp report: {results_dir}", ""], []
    for run_dir in find_runs(results_dir):
        s = summarize_run_dir(run_dir, stats)
        parts.append(to_markdown(s, compare_paper))
        long = s.main.reset_index().melt(id_vars="metric", var_name="method", value_name="value")
        long.insert(0, "run", s.name)
        long = with_bounds(long, s.stats)
        if compare_paper and s.paper in PUBLISHED:
            pub = PUBLISHED[s.paper][1]
            long["paper"] = [pub.get(r, {}).get(m, float("nan")) for r, m in zip(long["metric"], long["method"])]
        frames.append(long)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "metric", "method", "value"])
    return "\n".join(parts), table


def with_bounds(long: pd.DataFrame, stats: RunStats | None) -> pd.DataFrame:
    """Add each row's interval (lo, hi) to a long (metric label, method, value) frame."""
    if stats is None:
        return long.assign(lo=float("nan"), hi=float("nan"))
    keyed = stats.per_method.assign(metric=stats.per_method.metric.map(lambda k: ROW_LABELS.get(k, k)))
    return long.merge(keyed[["metric", "method", "lo", "hi"]], on=["metric", "method"], how="left")
