"""Mean perturbation curves per method (`perturbation.curves: true`), from per_image_curves.csv alone.

Each curve's points sit at the fractions of pixels its metric's entry declares (`Curve`: insertion and deletion
at changed fractions s / S, s = 0..S; ROAD at the removed fractions p / 100 of `road.percentiles`). The mean is
over the run's final images, per (metric, method).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from camexp.config import ExperimentConfig
from camexp.csvsafe import write_csv
from camexp.metrics import curve_of
from camexp.results import CURVE_COLUMNS, CURVES, final_metric_rows

TABLE = "perturbation_curves.csv"
STEM = "perturbation_curves"


def mean_curves(rows: pd.DataFrame, cfg: ExperimentConfig) -> pd.DataFrame:
    """Long table (metric, method, x, mean, images) of the mean curve of every (metric, method)."""
    frames = []
    for (metric, method), part in rows.groupby(["metric", "method"], sort=False):
        points = np.array([[float(v) for v in p.split()] for p in part["points"]])
        x = curve_of(metric).x(cfg, points.shape[1])
        frames.append(
            pd.DataFrame({"metric": metric, "method": method, "x": x, "mean": points.mean(0), "images": len(points)})
        )
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["metric", "method", "x", "mean", "images"])
    )


def write_curves(out_dir: Path, cfg: ExperimentConfig, images: set[int]) -> list[str]:
    """perturbation_curves.csv and its figure from the run's curves; Markdown lines for summary.md."""
    from camexp.analyses.plots import draw_mean_curves
    from camexp.savefig import figure_link, save_figure

    rows = final_metric_rows(out_dir / CURVES, images, cfg.method_names, CURVE_COLUMNS)
    if rows.empty:
        return []
    table = mean_curves(rows, cfg)
    write_csv(table, out_dir / TABLE, index=False, float_format="%.6f")
    save_figure(draw_mean_curves(table), out_dir, STEM)
    return figure_link("Mean perturbation curves per method", STEM) + [
        "",
        f"Means in [{TABLE}]({TABLE}); every image's curve in [{CURVES}]({CURVES}).",
    ]
