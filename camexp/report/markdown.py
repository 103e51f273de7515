"""Markdown whose text cannot break it. A `|` in a method name (a `{name, method}` entry may hold any text)
would start a new column in every table of summary.md and report.md; `<img src=x onerror=...>` in a run,
method or rater name would be live HTML wherever the Markdown is rendered (GitHub, an editor's preview, a
docs site). So `&` and `<` are HTML-escaped (Markdown renders the entities as the characters; a `>` cannot
open a tag, so "y > 0" stays as written), and `|` is escaped in table cells."""

from __future__ import annotations

from typing import Any

import pandas as pd


def markdown_text(text: str) -> str:
    """`text` with `&` and `<` as HTML entities (no tag or entity can start in it), for names and notes."""
    return text.replace("&", "&amp;").replace("<", "&lt;")


def escape_cell(v: object) -> object:
    """A table cell's text HTML-escaped (`markdown_text`) with each `|` escaped as `\\|` (GitHub-flavoured
    Markdown's escape in a table); other values unchanged."""
    return markdown_text(v).replace("|", "\\|") if isinstance(v, str) else v


def markdown_table(df: pd.DataFrame, **options: Any) -> str:
    """`df` as a Markdown pipe table (pandas' to_markdown, `options` passed on to tabulate) with its labels,
    header and cells escaped (`escape_cell`)."""
    safe = df.map(escape_cell).rename(index=escape_cell, columns=escape_cell)
    safe.index.name = escape_cell(df.index.name)
    return safe.to_markdown(**options)
