"""`camexp explain`: per image, a grid of the original and, per method, the heatmap overlay and the
explanation map E = L * I (paper Fig. 4/5 layout); one row per backbone (report Fig. 1h)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from camexp.accel import disable_tf32, resolve_device
from camexp.data.images import load_rgb
from camexp.data.transforms import PixelTransform
from camexp.errors import CamexpError
from camexp.explain.gallery import ModelRow, explain_batch, model_configs, parse_methods, resolve_class
from camexp.models import build_model
from camexp.savefig import new_figure, save_figure

OVERLAY_ALPHA = 0.5


def overlay(image: torch.Tensor, cam: torch.Tensor, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Alpha blend of the jet-coloured map (H,W in [0,1]) over the image (3,H,W): (H,W,3) in [0,1]."""
    from matplotlib import colormaps

    heat = colormaps["jet"](cam.numpy())[..., :3]
    return (1 - alpha) * image.permute(1, 2, 0).numpy() + alpha * heat


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).clamp(0, 1).numpy()


def row_panels(row: ModelRow) -> list[tuple[str, np.ndarray]]:
    """(title, image) for every panel of a row: the original, then per method its overlay and E, or the
    single Guided Backprop x map image for `guided-` methods."""
    panels = [(f"{row.model}\n{row.class_name}: {row.confidence:.3g}", _hwc(row.image))]
    for p in row.panels:
        if p.guided is not None:
            panels.append((p.method, _hwc(p.guided)))
        else:
            panels += [
                (p.method, overlay(row.image, p.cam)),
                (f"E {p.method}\n{row.class_name}: {p.confidence:.3g}", _hwc(p.explanation)),
            ]
    return panels


def draw_explain_grid(rows: list[ModelRow]) -> Figure:
    """One row per model (all explaining the same image), columns as in `row_panels`."""
    grid = [row_panels(r) for r in rows]
    cols = max(len(g) for g in grid)
    fig = new_figure(2.3 * cols, 2.6 * len(rows))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, panels in enumerate(grid):
        for c, ax in enumerate(axes[r]):
            ax.set_axis_off()
            if c < len(panels):
                title, img = panels[c]
                ax.imshow(img)
                ax.set_title(title, fontsize=8)
    return fig


def explain_files(
    images: list[Path],
    *,
    model: str | None,
    models: str | None,
    weights: str,
    layer: str | None,
    methods: str,
    target_class: str | None,
    out: Path,
    device: str = "auto",
    confidence: str = "softmax",
) -> list[Path]:
    """Explain every image with every model and write one figure (PNG + PDF) per image into `out`, named
    explain_<file stem> (with a counter where two files share a stem).

    All images are decoded first, so a missing or corrupt file fails before any model is built.
    """
    if confidence not in ("softmax", "sigmoid"):
        raise CamexpError(f"--confidence must be 'softmax' or 'sigmoid' (multi-label heads), not {confidence!r}")
    names = parse_methods(methods)
    dev = resolve_device(device)
    disable_tf32(dev)
    cfgs = model_configs(model, models, weights, layer)
    pictures = [load_rgb(p) for p in images]
    rows: list[list[ModelRow]] = [[] for _ in images]
    for cfg in cfgs:
        loaded = build_model(cfg, dev)
        transform = PixelTransform(loaded.spec)
        x = torch.stack([transform(pic)[0] for pic in pictures]).to(dev)
        for i, row in enumerate(
            explain_batch(loaded, x, names, resolve_class(target_class, loaded), confidence, [p.stem for p in images])
        ):
            rows[i].append(row)
    stems = [p.stem for p in images]
    written = []
    for i, (stem, image_rows) in enumerate(zip(stems, rows)):
        unique = stem if stems.count(stem) == 1 else f"{stem}_{i}"
        written += save_figure(draw_explain_grid(image_rows), out, f"explain_{unique}")
    return written
