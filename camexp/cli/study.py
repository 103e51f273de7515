"""`camexp study make|tally`: the paper's human-trust experiment (camexp/study)."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.markdown import Markdown

from camexp.cli.common import app, comma, command, console, err_console, group, plain, warn

study_app = group(
    "The paper's human-trust study (§4.2): a blind web page of two methods' maps, and the tally of the raters' answers."
)
app.add_typer(study_app, name="study")


@command(study_app, "make")
def study_make(
    config: Path = typer.Argument(..., help="study YAML (an experiment config with a `study:` section)"),
    out: Path | None = typer.Option(None, help="study folder (default results/<name>)"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    force: bool = typer.Option(False, "--force", help="replace a study already in the folder"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Select the images (top-F1 classes by default), draw both methods' maps, write page/ and key.json."""
    from camexp.study.make import KEY_JSON, PAGE, make_study

    result = make_study(config, out, device, force, progress)
    if result.f1 is not None:
        console.print(
            Markdown(
                f"Per-class F1 of the model (best 10 of {len(result.f1)} classes; all in "
                f"{result.folder / 'f1_per_class.csv'}):\n\n"
                + result.f1.head(10).to_markdown(index=False, floatfmt=".3f")
            )
        )
    console.print(
        f"study {result.study_id}: {result.images} images, {result.items} items, classes: {', '.join(result.classes)}",
        highlight=False,
    )
    console.print(f"page for the raters: {result.folder / PAGE / 'index.html'} (host the page/ folder as it is)")
    console.print(f"key (keep it from the raters): {result.folder / KEY_JSON}")


@command(study_app, "tally")
def study_tally(
    study_dir: Path = typer.Argument(..., help="the study folder (holding key.json; its answers.sqlite is read)"),
    answers: list[Path] | None = typer.Argument(None, help="answer files the page downloaded"),
    compare_paper: bool = typer.Option(False, "--compare-paper", help="put the paper's published scores beside ours"),
    out: Path | None = typer.Option(None, help="where to write study_report.md/.csv (default STUDY_DIR)"),
    bootstrap: int = typer.Option(1000, help="bootstrap resamples of the intervals (0: none)"),
    level: float = typer.Option(0.95, help="interval coverage"),
    seed: int = typer.Option(0, help="bootstrap seed"),
    fast_ms: float = typer.Option(500.0, help="flag answers faster than this many milliseconds"),
    min_catch: float | None = typer.Option(
        None, help="leave out raters who chose the real map on fewer than this share of the catch items (0-1)"
    ),
) -> None:
    """Un-blind the answers (the served study's database and any answer files) with key.json; write
    study_report.md and study_report.csv."""
    from camexp.study.tally import tally_study

    rep = tally_study(
        study_dir,
        answers or [],
        compare_paper=compare_paper,
        n_boot=bootstrap,
        level=level,
        seed=seed,
        fast_ms=fast_ms,
        min_catch=min_catch,
        out=out,
    )
    console.print(Markdown(rep.markdown))
    warn(rep.warnings)
    err_console.print(f"wrote {rep.paths[0]} and {rep.paths[1]}")


@command(study_app, "serve")
def study_serve(
    study_dir: Path = typer.Argument(..., help="the study folder (`camexp study make` wrote it)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on; anything but loopback needs --token"),
    port: int = typer.Option(8000, help="TCP port"),
    token: str | None = typer.Option(None, help="a secret: the page is then served under /TOKEN/ only"),
) -> None:
    """Serve page/ to the participants and store every answer in STUDY_DIR/answers.sqlite as it is given."""
    import ipaddress
    import secrets

    import uvicorn

    from camexp.errors import CamexpError
    from camexp.study.serve import create_app

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token:
        raise CamexpError(
            f"--host {host} is reachable from other machines: give a secret with --token (e.g. --token "
            f"{secrets.token_urlsafe(16)}) so that only people given the link can answer"
        )
    if token is not None and not re.fullmatch(r"[A-Za-z0-9_-]{16,}", token):
        raise CamexpError("--token: at least 16 letters, digits, - or _ (it becomes part of the URL)")
    app_ = create_app(study_dir, token)
    where = f"[{host}]" if ":" in host else host
    console.print(
        f"serving {study_dir / 'page'} at http://{where}:{port}/{token + '/' if token else ''}", highlight=False
    )
    console.print(f"answers go to {study_dir / 'answers.sqlite'}; stop with Ctrl+C", highlight=False)
    uvicorn.run(app_, host=host, port=port, log_level="info")


@command(study_app, "power")
def study_power(
    images: str = typer.Option("10,20,30,50,100", help="numbers of images to try (comma-separated)"),
    raters: str = typer.Option("3,5,8,13", help="numbers of raters to try"),
    concentration: float = typer.Option(2.0, help="how alike images are (Dirichlet; smaller: raters agree more)"),
    studies: int = typer.Option(200, help="simulated studies per cell"),
    bootstrap: int = typer.Option(400, help="two-level bootstrap resamples per study"),
    seed: int = typer.Option(0, help="simulation seed"),
) -> None:
    """Simulated power: how often the two-level 95 % interval of A - B excludes zero at the paper's effect
    (Grad-CAM 56.08, Grad-CAM++ 109.69, same 84.23 of 250)."""
    from camexp.errors import CamexpError
    from camexp.study.power import power_table

    try:
        ns, rs = [int(v) for v in comma(images)], [int(v) for v in comma(raters)]
    except ValueError:
        raise CamexpError("--images and --raters take whole numbers separated by commas") from None
    if min(ns + rs) < 1 or studies < 1 or bootstrap < 1 or concentration <= 0:
        raise CamexpError("--images, --raters, --studies and --bootstrap must be >= 1, --concentration > 0")
    table = power_table(ns, rs, concentration=concentration, studies=studies, n_boot=bootstrap, seed=seed)
    plain(table.to_markdown(floatfmt=".2f"))
