"""Markdown tables whose cells cannot break them: a `|` in a method name (a `{name, method}` entry may hold
any text) would start a new column in every table of summary.md and report.md."""

from __future__ import annotations

import pandas as pd


def escape_pipes(v: object) -> object:
    """`v` with each `|` escaped as `\\|` (GitHub-flavoured Markdown's escape in a table); other values unchanged."""
    return v.replace("|", "\\|") if isinstance(v, str) else v


def markdown_table(df: pd.DataFrame) -> str:
    """`df` as a Markdown pipe table (pandas' to_markdown) with `|` escaped in its labels, header and cells."""
    safe = df.map(escape_pipes).rename(index=escape_pipes, columns=escape_pipes)
    safe.index.name = escape_pipes(df.index.name)
    return safe.to_markdown()
