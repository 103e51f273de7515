"""A run's summary on the terminal, with method names kept whole on any width (80 columns included).

Rendering summary.md's Markdown tables lets the terminal cut every column to fit, which turned gradcam+,
gradcam++, gradcam++all and gradcam++orig into the same `gradca…`. Here method names never wrap or shrink;
metric labels wrap instead, and a table that still does not fit is turned: the main table is transposed
(methods as rows), a method x method table gets numbered columns.
"""

from __future__ import annotations

import re

import pandas as pd
from rich.console import Console, Group, RenderableType
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from camexp.report.tables import RunSummary, cells, fmt_cell, header_lines, summary_tables, with_paper

BOLD = re.compile(r"\*\*(.+?)\*\*")  # Markdown bold, as uncertainty.marked_cell writes the best value


def print_summary(summary: RunSummary, console: Console, compare_paper: bool = False) -> None:
    """The summary of `summary.md`, laid out for `console`'s width."""
    header = header_lines(summary, compare_paper)
    parts: list[RenderableType] = [Markdown("\n\n".join(line for line in header if line))]
    main = (with_paper(summary) if compare_paper else cells(summary)).map(fmt_cell)
    parts.append(fit(main, console, labels_are_methods=False))
    if summary.stats is not None:
        parts.append(Markdown(summary.stats.legend()))
    for title, table in summary_tables(summary, compare_paper):
        parts += [Markdown(f"### {title}"), fit(table.map(lambda v: fmt_cell(v, 3)), console, labels_are_methods=True)]
    notes = [*summary.result.notes, *summary.extra_notes]
    if notes:
        parts.append(Markdown("\n\n".join(notes)))
    console.print(Group(*parts))


def fit(df: pd.DataFrame, console: Console, labels_are_methods: bool) -> RenderableType:
    """`df` as a table whose method names (the columns; the row labels too when `labels_are_methods`) and values
    stay whole: as it is if that fits `console`, else transposed (row labels that may wrap become headers) or,
    for a method x method table, with its columns numbered as its rows; what still does not fit is split into
    tables of as many columns as fit, each repeating the row labels."""
    table = _table(df, labels_are_methods)
    if _narrowest(table) <= console.width:
        return table
    if not labels_are_methods:
        methods = max(len(str(m)) for m in df.columns)
        share = (console.width - methods - 3 * (len(df) + 1)) // max(len(df), 1)  # width left per metric
        turned = _table(df.T.rename_axis("method"), labels_are_methods=True, header_width=min(share, 24))
        return turned if _narrowest(turned) <= console.width else _split(df, console.width, labels_are_methods)
    numbered = df.copy()
    numbered.columns = [str(i + 1) for i in range(df.shape[1])]
    if list(df.index) == list(df.columns):
        numbered.index = [f"{i + 1} {name}" for i, name in enumerate(df.index)]
    return _split(numbered, console.width, labels_are_methods=True)


def _split(df: pd.DataFrame, width: int, labels_are_methods: bool) -> RenderableType:
    """`df` as consecutive tables of as many of its columns as fit `width` (at least one each), so that no
    column is squeezed: the row labels repeat in each."""
    groups: list[list[int]] = [[]]
    for j in range(df.shape[1]):
        if groups[-1] and _narrowest(_table(df.iloc[:, groups[-1] + [j]], labels_are_methods)) > width:
            groups.append([])
        groups[-1].append(j)
    tables = [_table(df.iloc[:, g], labels_are_methods) for g in groups]
    return tables[0] if len(tables) == 1 else Group(*tables)


def _narrowest(table: Table) -> int:
    """Width of `table` with every column at its minimum: padding 1 + 1 per column, one rule between columns."""
    return sum(c.min_width or 1 for c in table.columns) + 3 * len(table.columns) - 1


def _table(df: pd.DataFrame, labels_are_methods: bool, header_width: int | None = None) -> Table:
    """Row labels first; a column whose text must stay whole gets that text's width as its minimum. With
    `header_width`, column headers (metric labels) wrap within that width, or the width of the values."""
    table = Table(show_edge=False, header_style="bold")
    labels = [str(v) for v in df.index]
    table.add_column(
        Text(str(df.index.name or "")),
        no_wrap=labels_are_methods,
        min_width=max(map(len, labels), default=0) if labels_are_methods else 12,
    )
    for col in df.columns:
        widest = max((len(styled(str(v))) for v in df[col]), default=0)
        if header_width is not None:
            width = max(widest, header_width)
            table.add_column(Text(str(col), overflow="fold"), justify="right", width=width, min_width=width)
        else:
            table.add_column(Text(str(col)), justify="right", no_wrap=True, min_width=max(widest, len(str(col))))
    for label, row in zip(labels, df.itertuples(index=False)):
        table.add_row(Text(label), *(styled(str(v)) for v in row))
    return table


def styled(cell: str) -> Text:
    """A table cell as terminal text: its Markdown bold (`**19.55**`, the best method) in the terminal's bold,
    everything else literal (a `[...]` in a name or an interval is text, never rich markup)."""
    text = Text()
    for i, part in enumerate(BOLD.split(cell)):
        text.append(part, style="bold" if i % 2 else "")
    return text
