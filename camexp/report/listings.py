"""`camexp methods`, `camexp metrics` and `camexp analyses`: what each registry holds, from its entries' metadata.

Each listing is one compact table (the name and three short columns) whose names never wrap, so that it stays
readable on an 80-column terminal, plus the full entry of one name (`camexp methods NAME`: every field and
the definition from its docstring). `--format csv` writes every field of every entry.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from camexp.analyses import ANALYSES
from camexp.errors import CamexpError
from camexp.explain.core import MethodRun
from camexp.metrics import METRICS, MetricEntry


@dataclass
class Listing:
    """One registry's entries as rows of text fields (the name first); `compact` names the fields of the
    compact table, `docs` holds each entry's definition (its docstring) for the full entry."""

    kind: str
    rows: list[dict[str, str]]
    compact: tuple[str, ...]
    docs: dict[str, str] = field(default_factory=dict)

    @property
    def header(self) -> list[str]:
        return list(self.rows[0]) if self.rows else [self.kind]

    def entry(self, name: str) -> dict[str, str]:
        """The row called `name`, or one error naming the known names."""
        for row in self.rows:
            if row[self.kind] == name:
                return row
        raise CamexpError(f"unknown {self.kind} {name!r}; known: {[row[self.kind] for row in self.rows]}")


def _yes(flag: object) -> str:
    return "yes" if flag else "no"


def _doc(obj: object) -> str:
    """An entry's docstring as paragraphs (its own, not an inherited one), '' when it has none."""
    doc = inspect.getdoc(obj) or ""
    return "\n\n".join(" ".join(p.split()) for p in doc.split("\n\n") if p.strip())


def method_listing(
    runs: list[MethodRun], channels: int | None = None, where: str = "K = the layer's channels"
) -> Listing:
    """Methods (or a config's settings of them) with their cost for a layer of `channels` channels."""
    cost = f"cost per image ({where})"
    rows = [
        {
            "method": r.name if r.name == r.method.name else f"{r.name} ({r.method.name})",
            "needs": ", ".join(
                n for n, on in (("gradient", r.method.needs_grad), ("model calls", r.method.needs_model)) if on
            )
            or "A only",
            "needs gradient": _yes(r.method.needs_grad),
            "calls the model": _yes(r.method.needs_model),
            "class-agnostic": _yes(r.method.class_agnostic),
            cost: r.cost(channels),
            "parameters": ", ".join(f"{k}={v}" for k, v in r.resolved.items()),
            "what it is": r.method.summary,
            "source": r.method.source,
        }
        for r in runs
    ]
    docs = {row["method"]: _doc(r.method.fn) for row, r in zip(rows, runs, strict=True)}
    return Listing("method", rows, ("method", "needs", cost, "source"), docs)


def _metric_needs(entry: MetricEntry) -> str:
    needs = [n for n, on in (("true labels", entry.needs_labels), ("boxes", entry.needs_boxes)) if on]
    return ", ".join(needs) or "-"


def metric_listing() -> Listing:
    """Every registered metric: what it needs, when it is computed, what it is, its table rows, settings and cost
    per image (the compact table: what it needs, costs and is)."""
    rows, docs = [], {}
    for name, entry in METRICS.items():
        per_batch = entry.source == "batch"
        doc = _doc(entry.compute)
        labels = "; ".join(row.label for row in entry.rows)
        settings = entry.settings_key if entry.settings is not None else ""
        rows.append(
            {
                "metric": name,
                "needs": _metric_needs(entry),
                "computed": "per batch, during the run"
                + (" (more model calls)" if entry.model_calls else " (maps only)")
                if per_batch
                else "from the records (per_image.csv), any time",
                "what it is": entry.summary or labels or doc.split(". ")[0] or "-",
                "table rows": labels or "-",
                "settings": settings or "-",
                "cost per image": entry.cost or "-",
            }
        )
        docs[name] = doc
    return Listing("metric", rows, ("metric", "needs", "cost per image", "what it is"), docs)


def analysis_listing() -> Listing:
    """Every registered analysis: whether it works per batch, its files, what it is and its cost per image. No
    "needs" column: an analysis entry declares no needs (a metric's needs_labels / needs_boxes); each analysis
    checks its own."""
    rows, docs = [], {}
    for name, entry in ANALYSES.items():
        doc = _doc(entry.make)
        rows.append(
            {
                "analysis": name,
                "computed": "per batch, during the run"
                if entry.resume == "refuse"
                else "from the records, when the run ends",
                "what it is": getattr(entry.make, "title", "") or doc.split(". ")[0],
                "files": ", ".join(entry.files) if entry.files else "-",
                "summary rows": _yes(entry.rows or entry.read),
                "cost per image": entry.cost or "-",
            }
        )
        docs[name] = doc
    return Listing("analysis", rows, ("analysis", "computed", "cost per image", "what it is"), docs)


def compact_table(listing: Listing) -> Table:
    """The compact table: names whole on one line (the other columns wrap)."""
    table = Table(show_lines=False, header_style="bold")
    names = [row[listing.kind] for row in listing.rows]
    table.add_column(listing.compact[0], no_wrap=True, min_width=max(map(len, names), default=0))
    for column in listing.compact[1:]:
        table.add_column(column, overflow="fold")
    for row in listing.rows:
        table.add_row(*(Text(row[c]) for c in listing.compact))
    return table


def entry_view(listing: Listing, name: str) -> RenderableType:
    """Every field of one entry, then its definition."""
    row = listing.entry(name)
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in row.items():
        table.add_row(key, Text(value or "-"))
    doc = listing.docs.get(name, "")
    return Group(table, Text(""), Text(doc)) if doc else table
