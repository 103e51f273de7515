"""`camexp finetune` and `camexp distill`: the two commands that train (a VOC head; students from explanations)."""

from __future__ import annotations

from pathlib import Path

import typer

from camexp.cli.common import command, console, plain, software_change_option


@command()
def finetune(
    config: Path = typer.Argument(..., help="fine-tune YAML (see configs/finetune/*.yaml)"),
    epochs: int | None = typer.Option(None, help="train until this many epochs are done"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    batch_size: int | None = typer.Option(None, help="images per batch"),
    limit: int | None = typer.Option(None, help="use only the first N images of each split"),
    out: Path | None = typer.Option(None, help="checkpoint file (default checkpoints/<name>.pt)"),
    fresh: bool = typer.Option(False, "--fresh/--resume", help="start over instead of resuming from the checkpoint"),
    allow_software_change: bool = software_change_option("a checkpoint (train on from it)", "the checkpoint"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Fine-tune a multi-label head (BCE) on a VOC train split; per-class AP on val; a resumable checkpoint."""
    from camexp.finetune.config import load_finetune_config
    from camexp.finetune.report import ap_table
    from camexp.finetune.train import finetune as run_finetune

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
    result = run_finetune(cfg, fresh=fresh, progress=progress, allow_software_change=allow_software_change)
    console.print(ap_table(result))
    console.print(f"checkpoint: {result.checkpoint} (use it as model.weights in a run config)", markup=False)


@command()
def distill(
    config: Path = typer.Argument(..., help="distill YAML (see configs/poster4_cifar10_wrn.yaml)"),
    epochs: int | None = typer.Option(None, help="train every arm until this many epochs are done"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    batch_size: int | None = typer.Option(None, help="images per batch"),
    limit: int | None = typer.Option(None, help="use only the first N images of each split"),
    out: Path | None = typer.Option(None, help="results folder (default results/<name>)"),
    fresh: bool = typer.Option(False, "--fresh/--resume", help="start every arm over instead of resuming"),
    allow_software_change: bool = software_change_option("a distillation (resume or add arms)", "distill.json"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    profile: int | None = typer.Option(None, help="only time N training steps of each arm (vs ce); writes nothing"),
) -> None:
    """Train student arms (ce, +kd, +exp_<map>) from a teacher's explanations; per-arm results over paired seeds."""
    from camexp.distill.config import load_distill_config
    from camexp.distill.report import distill_markdown, summarize_distill
    from camexp.distill.train import distill as run_distill
    from camexp.distill.train import profile as profile_arms

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

        plain(pd.DataFrame(profile_arms(cfg, profile, progress)).to_markdown(index=False, floatfmt=".4g"))
        return
    folder = run_distill(cfg, fresh=fresh, progress=progress, allow_software_change=allow_software_change)
    plain(distill_markdown(summarize_distill(folder, cfg.paper is not None), cfg.paper is not None))
    console.print(f"results folder: {folder}")
