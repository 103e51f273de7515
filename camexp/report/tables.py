"""Summaries of runs as tables: a run's own summary files, and the report across many runs."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from camexp.analyses import ANALYSIS_RESULTS
from camexp.config import ExperimentConfig
from camexp.metrics import MetricParams, MetricResult, batch_metrics, compute_metrics
from camexp.report.paper import PUBLISHED, PUBLISHED_RELPERF
from camexp.results import METRIC_RECORDS, RECORDS, RUN_JSON, final_metric_rows, read_json, read_records, records_view


@dataclass
class RunSummary:
    """The summary of one run folder: main table (metrics x methods), extra tables and notes."""

    name: str
    paper: str | None
    main: pd.DataFrame
    result: MetricResult
    images: int
    extra_notes: list[str] = field(default_factory=list)


def summarize(cfg: ExperimentConfig, records: pd.DataFrame, run_dir: Path | None = None) -> RunSummary:
    """Compute the record metrics from records, and the per-batch metrics' and the analyses' numbers from
    their files in `run_dir` (never from a run's memory)."""
    methods = cfg.method_names
    view = records_view(records, methods)
    result = compute_metrics(cfg.metrics, view, MetricParams(cfg.relperf_min_true_prob))
    if run_dir is not None:
        per_batch = batch_metrics(cfg.metrics)
        if per_batch:
            rows = final_metric_rows(run_dir / METRIC_RECORDS, set(records["index"].astype(int)), methods)
            for m in per_batch:
                result.merge(m.summarize(rows[rows["metric"].isin(m.row_names)], methods, cfg))
        for a in cfg.analyses:
            if a in ANALYSIS_RESULTS:
                result.merge(ANALYSIS_RESULTS[a](run_dir, records, methods))
    main = pd.DataFrame(result.rows).T.reindex(columns=methods)
    main.index.name = "metric"
    return RunSummary(cfg.name, cfg.paper, main, result, images=len(view.image_ids))


def summarize_run_dir(run_dir: Path) -> RunSummary:
    """Recompute a finished (or partial) run's summary from its folder."""
    cfg = ExperimentConfig.model_validate(read_json(run_dir / RUN_JSON)["config"])
    return summarize(cfg, read_records(run_dir / RECORDS), run_dir)


def with_paper(summary: RunSummary) -> pd.DataFrame:
    """Main table with the published value beside each of ours ('ours / paper'); a published method the run
    did not include gets a column '<method> (not run)' with '— / paper'."""
    if summary.paper not in PUBLISHED:
        return summary.main
    _, rows = PUBLISHED[summary.paper]
    out = summary.main.map(_fmt)
    for row, per_method in rows.items():
        for method, value in per_method.items():
            digits = max(2, len(f"{value:g}".partition(".")[2]))  # as precise as the paper printed it
            if method in summary.main.columns:
                ours = summary.main.at[row, method] if row in summary.main.index else float("nan")
                out.loc[row, method] = f"{ours:.{digits}f} / {value:.{digits}f}"
            else:
                out.loc[row, f"{method} (not run)"] = f"— / {value:.{digits}f}"
    return out.fillna("")


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
    main = with_paper(summary) if compare_paper else summary.main
    lines += ["", main.to_markdown(floatfmt=".2f"), ""]
    for title, table in summary.result.tables.items():
        if compare_paper and title.startswith("Relative performance"):
            table = relperf_with_paper(summary, table)
            if summary.paper in PUBLISHED_RELPERF:
                title += f" — beside {PUBLISHED_RELPERF[summary.paper][0]}"
        shown = table.map(lambda v: "—" if pd.isna(v) else f"{v:.3f}" if isinstance(v, float) else v)
        lines += [f"### {title}", "", shown.to_markdown(), ""]
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


def find_runs(results_dir: Path) -> list[Path]:
    """Every run folder (holding run.json and records) below `results_dir`, sorted."""
    return sorted(p.parent for p in results_dir.rglob(RUN_JSON) if (p.parent / RECORDS).exists())


def report(results_dir: Path, compare_paper: bool = False) -> tuple[str, pd.DataFrame]:
    """Markdown for every run below `results_dir` and one long CSV-ready frame (run, metric, method, value)."""
    parts, frames = [f"# camexp report: {results_dir}", ""], []
    for run_dir in find_runs(results_dir):
        s = summarize_run_dir(run_dir)
        parts.append(to_markdown(s, compare_paper))
        long = s.main.reset_index().melt(id_vars="metric", var_name="method", value_name="value")
        long.insert(0, "run", s.name)
        if compare_paper and s.paper in PUBLISHED:
            pub = PUBLISHED[s.paper][1]
            long["paper"] = [pub.get(r, {}).get(m, float("nan")) for r, m in zip(long["metric"], long["method"])]
        frames.append(long)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "metric", "method", "value"])
    return "\n".join(parts), table
