"""`camexp methods|metrics|analyses [NAME] [--format]`: what each registry holds, compact or one entry in full."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from camexp.cli import common
from camexp.cli.common import app, command
from camexp.errors import CamexpError

if TYPE_CHECKING:
    from camexp.report.listings import Listing


@command()
def methods(
    target: str | None = typer.Argument(
        None,
        metavar="NAME|CONFIG",
        help="a method's name: its full entry; or an experiment YAML: costs "
        "for its model and layer, and its own method settings",
    ),
    fmt: str = typer.Option("table", "--format", help="table | csv (every field)"),
) -> None:
    """List every method: what it needs, what it costs per image beyond the shared pass, and its source.

    With a NAME, the method's full entry (parameters, what it is, its definition). With a CONFIG, costs are for
    its model's layer (K channels) and each configured setting (a `{name, method, params}` entry) is listed
    too, under its own name."""
    from camexp.explain.core import method_runs
    from camexp.explain.methods import METHODS
    from camexp.report.listings import method_listing

    runs = method_runs(METHODS.names())
    if target is None or target in METHODS:
        _show(method_listing(runs), target, fmt)
        return
    if not Path(target).exists() and Path(target).suffix not in (".yaml", ".yml"):
        raise CamexpError(f"{target!r} is neither a method (known: {METHODS.names()}) nor an experiment YAML")
    from camexp.experiment import load_experiment
    from camexp.models import build_model

    cfg = load_experiment(Path(target))
    loaded = build_model(cfg.model)
    channels = loaded.maps_shape[0]
    runs += [r for r in method_runs(cfg.method_specs()) if r.name != r.method.name or r.params]
    _show(method_listing(runs, channels, f"{cfg.model.name} at {loaded.layer_name}: K = {channels}"), None, fmt)


def _listing_command(name: str, builder: str, what: str, doc: str) -> None:
    """Register `camexp NAME [ENTRY] [--format]`: the listing that camexp.report.listings.`builder` makes."""

    def listing(
        entry: str | None = typer.Argument(None, metavar="NAME", help=f"{what}'s name: its full entry"),
        fmt: str = typer.Option("table", "--format", help="table | csv (every field)"),
    ) -> None:
        from camexp.report import listings

        _show(getattr(listings, builder)(), entry, fmt)

    listing.__doc__ = doc
    command(app, name)(listing)


_listing_command(
    "metrics",
    "metric_listing",
    "a metric",
    "List every metric: what it needs, whether it is computed from the records or per batch, what it is.",
)
_listing_command(
    "analyses",
    "analysis_listing",
    "an analysis",
    "List every analysis: what it needs, whether it works per batch or from the records, what it is.",
)


def _show(listing: Listing, name: str | None, fmt: str) -> None:
    """A listing as the compact table, one entry in full (`name`), or CSV of every field."""
    import csv
    import sys

    from camexp.csvsafe import neutralise
    from camexp.report.listings import compact_table, entry_view

    if fmt not in ("table", "csv"):
        raise CamexpError(f"--format must be 'table' or 'csv', not {fmt!r}")
    if fmt == "csv":
        rows = [listing.entry(name)] if name else listing.rows
        writer = csv.writer(sys.stdout)
        writer.writerows([listing.header, *([neutralise(row[h]) for h in listing.header] for row in rows)])
    else:
        common.console.print(entry_view(listing, name) if name else compact_table(listing))
