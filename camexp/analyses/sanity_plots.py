"""Figures of the `mprt` sanity check (Adebayo et al. 2018, Fig. 2), drawn from its saved files only."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from camexp.analyses.similarity import LABELS
from camexp.analyses.thumbs import from_thumbnail
from camexp.savefig import new_figure


def draw_mprt_curves(curve: pd.DataFrame, title: str = "Cascading randomisation, from the head down") -> Figure:
    """Per measure, mean similarity to the trained model's map against the blocks randomised (head first), one
    line per method with its interval band (mprt_curve.csv's columns); `title`: what the mode randomises."""
    measures = list(dict.fromkeys(curve["measure"]))
    fig = new_figure(4.2 * len(measures), 4.2)
    axes = np.atleast_1d(fig.subplots(1, len(measures), sharey=True))
    ticks = curve.drop_duplicates("depth").sort_values("depth")
    for ax, measure in zip(axes, measures):
        for method, part in curve[curve["measure"] == measure].groupby("method", sort=False):
            ax.plot(part["depth"], part["value"], marker="o", markersize=3, label=str(method))
            ax.fill_between(part["depth"], part["lo"], part["hi"], alpha=0.15)
        ax.set_title(LABELS.get(measure, measure), fontsize=9)
        ax.set_xticks(ticks["depth"], ticks["block"], rotation=90, fontsize=7)
        ax.axhline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("similarity to the trained model's map")
    axes[0].set_ylim(-1.05, 1.05)
    axes[-1].legend(fontsize=7)
    fig.suptitle(f"{title} (interval: bootstrap over images)", fontsize=10)
    return fig


def draw_mprt_maps(maps: pd.DataFrame, methods: list[str]) -> Figure:
    """One row per method: the figure image's map on the trained model, then after each depth of
    randomisation (mprt_maps.csv's rows); the image itself on the left."""
    depths = maps[maps["depth"] >= 0].drop_duplicates("depth").sort_values("depth")
    methods = [m for m in methods if m in set(maps["method"])]
    cols = len(depths) + 1
    fig = new_figure(1.1 * cols, 1.15 * len(methods) + 0.8)
    axes = np.asarray(fig.subplots(len(methods), cols, squeeze=False))
    image = maps[maps["depth"] == -1]
    cell = maps.set_index(["method", "depth"])
    for r, method in enumerate(methods):
        if not image.empty:
            axes[r, 0].imshow(
                from_thumbnail(image["shape"].iloc[0], image["data"].iloc[0]).transpose(1, 2, 0).clip(0, 1)
            )
        axes[r, 0].set_ylabel(method, fontsize=7)
        for c, (depth, block) in enumerate(zip(depths["depth"], depths["block"]), 1):
            row = cell.loc[(method, depth)]
            axes[r, c].imshow(from_thumbnail(row["shape"], row["data"])[0], cmap="inferno", vmin=0, vmax=1)
            if r == 0:
                axes[r, c].set_title(str(block), fontsize=6, rotation=90)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
