"""Summaries of runs as tables: a run's own summary files, and the report across many runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from pydantic import ValidationError

from camexp.config import ExperimentConfig, StatsConfig
from camexp.csvsafe import write_csv
from camexp.errors import CamexpError
from camexp.jobs import jobs_of
from camexp.metrics import RELPERF_TABLE, MetricParams, MetricResult, compute_metrics, table_files
from camexp.provenance import mixed_note
from camexp.report.markdown import markdown_table, markdown_text
from camexp.report.paper import PUBLISHED, PUBLISHED_RELPERF, SETTINGS, Setting, setting_mismatch
from camexp.report.runs import RunFolder, find_runs, find_studies, open_run, read_runs, study_section
from camexp.report.uncertainty import (
    RunStats,
    compute_stats,
    extra_values,
    label_of,
    main_cells,
    pairwise_markdown,
    stats_settings,
    with_missing_rows,
    write_stats,
)
from camexp.results import RUN_JSON, read_json, records_view
from camexp.savefig import save_figure


@dataclass
class RunSummary:
    """The summary of one run folder: main table (metrics x methods), extra tables and notes; `setting` is
    what the run measured (for --compare-paper), `status` says what an incomplete run lacks, `stats` the
    intervals and paired comparisons (camexp/report/uncertainty.py)."""

    name: str
    paper: str | None
    main: pd.DataFrame
    result: MetricResult
    images: int
    extra_notes: list[str] = field(default_factory=list)
    setting: Setting | None = None
    status: str | None = None
    stats: RunStats | None = None


def summarize(
    cfg: ExperimentConfig, records: pd.DataFrame, run_dir: Path | None = None, stats: StatsConfig | None = None
) -> RunSummary:
    """Compute the record metrics from records, and the per-batch jobs' numbers (per-batch metrics,
    analyses) from their files in `run_dir` (never from a run's memory); the run's setting comes from its run.json; with
    `stats`, every per-image metric's intervals and paired comparisons too."""
    methods = cfg.method_names
    params = MetricParams(cfg.relperf_min_true_prob)
    view = records_view(records, methods)
    result = compute_metrics(cfg.metrics, view, params)
    if run_dir is not None:
        for job in jobs_of(cfg):  # each per-batch job summarised from its own files
            result.merge(job.read(run_dir, records))
    main = pd.DataFrame(result.rows).T.reindex(columns=methods)
    main.index.name = "metric"
    run_stats = (
        compute_stats(view, cfg.metrics, params, stats, extra_values(run_dir, records, methods, cfg.analyses))
        if stats
        else None
    )
    if run_stats is not None:
        main = with_missing_rows(main, run_stats)
    meta_path = run_dir / RUN_JSON if run_dir is not None else None
    meta = read_json(meta_path) if meta_path is not None and meta_path.exists() else None
    summary = RunSummary(
        cfg.name,
        cfg.paper,
        main,
        result,
        images=len(view.image_ids),
        setting=Setting.of_run(meta) if meta is not None else None,
        stats=run_stats,
    )
    if meta is not None and (mixed := mixed_note(meta)):
        summary.extra_notes.append(mixed)
    return summary


def open_run_config(run_dir: Path) -> tuple[RunFolder, ExperimentConfig]:
    """A run folder with at least one image complete for every method, and its validated config; CamexpError
    naming the folder otherwise (see camexp/report/runs.py)."""
    run = open_run(run_dir)
    if run.records.empty:
        raise CamexpError(f"{run_dir}: no image recorded for every method yet ({run.status})")
    try:
        return run, ExperimentConfig.model_validate(run.config)
    except ValidationError as e:
        raise CamexpError(
            f"{run_dir}: its run.json config is not one this camexp version reads "
            f"({e.error_count()} problem(s), first: {e.errors()[0]['msg']})"
        ) from None


def summarize_run_dir(run_dir: Path, stats: dict[str, Any] | None = None) -> RunSummary:
    """Recompute a finished (or partial) run's summary from its folder, over the images complete for every
    method; intervals with the `stats:` settings the run recorded, updated by `stats` (None values keep).
    Raises CamexpError for a folder that cannot be reported (see camexp/report/runs.py)."""
    run, cfg = open_run_config(run_dir)
    summary = summarize(cfg, run.records, run_dir, stats_settings(run.config.get("stats"), **(stats or {})))
    summary.status = run.status
    return summary


def with_paper(summary: RunSummary) -> pd.DataFrame:
    """Main table with the published value beside each of ours ('ours / paper'); a published method the run
    did not include gets a column '<method> (not run)' with '— / paper'."""
    if summary.paper not in PUBLISHED:
        return summary.main
    _, rows = PUBLISHED[summary.paper]
    out = cells(summary)
    for row, per_method in rows.items():
        for method, value in per_method.items():
            digits = max(2, len(f"{value:g}".partition(".")[2]))  # as precise as the paper printed it
            if method in summary.main.columns:
                ours = summary.main.at[row, method] if row in summary.main.index else float("nan")
                cell = str(out.at[row, method]) if row in out.index else ""
                shown = cell if "[" in cell else f"{ours:.{digits}f}"  # keep an interval where there is one
                out.loc[row, method] = f"{shown} / {value:.{digits}f}"
            else:
                out.loc[row, f"{method} (not run)"] = f"— / {value:.{digits}f}"
    return out.fillna("")


def cells(summary: RunSummary) -> pd.DataFrame:
    """The main table as text: each number with its interval where the summary has them."""
    return summary.main.map(fmt_cell) if summary.stats is None else main_cells(summary.main, summary.stats, fmt_cell)


def relperf_with_paper(summary: RunSummary, table: pd.DataFrame) -> pd.DataFrame:
    if summary.paper not in PUBLISHED_RELPERF or table.empty:
        return table
    _, pub = PUBLISHED_RELPERF[summary.paper]
    out = table.copy()
    for col, i in (("paper R", 0), ("paper mean log R", 1), ("paper std log R", 2)):
        out[col] = [pub.get(pair, (float("nan"),) * 3)[i] for pair in out.index]
    return out


def fmt_cell(v: object, digits: int = 2) -> str:
    """A table cell as the summaries print it: floats rounded, NaN as a dash, text as it is."""
    return ("—" if pd.isna(v) else f"{v:.{digits}f}") if isinstance(v, float) else str(v)


def header_lines(summary: RunSummary, compare_paper: bool) -> list[str]:
    """Title, what an incomplete run lacks, the image count, and with --compare-paper what it is read against."""
    status = [f"**{markdown_text(summary.status)}**", ""] if summary.status else []
    lines = [f"## {markdown_text(summary.name)}", "", *status]
    return lines + [f"{summary.images} images."] + (paper_lines(summary) if compare_paper else [])


def paper_lines(summary: RunSummary) -> list[str]:
    """What --compare-paper says about a run: the published setting its cells are read against, a warning
    when the run's backbone or data set differ from it, or that the run names no paper."""
    if summary.paper is None:
        return [
            "No `paper:` in this run's config: no published numbers to compare with "
            f"(set paper: to one of {', '.join(SETTINGS)})."
        ]
    caption = (PUBLISHED.get(summary.paper) or PUBLISHED_RELPERF[summary.paper])[0]
    lines = [f"Compared with {caption} ({SETTINGS[summary.paper].describe()}); cells: ours / published."]
    warning = paper_warning(summary)
    return lines + ([f"**Warning: {warning}.**"] if warning else [])


def paper_warning(summary: RunSummary) -> str | None:
    """The mismatch between a run and its `paper:` setting, or None (no paper, or the same setting)."""
    if summary.paper is None:
        return None
    if summary.setting is None:
        return f"this run's backbone and data set are not recorded: cannot tell whether {summary.paper} applies"
    return setting_mismatch(summary.paper, summary.setting)


def to_markdown(summary: RunSummary, compare_paper: bool = False) -> str:
    """A run's summary as Markdown, in the paper's layout (metrics as rows, methods as columns)."""
    lines = header_lines(summary, compare_paper)
    main = with_paper(summary) if compare_paper else cells(summary)
    lines += ["", markdown_table(main), ""]
    if summary.stats is not None:
        lines += [summary.stats.legend(), ""]
    for title, table in summary_tables(summary, compare_paper):
        lines += [f"### {title}", "", markdown_table(table.map(lambda v: fmt_cell(v, 3))), ""]
    pairwise = pairwise_markdown(summary.stats) if summary.stats is not None else ""
    if pairwise:
        lines += [
            "### Paired comparisons (bootstrap intervals over the same images; exact sign test for win %)",
            "",
            pairwise,
            "",
        ]
    lines += [markdown_text(note) for note in (*summary.result.notes, *summary.extra_notes)]
    return "\n".join(lines).rstrip() + "\n"


def summary_tables(summary: RunSummary, compare_paper: bool) -> list[tuple[str, pd.DataFrame]]:
    """The extra tables (win matrix, relative performance), with the published R beside ours on request."""
    out = []
    for title, table in summary.result.tables.items():
        if compare_paper and title == RELPERF_TABLE:  # relperf's table: the equivalence paper printed R
            table = relperf_with_paper(summary, table)
            if summary.paper in PUBLISHED_RELPERF:
                title += f" — beside {PUBLISHED_RELPERF[summary.paper][0]}"
        out.append((title, table))
    return out


def write_summary(run_dir: Path, summary: RunSummary) -> None:
    """summary.csv (main table) and summary.md (everything) into the run folder."""
    write_csv(summary.main, run_dir / "summary.csv", float_format="%.4f")
    files = table_files()
    for title, table in summary.result.tables.items():
        if title in files:
            write_csv(table, run_dir / f"{files[title]}.csv", float_format="%.6f")
    (run_dir / "summary.md").write_text(to_markdown(summary))
    if summary.stats is not None:
        write_stats(run_dir, summary.stats)


@dataclass
class Report:
    """`camexp report table`'s result: the Markdown, a long frame (run, metric, method, value[, paper, compared_to]),
    the summaries, and the folders skipped with the reason."""

    markdown: str
    frame: pd.DataFrame
    summaries: list[RunSummary]
    warnings: list[str]
    studies: list[str] = field(default_factory=list)  # human-trust study folders: their report sections


def report(results_dir: Path, compare_paper: bool = False, stats: dict[str, Any] | None = None) -> Report:
    """Summaries of every run folder below `results_dir`, intervals with each run's recorded `stats:`
    settings updated by `stats`; a folder that cannot be reported is skipped with a warning, the others are
    still reported. Reads only: no run folder is modified."""
    parts, frames, summaries = [f"# camexp report: {markdown_text(str(results_dir))}", ""], [], []
    read, warnings = read_runs(find_runs(results_dir), lambda d: summarize_run_dir(d, stats))
    for run_dir, s in read:
        summaries.append(s)
        parts.append(to_markdown(s, compare_paper))
        if compare_paper and (w := paper_warning(s) or (None if s.paper else "no `paper:` in its config")):
            warnings.append(f"{run_dir}: {w}")
        frames.append(_long(s, compare_paper))
    studies = [study_section(folder) for folder in find_studies(results_dir)]
    parts += studies
    if warnings:
        parts += ["## Not reported / warnings", "", *(f"- {markdown_text(w)}" for w in warnings), ""]
    columns = ["run", "metric", "method", "value", "lo", "hi"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return Report("\n".join(parts), table, summaries, warnings, studies)


def write_report(rep: Report, folder: Path, name: str = "report") -> None:
    """`name`.md and `name`.csv into `folder` (created), or one CamexpError naming it (a file, read-only, full)."""
    write_files(folder, name, rep.markdown, {name: rep.frame})


def write_files(
    folder: Path,
    name: str,
    markdown: str,
    csvs: dict[str, pd.DataFrame],
    float_format: str | None = "%.4f",
    figures: dict[str, Figure] | None = None,
) -> list[Path]:
    """A report's files into `folder` (created): `name`.md, each frame of `csvs` as STEM.csv (no index) and each
    figure of `figures` as STEM.png and STEM.pdf; the paths written, or one CamexpError naming the folder (a
    file, read-only, full). Every `camexp report table` report is written here, so their files look alike."""
    paths = [folder / f"{name}.md"]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        paths[0].write_text(markdown)
        for stem, frame in csvs.items():
            paths.append(folder / f"{stem}.csv")
            write_csv(frame, paths[-1], index=False, float_format=float_format)
        for stem, fig in (figures or {}).items():
            paths += save_figure(fig, folder, stem)
    except OSError as e:
        raise CamexpError(
            f"{folder}: cannot write {name}.md and {name}.csv ({e.strerror or e}); choose another folder with --out"
        ) from None
    return paths


def _long(s: RunSummary, compare_paper: bool) -> pd.DataFrame:
    """One run's main table as long rows with their intervals (lo, hi); with the paper, its value and which
    table it comes from."""
    long = s.main.reset_index().melt(id_vars="metric", var_name="method", value_name="value")
    long.insert(0, "run", s.name)
    if s.stats is None:
        long = long.assign(lo=float("nan"), hi=float("nan"))
    else:
        keyed = s.stats.per_method.assign(metric=s.stats.per_method.metric.map(label_of))
        long = long.merge(keyed[["metric", "method", "lo", "hi"]], on=["metric", "method"], how="left")
    if compare_paper and s.paper in PUBLISHED:
        pub = PUBLISHED[s.paper][1]
        long["paper"] = [pub.get(r, {}).get(m, float("nan")) for r, m in zip(long["metric"], long["method"])]
        long["compared_to"] = s.paper
    return long
