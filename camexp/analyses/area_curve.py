"""`area_curve` (poster Fig. 6): confidence kept as the explanation map keeps less of the image.

For θ in 0, 0.1, ..., 1.0 and each image's normalised map L, keep the pixels with L >= q_θ, the θ-quantile
of that image's L (torch.quantile, linear interpolation), and feed E_θ = (L * 1[L >= q_θ]) * I to the model.
θ = 0 keeps every pixel, so E_0 = E and O_0 is the run's own O; θ = 1.0 keeps only the pixels where L
reaches its maximum (at least one). A constant map (normalised to zeros) gives a black E_θ at every θ.
The plot is mean O_θ / Y per method against θ; `kept` records the fraction of pixels kept (ties at the
quantile, e.g. the many zeros of a ReLU map, can keep more than 1 - θ).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from camexp.analyses.base import analysis
from camexp.analyses.store import recorded_rows
from camexp.config import ExperimentConfig
from camexp.csvsafe import write_csv
from camexp.metrics.batch import BatchContext
from camexp.results import append_records

THETAS = tuple(i / 10 for i in range(11))
PER_IMAGE = "area_curve_per_image.csv"
CURVE = "area_curve.csv"
COLUMNS = ["index", "image_id", "method", "theta", "kept", "y", "o"]


def quantile_masks(maps: torch.Tensor, thetas: tuple[float, ...] = THETAS) -> torch.Tensor:
    """(B,H,W) maps -> (T,B,H,W) bool: pixels at or above each image's θ-quantile."""
    q = torch.quantile(maps.flatten(1).float(), torch.tensor(thetas, device=maps.device), dim=1)  # (T,B)
    return maps[None] >= q[:, :, None, None]


def curve(rows: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Per (method, θ): mean O/Y, mean kept fraction and the image count; methods in run order."""
    out = (
        rows.assign(ratio=rows["o"] / rows["y"])
        .groupby(["method", "theta"], sort=False)
        .agg(mean_o_over_y=("ratio", "mean"), kept=("kept", "mean"), images=("index", "nunique"))
        .reset_index()
    )
    out["method"] = pd.Categorical(out["method"], methods, ordered=True)
    return out.sort_values(["method", "theta"]).reset_index(drop=True)


class AreaCurve:
    """Per batch: T extra batched forwards of the M explanation images; per-image rows appended to a CSV."""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg

    def update(self, ctx: BatchContext) -> None:
        ex = ctx.explanation
        masks = {m: quantile_masks(ex.maps[m]) for m in ex.maps}
        frames = []
        for t, theta in enumerate(THETAS):
            kept_maps = {m: ex.maps[m] * masks[m][t] for m in ex.maps}
            o = ctx.explainer.scorer.explanations(ctx.x, kept_maps, ex.targets).cpu()
            for j, m in enumerate(ex.maps):
                frames.append(
                    pd.DataFrame(
                        {
                            "index": ctx.batch["index"].tolist(),
                            "image_id": ctx.batch["image_id"],
                            "method": m,
                            "theta": theta,
                            "kept": masks[m][t].float().mean((1, 2)).cpu().numpy(),
                            "y": ctx.y.cpu().numpy(),
                            "o": o[:, j].numpy(),
                        }
                    )
                )
        append_records(ctx.path(PER_IMAGE), pd.concat(frames, ignore_index=True), COLUMNS)

    def finish(self, out_dir: Path) -> list[str]:
        from camexp.analyses.plots import draw_area_curve
        from camexp.savefig import figure_link, save_figure

        rows = recorded_rows(out_dir, PER_IMAGE, COLUMNS, ["index", "method", "theta"])
        if rows.empty:
            return ["", f"area_curve: no per-image values in {PER_IMAGE} (enable the analysis before the run)."]
        table = curve(rows, self.cfg.method_names)
        write_csv(table, out_dir / CURVE, index=False, float_format="%.6f")
        save_figure(draw_area_curve(table), out_dir, "area_curve")
        return figure_link("Confidence kept vs. map area (poster Fig. 6)", "area_curve") + [
            "",
            f"Mean O/Y per θ in [{CURVE}]({CURVE}) ({rows['index'].nunique()} images); θ = 0 keeps every pixel "
            f"(E itself), θ = 1 only the pixels at the map's maximum.",
        ]


analysis("area_curve", {PER_IMAGE: COLUMNS}, cost=f"{len(THETAS)} x M forwards (M methods, one per θ)")(AreaCurve)
