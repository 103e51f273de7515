"""`camexp run` and `camexp check`: an experiment from its YAML, and the checks worth making before a long run."""

from __future__ import annotations

from pathlib import Path

import typer

from camexp.cli.common import command, console, software_change_option


@command()
def run(
    config: Path = typer.Argument(..., help="experiment YAML"),
    limit: int | None = typer.Option(None, help="use only the first N images"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    batch_size: int | None = typer.Option(None, help="images per batch"),
    out: Path | None = typer.Option(None, help="run folder (default results/<name>)"),
    fresh: bool = typer.Option(False, "--fresh/--resume", help="start over instead of resuming a killed run"),
    allow_software_change: bool = software_change_option("a run folder (resume or extend)", "run.json"),
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
        help="shard the images over torchrun's processes (auto: when launched by torchrun); see docs/guide/torchrun.md",
    ),
) -> None:
    """Run an experiment: explain every image with every method, write records and the summary table."""
    from camexp.experiment import load_experiment
    from camexp.report.terminal import print_summary
    from camexp.runner import run_experiment

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
    summary = run_experiment(
        cfg,
        fresh=fresh,
        progress=progress,
        config_path=config,
        distributed=distributed,
        allow_software_change=allow_software_change,
    )
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


@command()
def check(
    config: Path = typer.Argument(..., help="experiment YAML"),
    quick: bool = typer.Option(False, "--quick", help="decode an evenly spread sample of at most 100 images, not all"),
    progress: bool = typer.Option(True, help="show a progress bar while decoding"),
) -> None:
    """Check data layout, labels, boxes, weights, layer and class count, and decode every image, before a long run."""
    from camexp.check import check_experiment, render
    from camexp.experiment import load_experiment

    report = check_experiment(load_experiment(config), quick=quick, progress=progress)
    render(report, console)
    if not report.ok:
        raise typer.Exit(1)
