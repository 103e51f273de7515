"""`camexp report table|leaderboard|reliability|consistency|html RESULTS_DIR`: the reports over a results tree,
read-only and recomputed from the records; `camexp table` is kept as an alias of the first four that says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markdown import Markdown

from camexp.cli.common import app, command, console, err_console, group, plain, warn, wrote
from camexp.errors import CamexpError

report_app = group("Reports over a results folder (read only, recomputed from the records).")
app.add_typer(report_app, name="report")

RESULTS = typer.Argument(Path("results"), help="folder holding run folders")
FORMAT = typer.Option("md", "--format", help="md | csv: what to print")
OUT = typer.Option(None, help="where to write the report files (default RESULTS_DIR)")
BOOTSTRAP = typer.Option(None, help="bootstrap resamples (default: each run's stats.bootstrap)")
LEVEL = typer.Option(None, help="interval coverage (default: each run's stats.level, 0.95)")
SEED = typer.Option(None, help="bootstrap seed (default: each run's stats.seed)")
METRIC = typer.Option(
    None, help="the leaderboard's metric (a metric of summary_long.csv; default: the runs' first rankable one)"
)
TOP_Q = typer.Option(0.2, help="the fraction of pixels in a map's top region (IoU)")


def _checked(results_dir: Path, fmt: str, bootstrap: int | None, level: float | None, seed: int | None) -> dict:
    """The stats overrides, after the arguments every report shares are checked once (not per run)."""
    from camexp.report.uncertainty import stats_settings

    if not results_dir.is_dir():
        raise CamexpError(f"{results_dir}: not a folder")
    if fmt not in ("md", "csv"):
        raise CamexpError(f"--format must be 'md' or 'csv', not {fmt!r}")
    stats = {"bootstrap": bootstrap, "level": level, "seed": seed}
    stats_settings(None, **stats)
    return stats


def _print_csv(frame: Any) -> None:
    from camexp.csvsafe import csv_text

    typer.echo(csv_text(frame, index=False, float_format="%.4f"), nl=False)


def _show(frame: Any, markdown: str, fmt: str, warnings: list[str], *paths: Path, rendered: bool = False) -> None:
    """The report on the terminal (its CSV, or its Markdown: rendered by rich, or as source so that a wide
    table stays whole in a narrow terminal), then its warnings and the files it wrote, on stderr."""
    if fmt == "csv":
        _print_csv(frame)
    elif rendered:
        console.print(Markdown(markdown))
    else:
        plain(markdown)
    warn(warnings)
    wrote(*paths)


def _no_runs(results_dir: Path) -> None:
    from camexp.report.runs import find_runs

    if not find_runs(results_dir):
        raise CamexpError(f"{results_dir}: no run folders (holding run.json) found below it")


@command(report_app, "table")
def table_report(
    results_dir: Path = RESULTS,
    fmt: str = FORMAT,
    compare_paper: bool = typer.Option(False, "--compare-paper", help="put the published numbers beside ours"),
    out: Path | None = OUT,
    bootstrap: int | None = BOOTSTRAP,
    level: float | None = LEVEL,
    seed: int | None = SEED,
) -> None:
    """Every run, study and distillation below RESULTS_DIR in one report.md + report.csv."""
    from camexp.distill.report import distill_markdown, distill_summaries, with_distill
    from camexp.report.runs import find_runs, find_studies
    from camexp.report.tables import report, write_report
    from camexp.report.terminal import print_summary

    stats = _checked(results_dir, fmt, bootstrap, level, seed)
    distills, distill_warnings = distill_summaries(results_dir, compare_paper)
    if not find_runs(results_dir) and not find_studies(results_dir) and not distills:
        raise CamexpError(
            f"{results_dir}: no run folders (holding run.json), studies (study.json) or distill "
            "results (distill.json) found below it"
        )
    rep = with_distill(report(results_dir, compare_paper, stats), distills, distill_warnings, compare_paper)
    target = out or results_dir
    write_report(rep, target)
    if fmt == "csv":
        _print_csv(rep.frame)
    else:
        for summary in rep.summaries:
            print_summary(summary, console, compare_paper)
        for section in rep.studies:
            console.print(Markdown(section))
        for d in distills:
            plain(distill_markdown(d, compare_paper))
    warn(rep.warnings)
    wrote(target / "report.md", target / "report.csv")


@command(report_app, "leaderboard")
def leaderboard_report(
    results_dir: Path = RESULTS,
    metric: str | None = METRIC,
    fmt: str = FORMAT,
    out: Path | None = OUT,
    bootstrap: int | None = BOOTSTRAP,
    level: float | None = LEVEL,
    seed: int | None = SEED,
) -> None:
    """One metric across runs: methods as rows, one column per run, mean rank (leaderboard.md/.csv)."""
    from camexp.report.leaderboard import leaderboard
    from camexp.report.tables import Report, write_report

    stats = _checked(results_dir, fmt, bootstrap, level, seed)
    _no_runs(results_dir)
    md, frame, skipped = leaderboard(results_dir, metric, stats)
    target = out or results_dir
    write_report(Report(md, frame, [], skipped), target, "leaderboard")
    _show(frame, md, fmt, skipped, target / "leaderboard.md", target / "leaderboard.csv", rendered=True)


@command(report_app, "reliability")
def reliability_report(
    results_dir: Path = RESULTS,
    fmt: str = FORMAT,
    out: Path | None = OUT,
    bootstrap: int | None = BOOTSTRAP,
    level: float | None = LEVEL,
    seed: int | None = SEED,
) -> None:
    """Do the metrics agree? Ranks per metric and criterion, σ̂, Kendall τ, Krippendorff's α, with intervals,
    per run and pooled (reliability.md/.csv and figures)."""
    from camexp.reliability.report import reliability_report as reliability
    from camexp.report.tables import write_files

    stats = _checked(results_dir, fmt, bootstrap, level, seed)
    rel = reliability(results_dir, stats)
    target = out or results_dir
    write_files(target, "reliability", rel.markdown, {"reliability": rel.frame}, figures=rel.figures)
    _show(rel.frame, rel.markdown, fmt, rel.warnings, target / "reliability.md", target / "reliability.csv")


@command(report_app, "consistency")
def consistency_report(
    results_dir: Path = RESULTS,
    top_q: float = TOP_Q,
    fmt: str = FORMAT,
    out: Path | None = OUT,
    bootstrap: int | None = BOOTSTRAP,
    level: float | None = LEVEL,
    seed: int | None = SEED,
) -> None:
    """Compare the maps of runs with output.maps over the same images across backbones (consistency.md/.csv)."""
    from camexp.consistency.report import consistency, write_consistency

    stats = _checked(results_dir, fmt, bootstrap, level, seed)
    rep = consistency(results_dir, top_q, stats)
    written = write_consistency(rep, out or results_dir)
    # the no-labels caveat on stderr too: a CSV on stdout, or a report piped away, still shows it
    caveats = [f"{g.data}: {caveat}" for g in rep.groups if (caveat := g.counts.caveat())]
    _show(rep.frame, rep.markdown, fmt, caveats, *written)


@command(report_app, "html")
def html_report(
    results_dir: Path = RESULTS,
    out: Path | None = typer.Option(None, help="the site's folder (default RESULTS_DIR/html)"),
    bootstrap: int | None = BOOTSTRAP,
    level: float | None = LEVEL,
    seed: int | None = SEED,
) -> None:
    """A static site of every run below RESULTS_DIR (opens from file://): overview and leaderboard, run pages,
    image galleries of runs with kept maps, and the folder's other reports (docs/guide/report-html.md)."""
    from camexp.report.html.site import build_site

    stats = _checked(results_dir, "md", bootstrap, level, seed)
    _no_runs(results_dir)
    site = build_site(results_dir, out or results_dir / "html", stats)
    for line in site.size_lines():
        plain(line)
    warn(site.warnings)
    wrote(site.index)


@command(name="table")
def table(
    results_dir: Path = RESULTS,
    fmt: str = FORMAT,
    compare_paper: bool = typer.Option(False, "--compare-paper", help="put the published numbers beside ours"),
    out: Path | None = OUT,
    leaderboard: bool = typer.Option(False, "--leaderboard", help="= camexp report leaderboard"),
    metric: str | None = METRIC,
    reliability: bool = typer.Option(False, "--reliability", help="= camexp report reliability"),
    bootstrap: int | None = BOOTSTRAP,
    level: float | None = LEVEL,
    seed: int | None = SEED,
    consistency: bool = typer.Option(False, "--consistency", help="= camexp report consistency"),
    top_q: float = TOP_Q,
) -> None:
    """Alias of `camexp report table` (and, with --leaderboard, --reliability or --consistency, of those reports)."""
    if leaderboard + reliability + consistency > 1:
        raise CamexpError("--leaderboard, --reliability and --consistency are three reports: ask for one at a time")
    which = "leaderboard" if leaderboard else "reliability" if reliability else "consistency" if consistency else ""
    err_console.print(
        f"note: `camexp table{' --' + which if which else ''}` is now `camexp report {which or 'table'}`",
        markup=False,
        highlight=False,
    )
    if leaderboard:
        leaderboard_report(results_dir, metric, fmt, out, bootstrap, level, seed)
    elif reliability:
        reliability_report(results_dir, fmt, out, bootstrap, level, seed)
    elif consistency:
        consistency_report(results_dir, top_q, fmt, out, bootstrap, level, seed)
    else:
        table_report(results_dir, fmt, compare_paper, out, bootstrap, level, seed)
