"""What every `camexp` command shares: the root Typer app, the consoles, and the one handler that turns a
user's mistake (a CamexpError) into one red line and exit code 2."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from camexp.errors import CamexpError

F = TypeVar("F", bound=Callable[..., Any])

# rich_markup_mode=None: click's help layout, which shows `--compare-paper` as a flag (Typer's rich panels
# print every flag as `--compare-paper <bool>`, as if it took a value).
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Benchmark CAM methods (CAM, Grad-CAM, Grad-CAM+, Grad-CAM++, ...) the Grad-CAM++ paper's way.",
)
console = Console()
err_console = Console(stderr=True)


def group(help: str) -> typer.Typer:
    """A sub-command group (`camexp study ...`, `camexp report ...`) laid out like the root app."""
    return typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, help=help)


def fail(e: CamexpError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def command(parent: typer.Typer = app, name: str | None = None) -> Callable[[F], F]:
    """Register a command on `parent` whose CamexpErrors become `fail`'s one line: the one error handler."""

    def register(fn: F) -> F:
        @functools.wraps(fn)
        def handled(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except CamexpError as e:
                fail(e)

        parent.command(name)(handled)
        return fn

    return register


def warn(lines: list[str]) -> None:
    """Warnings on stderr, one per line."""
    for w in lines:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)


def plain(text: str) -> None:
    """Markdown source or other text as it is: rich's rendering would cut wide tables in a narrow terminal."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def comma(values: str) -> list[str]:
    """'a, b,' -> ['a', 'b']."""
    return [v.strip() for v in values.split(",") if v.strip()]


def wrote(*paths: Path) -> None:
    err_console.print(f"wrote {', '.join(str(p) for p in paths)}", markup=False, soft_wrap=True)


def software_change_option(what: str, where: str) -> Any:
    """The `--allow-software-change` option of a command that adds to `what` (e.g. "a run folder"), which records
    the override in `where`."""
    return typer.Option(
        False,
        "--allow-software-change",
        help=f"add to {what} that other software (camexp source, torch, timm, uv.lock) wrote; recorded in {where} "
        "and shown by every report",
    )
