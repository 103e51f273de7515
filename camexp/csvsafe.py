"""Every CSV camexp writes goes through here, so that no cell runs as a spreadsheet formula.

Method names, run names and image ids (file names) reach the CSVs as they are, and a spreadsheet runs a cell
that starts with `=`, `+`, `-`, `@`, a tab or a carriage return as a formula (`=cmd|' /C calc'!A0`). As
OWASP advises for CSV injection, such a text cell is written with a leading single quote, which a
spreadsheet shows as text. Only text is touched: numbers (-0.5 in a float column) are written as they are,
and so is text that is a plain decimal number ("-0.50": a spreadsheet reads it as that number, no formula).

camexp reads its own per-image files back (records, resume, reports): `restore` undoes the quote exactly.
So that text which itself starts with quotes before a formula character (`'=x`) reads back unchanged too,
it also gets one more quote: the quote is added to, and removed from, exactly the text matching `'*[=+-@\\t\\r]`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

RISKY = re.compile(r"'*[=+\-@\t\r]")  # what a spreadsheet would run, behind any quotes
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def neutralise(v: object) -> object:
    """Text that a spreadsheet would run as a formula with a leading `'`; any other value as it is."""
    return "'" + v if isinstance(v, str) and RISKY.match(v) and not NUMBER.fullmatch(v) else v


def restore(v: object) -> object:
    """`neutralise` undone: the text as it was before writing."""
    return v[1:] if isinstance(v, str) and v.startswith("'") and RISKY.match(v) else v


def _is_text(dtype: Any) -> bool:
    """Whether a column or index of `dtype` may hold text (object: also text mixed with numbers or NaN)."""
    return pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)


def _labels(index: pd.Index, cell: Any) -> pd.Index:
    """`index` with `cell` applied to its text labels (each level of a MultiIndex) and names."""
    if isinstance(index, pd.MultiIndex):
        return index.set_levels([_labels(level, cell) for level in index.levels]).set_names(
            [cell(n) for n in index.names]
        )
    mapped = index.map(cell) if _is_text(index.dtype) else index
    return mapped.set_names([cell(n) for n in index.names])


def _cells(df: pd.DataFrame, cell: Any) -> pd.DataFrame:
    """`df` with `cell` applied to the text of its object columns, its column labels and its index."""
    out = df.copy()
    for i, dtype in enumerate(df.dtypes):
        if _is_text(dtype):
            out.isetitem(i, df.iloc[:, i].map(cell))
    out.columns = _labels(df.columns, cell)
    out.index = _labels(df.index, cell)
    return out


def csv_text(df: pd.DataFrame, **options: Any) -> str:
    """`df.to_csv(**options)` with every formula-like text cell, label and header neutralised."""
    return _cells(df, neutralise).to_csv(**options)


def write_csv(df: pd.DataFrame, path: Path, **options: Any) -> None:
    """`csv_text` into `path`."""
    path.write_text(csv_text(df, **options), encoding="utf-8")


def restored(df: pd.DataFrame) -> pd.DataFrame:
    """A frame read from a CSV camexp wrote, its text as it was before `neutralise`."""
    return _cells(df, restore)
