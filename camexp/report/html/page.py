"""The site's HTML, written by Python: every name, number and note goes through `esc` (names with HTML in them
are shown as text), Markdown through markdown-it with raw HTML off. No script or style from outside the site:
the pages load only ../assets/site.css and site.js (copied from this package) and their own data files."""

from __future__ import annotations

import math
from html import escape
from importlib import resources
from pathlib import Path

import pandas as pd
from markdown_it import MarkdownIt

ASSETS = ("site.css", "site.js")  # copied from camexp/report/html/assets/ into OUT/assets/
_MARKDOWN = MarkdownIt("js-default")  # CommonMark + tables, raw HTML shown as text


def esc(text: object) -> str:
    """`text` as HTML text or attribute value: `&`, `<`, `>` and both quotes escaped."""
    return escape(str(text), quote=True)


def markdown_html(text: str) -> str:
    """A camexp report's Markdown as HTML (its tables too); raw HTML in it stays text."""
    return _MARKDOWN.render(text)


def num(v: float) -> str:
    """A number for a `data-v` attribute: every digit (repr), '' for a missing one (sorted last)."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def document(title: str, body: str, root: str, scripts: tuple[str, ...] = ()) -> str:
    """A whole page: `root` is the relative path to the site's top ('' or '../../'), `scripts` the data files
    the page loads before site.js (relative to the page)."""
    tags = "".join(f'<script src="{esc(s)}"></script>' for s in (*scripts, f"{root}assets/site.js"))
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="stylesheet" href="{root}assets/site.css"></head>\n'
        f'<body><header><a href="{root}index.html">camexp report</a></header>'
        f"<main>\n{body}\n</main>{tags}</body></html>\n"
    )


def table(frame: pd.DataFrame) -> str:
    """A DataFrame of text cells (its index as the first column) as an HTML table, escaped, sortable by a click
    on a header (site.js)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in [frame.index.name or "", *frame.columns])
    rows = "".join(
        f"<tr><th>{esc(label)}</th>{''.join(f'<td>{esc(v)}</td>' for v in row)}</tr>" for label, row in frame.iterrows()
    )
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def interval_svg(value: float, lo: float, hi: float, scale: tuple[float, float]) -> str:
    """An interval plot of one cell: a line from `lo` to `hi` and a dot at `value`, on the axis `scale` shared
    by the column (so that cells of one run compare by eye); '' when the value is missing."""
    if not math.isfinite(value):
        return ""
    a, b = scale
    span = (b - a) or 1.0

    def x(v: float) -> float:
        return round(4 + 112 * (v - a) / span, 1)

    bar = f'<line x1="{x(lo)}" x2="{x(hi)}" y1="7" y2="7"/>' if math.isfinite(lo) and math.isfinite(hi) else ""
    return (
        f'<svg class="iv" width="120" height="14" viewBox="0 0 120 14" aria-hidden="true">'
        f'<line class="axis" x1="4" x2="116" y1="13" y2="13"/>{bar}<circle cx="{x(value)}" cy="7" r="3"/></svg>'
    )


def copy_assets(out: Path) -> None:
    """The site's own style and script into OUT/assets/ (written where they differ from the ones camexp ships)."""
    folder = out / "assets"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ASSETS:
        data = resources.files("camexp.report.html").joinpath("assets").joinpath(name).read_bytes()
        if not (folder / name).exists() or (folder / name).read_bytes() != data:
            (folder / name).write_bytes(data)
