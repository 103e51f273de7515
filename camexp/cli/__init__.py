"""The `camexp` command line: a thin Typer layer over config -> runner -> report, one module per kind of command
(run/check, report, train, figures, listings, study) and one error handler (`common.command`)."""

# Importing a module registers its commands, so this (unsorted) order is the order `camexp --help` lists them in.
from camexp.cli import run, report, train, figures, listings, study  # noqa: I001
from camexp.cli.common import app

__all__ = ["app", "figures", "listings", "main", "report", "run", "study", "train"]


def main() -> None:
    app()
