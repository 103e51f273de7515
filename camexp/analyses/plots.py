"""Figures of a run's analyses, drawn from saved tables only (so `camexp plot` can redraw them).

Each function takes plain tables/arrays and returns a matplotlib Figure; saving is camexp/savefig.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from camexp.analyses.alpha_hist import NEAR_HALF, AlphaHistogram, AlphaSummary, bin_edges
from camexp.metrics import curve_of
from camexp.savefig import new_figure


def draw_area_curve(curve: pd.DataFrame) -> Figure:
    """Mean O/Y against θ, one line per method (columns method, theta, mean_o_over_y, images)."""
    fig = new_figure(5.5, 4)
    ax = fig.subplots()
    for method, part in curve.groupby("method", sort=False, observed=True):
        ax.plot(part["theta"], part["mean_o_over_y"], marker="o", label=str(method))
    ax.set_xlabel("θ: pixels with map ≥ its θ-quantile are kept")
    ax.set_ylabel("mean O / Y")
    ax.set_title(f"Confidence kept vs. map area ({int(curve['images'].max())} images)")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def draw_alpha(h: AlphaHistogram, s: AlphaSummary) -> Figure:
    """Left: box plot of the non-zero alphas without outliers; right: histogram of all non-zero alphas on
    the tanh(alpha - 0.5) axis, outliers included (log counts)."""
    fig = new_figure(9, 4)
    box, hist = fig.subplots(1, 2, width_ratios=[1, 2])
    box.bxp(
        [{"med": s.median, "q1": s.q1, "q3": s.q3, "whislo": s.whislo, "whishi": s.whishi, "label": "α ≠ 0"}],
        showfliers=False,
    )
    box.set_title("non-zero α, outliers removed", fontsize=9)
    box.set_ylabel("α")
    edges = bin_edges().numpy()
    counts = h.counts.cpu().numpy()
    hist.bar(edges[:-1], counts, width=np.diff(edges), align="edge")
    hist.set_yscale("log")
    hist.set_xlim(-1, 1)
    hist.set_xlabel("tanh(α − 0.5)")
    hist.set_ylabel("count")
    hist.set_title(f"all non-zero α (min {s.min:.3g}, max {s.max:.3g})", fontsize=9)
    fig.suptitle(
        f"Grad-CAM++ α: {s.nonzero:,} non-zero of {s.total:,}; "
        f"{100 * s.share_near_half:.1f}% in [{NEAR_HALF[0]}, {NEAR_HALF[1]}]"
    )
    return fig


def draw_ratio_boxes(ratios: dict[str, np.ndarray], subtitle: str) -> Figure:
    """Box plot per method pair of the per-image O_A / O_B, log scale, with a line at 1."""
    fig = new_figure(max(4.0, 2.2 * len(ratios)), 4)
    ax = fig.subplots()
    if ratios:
        ax.boxplot(list(ratios.values()), tick_labels=list(ratios), flierprops={"markersize": 3})
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("O_A / O_B per image")
    ax.set_title(f"Relative performance per image\n{subtitle}", fontsize=9)
    return fig


def draw_drop_dist(drops: dict[str, np.ndarray]) -> Figure:
    """Left: histogram of the per-image drop per method; right: box plots with the mean (avg drop) marked."""
    fig = new_figure(10, 4)
    hist, box = fig.subplots(1, 2)
    bins = np.linspace(0, 1, 21)
    for m, d in drops.items():
        hist.hist(d, bins=bins, histtype="step", lw=1.5, label=m)
    hist.set_xlabel("drop max(0, Y − O) / Y")
    hist.set_ylabel("images")
    hist.set_title("per-image drop", fontsize=9)
    hist.legend()
    box.boxplot(list(drops.values()), tick_labels=list(drops), showmeans=True)
    box.set_ylabel("drop")
    box.set_title("per method (triangle: mean = Average drop / 100)", fontsize=9)
    return fig


def draw_mean_curves(table: pd.DataFrame) -> Figure:
    """One panel per metric (insertion, deletion, ROAD MoRF / LeRF): mean score against the fraction of
    pixels changed, one line per method (columns metric, method, x, mean, images)."""
    metrics = list(dict.fromkeys(table["metric"]))
    fig = new_figure(4.2 * len(metrics), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, metric in zip(axes, metrics):
        part = table[table["metric"] == metric]
        for method, line in part.groupby("method", sort=False):
            ax.plot(line["x"], line["mean"], marker="." if len(line) < 30 else None, label=str(method))
        ax.set_xlabel(curve_of(metric).axis)
        ax.set_ylabel("mean score of the target")
        ax.set_title(f"{metric} ({int(part['images'].max())} images)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig
