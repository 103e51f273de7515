"""`alpha_stats` (equivalence paper Fig. 3/4): the distribution of Grad-CAM++'s non-zero alpha over a run.

Each batch's statistics are accumulated on the device (camexp/analyses/alpha_hist.py) and appended as one
row (image indices + sparse histogram) to a CSV. At the end the rows are merged, except a row whose images
reappear in a later row (a resumed run redid them) or were never recorded; so no image counts twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from camexp.analyses.alpha_hist import NEAR_HALF, AlphaHistogram, AlphaSummary, bin_edges, summarize_alpha, unsqueeze
from camexp.analyses.base import analysis
from camexp.config import ExperimentConfig
from camexp.csvsafe import write_csv
from camexp.errors import CamexpError
from camexp.explain.methods import METHODS
from camexp.metrics.batch import BatchContext
from camexp.results import RECORDS, append_records, read_records

BATCHES = "alpha_batches.csv"
HIST = "alpha_hist.csv"
STATS = "alpha_stats.json"
COLUMNS = ["indices", "state"]


def merge_batches(rows: pd.DataFrame, recorded: set[int]) -> tuple[AlphaHistogram, int]:
    """Merge batch rows into one histogram; returns it and the number of images it covers."""
    batches = [[int(i) for i in str(s).split()] for s in rows["indices"]]
    later: set[int] = set()
    keep = []
    for k in range(len(batches) - 1, -1, -1):
        idx = set(batches[k])
        if not idx & later and idx <= recorded:
            keep.append(k)
        later |= idx
    total = AlphaHistogram()
    for k in keep:
        total = total.merge(AlphaHistogram.from_row(json.loads(rows["state"].iloc[k])))
    return total, sum(len(batches[k]) for k in keep)


def histogram_table(h: AlphaHistogram) -> pd.DataFrame:
    """Non-empty bins with their edges on the u = tanh(alpha - 0.5) axis and in alpha."""
    edges = bin_edges()
    nz = h.counts.nonzero()[:, 0]
    return pd.DataFrame(
        {
            "u_lo": edges[nz].numpy(),
            "u_hi": edges[nz + 1].numpy(),
            "alpha_lo": unsqueeze(edges[nz]).numpy(),
            "alpha_hi": unsqueeze(edges[nz + 1]).numpy(),
            "count": h.counts[nz].numpy(),
        }
    )


def summary_line(s: AlphaSummary, images: int) -> str:
    return (
        f"Grad-CAM++ alpha over {images} images: {s.nonzero} non-zero of {s.total} entries; "
        f"min {s.min:.4g}, max {s.max:.4g}; median {s.median:.4f} (IQR {s.q1:.4f}–{s.q3:.4f}); "
        f"{100 * s.share_near_half:.2f}% within [{NEAR_HALF[0]}, {NEAR_HALF[1]}]."
    )


class AlphaStats:
    """Streams alpha statistics; needs a Grad-CAM++ method so that the run computes gradients. The per-batch
    state rows are this analysis's per-rank state under torchrun; `finish` reduces them (merge_batches)."""

    def __init__(self, cfg: ExperimentConfig):
        alpha_methods = [name for name, m in METHODS.items() if m.uses_alpha]
        if not any(METHODS.get(m).uses_alpha for _, m, _ in cfg.method_specs()):
            raise CamexpError(
                f"analyses: alpha_stats describes Grad-CAM++'s alpha: add one of {alpha_methods} "
                "to methods, or drop alpha_stats"
            )

    def update(self, ctx: BatchContext) -> None:
        h = AlphaHistogram()
        h.update(ctx.explanation.inputs.alpha)
        row = pd.DataFrame(
            {"indices": [" ".join(str(i) for i in ctx.batch["index"].tolist())], "state": [json.dumps(h.row())]}
        )
        append_records(ctx.path(BATCHES), row, COLUMNS)

    def finish(self, out_dir: Path) -> list[str]:
        from camexp.analyses.plots import draw_alpha
        from camexp.savefig import figure_link, save_figure

        rows = read_records(out_dir / BATCHES, COLUMNS)
        recorded = set(read_records(out_dir / RECORDS)["index"].astype(int))
        h, images = merge_batches(rows, recorded)
        if not images:
            return ["", f"alpha_stats: no batch statistics in {BATCHES} (enable the analysis before the run)."]
        s = summarize_alpha(h)
        (out_dir / STATS).write_text(json.dumps({"images": images, **s.__dict__}, indent=2))
        write_csv(histogram_table(h), out_dir / HIST, index=False, float_format="%.9g")
        save_figure(draw_alpha(h, s), out_dir, "alpha_stats")
        return figure_link("Distribution of Grad-CAM++ alpha (equivalence paper Fig. 3/4)", "alpha_stats") + [
            "",
            summary_line(s, images) + f" Numbers: [{STATS}]({STATS}), bins: [{HIST}]({HIST}).",
        ]


analysis("alpha_stats", {BATCHES: COLUMNS}, cost="none (the run's own Grad-CAM++ alphas)")(AlphaStats)
