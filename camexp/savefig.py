"""Writing figures: every figure is a PNG (to look at, linked from Markdown) and a PDF (for papers).

Figures are built as bare `matplotlib.figure.Figure` objects, never through pyplot, so no GUI backend or
global state is involved (Agg renders the PNG) and drawing functions can return them to tests.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write `stem`.png and `stem`.pdf into `out_dir`; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight", pad_inches=0.05)
    return paths


def figure_link(title: str, stem: str) -> list[str]:
    """Markdown lines embedding `stem`.png (relative to the run folder) with a link to its PDF."""
    return ["", f"### {title}", "", f"![{title}]({stem}.png)", "", f"PDF: [{stem}.pdf]({stem}.pdf)"]
