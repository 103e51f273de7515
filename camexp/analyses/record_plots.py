"""Figures drawn from per_image.csv alone (nothing extra is computed per batch):

- `relperf_plot`: box plot of the per-image ratio O_A / O_B for every method pair (equivalence paper Fig. 6),
  on the images the `relperf` metric uses (true-class confidence above `relperf_min_true_prob`, when > 0);
- `drop_dist`: per-method distribution of the per-image drop max(0, Y - O) / Y, whose mean x 100 is the
  Average drop %.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from camexp.analyses.base import analysis
from camexp.config import ExperimentConfig
from camexp.metrics import RecordsView
from camexp.metrics.base import RECORDS_COST
from camexp.metrics.batch import BatchContext
from camexp.results import RECORDS, read_records, records_view

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pair_ratios(o: torch.Tensor, methods: list[str]) -> dict[str, np.ndarray]:
    """'A vs B' -> finite per-image O_A / O_B for every pair of columns of `o` (N, M)."""
    out = {}
    for a, b in combinations(range(len(methods)), 2):
        r = (o[:, a] / o[:, b]).numpy()
        out[f"{methods[a]} vs {methods[b]}"] = r[np.isfinite(r)]
    return out


def drops(y: torch.Tensor, o: torch.Tensor, methods: list[str]) -> dict[str, np.ndarray]:
    """Method -> per-image drop max(0, y - o) / y."""
    d = ((y[:, None] - o).clamp(min=0) / y[:, None]).numpy()
    return {m: d[:, j] for j, m in enumerate(methods)}


class RecordsFigure:
    """Base of the record-only figures: no per-batch work; `finish` reads the final records."""

    stem = ""
    title = ""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg

    def update(self, ctx: BatchContext) -> None:
        pass

    def draw(self, view: RecordsView) -> tuple[Figure, str]:
        """The figure and a one-line note for summary.md."""
        raise NotImplementedError

    def finish(self, out_dir: Path) -> list[str]:
        from camexp.savefig import figure_link, save_figure

        view = records_view(read_records(out_dir / RECORDS), self.cfg.method_names)
        fig, note = self.draw(view)
        save_figure(fig, out_dir, self.stem)
        return figure_link(self.title, self.stem) + ["", note]


class RelperfPlot(RecordsFigure):
    stem = "relperf_plot"
    title = "Per-image O_A / O_B for each method pair (equivalence paper Fig. 6)"

    def draw(self, view: RecordsView) -> tuple[Figure, str]:
        from camexp.analyses.plots import draw_ratio_boxes

        thr = self.cfg.relperf_min_true_prob
        keep = view.p_true > thr if thr > 0 else torch.ones(len(view.image_ids), dtype=torch.bool)
        ratios = pair_ratios(view.o[keep], view.methods)
        note = (
            f"{int(keep.sum())} of {len(view.image_ids)} images"
            + (f" (true-class confidence > {thr:g})" if thr > 0 else "")
            + "; log scale, 1 = no difference."
        )
        return draw_ratio_boxes(ratios, note), note


class DropDist(RecordsFigure):
    stem = "drop_dist"
    title = "Distribution of the per-image drop max(0, Y − O) / Y"

    def draw(self, view: RecordsView) -> tuple[Figure, str]:
        from camexp.analyses.plots import draw_drop_dist

        note = f"{len(view.image_ids)} images; the mean of each distribution (×100) is the method's Average drop %."
        return draw_drop_dist(drops(view.y, view.o, view.methods)), note


# nothing recorded per batch: either may be added to a run that has recorded images
analysis("relperf_plot", {}, resume="any", cost=RECORDS_COST)(RelperfPlot)
analysis("drop_dist", {}, resume="any", cost=RECORDS_COST)(DropDist)
