"""Summaries of runs as tables: a run's own summary files, and the report across many runs."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from camexp.analyses import ANALYSIS_RESULTS
from camexp.errors import CamexpError
from camexp.metrics import MetricParams, MetricResult, compute_metrics
from camexp.report.paper import PUBLISHED, PUBLISHED_RELPERF, SETTINGS, Setting, setting_mismatch
from camexp.report.runs import find_runs, open_run
from camexp.results import RUN_JSON, read_json, records_view


@dataclass
class RunSummary:
    """The summary of one run folder: main table (metrics x methods), extra tables and notes; `setting` is
    what the run measured (for --compare-paper), `status` says what an incomplete run lacks."""

    name: str
    paper: str | None
    main: pd.DataFrame
    result: MetricResult
    images: int
    extra_notes: list[str] = field(default_factory=list)
    setting: Setting | None = None
    status: str | None = None


def summarize(name: str, paper: str | None, records: pd.DataFrame, methods: list[str], metrics: list[str],
              params: MetricParams, run_dir: Path | None = None, analyses: Sequence[str] = ()) -> RunSummary:
    """Compute the metrics from records, and the analyses' numbers from their files in `run_dir` (never
    from a run's memory); the run's setting comes from its run.json."""
    view = records_view(records, methods)
    result = compute_metrics(metrics, view, params)
    for a in analyses:
        if run_dir is not None and a in ANALYSIS_RESULTS:
            result.merge(ANALYSIS_RESULTS[a](run_dir, records, methods))
    main = pd.DataFrame(result.rows).T.reindex(columns=methods)
    main.index.name = "metric"
    meta = run_dir / RUN_JSON if run_dir is not None else None
    setting = Setting.of_run(read_json(meta)) if meta is not None and meta.exists() else None
    return RunSummary(name, paper, main, result, images=len(view.image_ids), setting=setting)


def summarize_run_dir(run_dir: Path) -> RunSummary:
    """Recompute a finished (or partial) run's summary from its folder, over the images complete for every
    method; raises CamexpError for a folder that cannot be reported (see camexp/report/runs.py)."""
    run = open_run(run_dir)
    cfg = run.config
    if run.records.empty:
        raise CamexpError(f"{run_dir}: no image recorded for every method yet ({run.status})")
    summary = summarize(cfg["name"], cfg.get("paper"), run.records, run.methods, cfg["metrics"],
                        MetricParams(relperf_min_true_prob=cfg.get("relperf_min_true_prob", 0.0)),
                        run_dir, cfg.get("analyses", []))
    summary.status = run.status
    return summary


def with_paper(summary: RunSummary) -> pd.DataFrame:
    """Main table with the published value beside each of ours ('ours / paper')."""
    if summary.paper not in PUBLISHED:
        return summary.main
    _, rows = PUBLISHED[summary.paper]
    out = summary.main.map(fmt_cell)
    for row, per_method in rows.items():
        for method, value in per_method.items():
            if method in out.columns:
                ours = summary.main.at[row, method] if row in summary.main.index else float("nan")
                out.loc[row, method] = f"{fmt_cell(ours)} / {value:.2f}"
    return out.fillna("—")  # cells of a published-only row for methods the paper did not print


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
    lines = [f"## {summary.name}", ""] + ([f"**{summary.status}**", ""] if summary.status else [])
    return lines + [f"{summary.images} images."] + (paper_lines(summary) if compare_paper else [])


def paper_lines(summary: RunSummary) -> list[str]:
    """What --compare-paper says about a run: the published setting its cells are read against, a warning
    when the run's backbone or data set differ from it, or that the run names no paper."""
    if summary.paper is None:
        return ["No `paper:` in this run's config: no published numbers to compare with "
                f"(set paper: to one of {', '.join(SETTINGS)})."]
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
    main = with_paper(summary) if compare_paper else summary.main
    lines += ["", main.to_markdown(floatfmt=".2f"), ""]
    for title, table in summary_tables(summary, compare_paper):
        lines += [f"### {title}", "", table.map(lambda v: fmt_cell(v, 3)).to_markdown(), ""]
    lines += [*summary.result.notes, *summary.extra_notes]
    return "\n".join(lines).rstrip() + "\n"


def summary_tables(summary: RunSummary, compare_paper: bool) -> list[tuple[str, pd.DataFrame]]:
    """The extra tables (win matrix, relative performance), with the published R beside ours on request."""
    out = []
    for title, table in summary.result.tables.items():
        if compare_paper and title.startswith("Relative performance"):
            table = relperf_with_paper(summary, table)
            if summary.paper in PUBLISHED_RELPERF:
                title += f" — beside {PUBLISHED_RELPERF[summary.paper][0]}"
        out.append((title, table))
    return out


def write_summary(run_dir: Path, summary: RunSummary) -> None:
    """summary.csv (main table) and summary.md (everything) into the run folder."""
    summary.main.to_csv(run_dir / "summary.csv", float_format="%.4f")
    for title, table in summary.result.tables.items():
        slug = "win_matrix" if title.startswith("Win") else "relperf" if title.startswith("Relative") else None
        if slug:
            table.to_csv(run_dir / f"{slug}.csv", float_format="%.6f")
    (run_dir / "summary.md").write_text(to_markdown(summary))


@dataclass
class Report:
    """`camexp table`'s result: the Markdown, a long frame (run, metric, method, value[, paper, compared_to]),
    the summaries, and the folders skipped with the reason."""

    markdown: str
    frame: pd.DataFrame
    summaries: list[RunSummary]
    warnings: list[str]


def report(results_dir: Path, compare_paper: bool = False) -> Report:
    """Summaries of every run folder below `results_dir`; a folder that cannot be reported is skipped with
    a warning, the others are still reported. Reads only: no run folder is modified."""
    parts, frames, summaries, warnings = [f"# camexp report: {results_dir}", ""], [], [], []
    for run_dir in find_runs(results_dir):
        try:
            s = summarize_run_dir(run_dir)
        except CamexpError as e:
            warnings.append(f"skipped {run_dir}: {e}")
            continue
        summaries.append(s)
        parts.append(to_markdown(s, compare_paper))
        if compare_paper and (w := paper_warning(s) or (None if s.paper else "no `paper:` in its config")):
            warnings.append(f"{run_dir}: {w}")
        frames.append(_long(s, compare_paper))
    if warnings:
        parts += ["## Not reported / warnings", "", *(f"- {w}" for w in warnings), ""]
    columns = ["run", "metric", "method", "value"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return Report("\n".join(parts), table, summaries, warnings)


def write_report(rep: Report, folder: Path) -> None:
    """report.md and report.csv into `folder` (created), or one CamexpError naming it (a file, read-only, full)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(rep.markdown)
        rep.frame.to_csv(folder / "report.csv", index=False, float_format="%.4f")
    except OSError as e:
        raise CamexpError(f"{folder}: cannot write report.md and report.csv ({e.strerror or e}); choose another "
                          "folder with --out") from None


def _long(s: RunSummary, compare_paper: bool) -> pd.DataFrame:
    """One run's main table as long rows; with the paper, its value and which table it comes from."""
    long = s.main.reset_index().melt(id_vars="metric", var_name="method", value_name="value")
    long.insert(0, "run", s.name)
    if compare_paper and s.paper in PUBLISHED:
        pub = PUBLISHED[s.paper][1]
        long["paper"] = [pub.get(r, {}).get(m, float("nan")) for r, m in zip(long["metric"], long["method"])]
        long["compared_to"] = s.paper
    return long
