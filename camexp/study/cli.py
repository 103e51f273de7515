"""`camexp study make` and `camexp study tally`: the Typer sub-app that camexp/cli.py mounts (its consoles
and one-line error exit are camexp/cli.py's, imported when a command runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown

from camexp.errors import CamexpError

study_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="The paper's human-trust study (§4.2): a blind web page of two methods' maps, and "
    "the tally of the raters' answers.",
)


@study_app.command("make")
def make(
    config: Annotated[Path, typer.Argument(help="study YAML (an experiment config with a `study:` section)")],
    out: Annotated[Path | None, typer.Option(help="study folder (default results/<name>)")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace a study already in the folder")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Select the images (top-F1 classes by default), draw both methods' maps, write page/ + key.json."""
    from camexp.cli import _fail, console
    from camexp.study.make import KEY_JSON, PAGE, make_study

    try:
        result = make_study(config, out, device, force, progress)
    except CamexpError as e:
        _fail(e)
    if result.f1 is not None:
        top = result.f1.head(10)
        console.print(
            Markdown(
                "Per-class F1 of the model (best 10 of "
                f"{len(result.f1)} classes; all in {result.folder / 'f1_per_class.csv'}):\n\n"
                + top.to_markdown(index=False, floatfmt=".3f")
            )
        )
    console.print(
        f"study {result.study_id}: {result.images} images, {result.items} items, classes: {', '.join(result.classes)}",
        highlight=False,
    )
    console.print(f"page for the raters: {result.folder / PAGE / 'index.html'} (host the page/ folder as it is)")
    console.print(f"key (keep it from the raters): {result.folder / KEY_JSON}")


@study_app.command("tally")
def tally(
    study_dir: Annotated[Path, typer.Argument(help="the study folder (holding key.json)")],
    answers: Annotated[list[Path], typer.Argument(help="answer files the page downloaded")],
    compare_paper: Annotated[
        bool, typer.Option("--compare-paper", help="put the paper's published scores beside ours")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="where to write study_report.md/.csv (default STUDY_DIR)")] = None,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples of the intervals (0: none)")] = 1000,
    level: Annotated[float, typer.Option(help="interval coverage")] = 0.95,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
) -> None:
    """Un-blind the answer files with key.json; write study_report.md and study_report.csv."""
    from camexp.cli import _fail, console, err_console
    from camexp.study.tally import tally_study

    try:
        report = tally_study(
            study_dir, answers, compare_paper=compare_paper, n_boot=bootstrap, level=level, seed=seed, out=out
        )
    except CamexpError as e:
        _fail(e)
    console.print(Markdown(report.markdown))
    for w in report.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    err_console.print(f"wrote {report.paths[0]} and {report.paths[1]}")
