"""The fine-tune's validation AP as a rich table (per class, then the mean)."""

from __future__ import annotations

from rich.table import Table

from camexp.finetune.train import FinetuneResult


def ap_table(result: FinetuneResult) -> Table:
    last = result.history[-1]
    t = Table("class", "AP (val)", title=f"epoch {last['epoch']}", caption=f"train loss {last['train_loss']:.4f}")
    for name, ap in zip(result.class_names, result.ap):
        t.add_row(name, "—" if ap != ap else f"{ap:.4f}")  # NaN: no positive image in val
    t.add_row("[bold]mean[/]", f"[bold]{result.mean_ap:.4f}[/]")
    return t
