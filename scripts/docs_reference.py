"""mkdocs hook: the reference pages, generated at build time from the config models and the registries.

Nothing generated is committed, so the pages cannot fall out of date: `reference/config.md` walks the pydantic
models of camexp/config.py (and the settings model each per-batch metric declares); `reference/methods.md`,
`metrics.md` and `analyses.md` are the listings `camexp methods`, `camexp metrics` and `camexp analyses` print
(camexp/report/listings.py, one source of truth); `layouts.md` and `datasets.md` read the layout and data set
kind registries. mkdocs.yml names this file under `hooks:`; `pages()` is what tests/project/test_docs.py reads too.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

DOCS = Path(__file__).resolve().parents[1] / "docs"
GENERATED = "This page is generated when the site is built (`make docs`, scripts/docs_reference.py) from"


def _cell(text: object) -> str:
    """Text safe inside one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|") or "-"


def _table(header: list[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- config keys ------------------------------------------------------------------------------------------------


def _type(annotation: Any) -> str:
    """A field's type as a user writes it in YAML terms (`int | None`, `'logit' | 'softmax'`)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type(a) for a in args)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (list, tuple):
        return f"list[{', '.join(_type(a) for a in args if a is not Ellipsis)}]"
    if origin is dict:
        return f"mapping {_type(args[0])} -> {_type(args[1])}" if args else "mapping"
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "section"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: Any) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = info.default_factory() if info.default is PydanticUndefined else info.default
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`" if value != [] and value != {} else f"`{value}`"


def _doc_first(obj: object) -> str:
    """The first paragraph of `obj`'s own docstring (a class's, never one it inherits, e.g. pydantic's)."""
    doc = inspect.cleandoc(obj.__dict__.get("__doc__") or "") if inspect.isclass(obj) else inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """`model` and every section below it, depth first, with its key path."""
    out = [(prefix, model)]
    for name, info in model.model_fields.items():
        for arg in (info.annotation, *typing.get_args(info.annotation)):
            if inspect.isclass(arg) and issubclass(arg, BaseModel) and arg.__name__ != "MethodSpec":
                out += _sections(arg, f"{prefix}{name}.")
    return out


def example_comments(guide: Path = DOCS / "guide" / "config.md") -> dict[str, str]:
    """The comments of the config guide's annotated example (its first ```yaml block), by key path: the meaning
    of a key whose field declares no description. A comment-only line continues the key above it."""
    text = guide.read_text(encoding="utf-8")
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last = ""
    for line in block.splitlines():
        code, _, comment = line.partition("  #")
        comment = comment.lstrip("# ").strip()
        m = re.match(r"^(\s*)([A-Za-z_][\w@]*):", code)
        if m is None:
            if last and comment and not code.strip():
                comments[last] += " " + comment
            continue
        indent = len(m.group(1))
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, m.group(2))]
        last = ".".join(k for _, k in stack)
        comments[last] = comment
    return {k: v for k, v in comments.items() if v}


def _bounds(info: Any) -> list[str]:
    """The field's numeric constraints (`Field(ge=1)` -> `>= 1`)."""
    signs = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
    return [f"{sign} {getattr(m, attr)}" for m in info.metadata for attr, sign in signs if hasattr(m, attr)]


def _section_doc(annotation: Any) -> str:
    """A section's meaning: its model's docstring (`dataset: DatasetConfig` -> where the images come from)."""
    for arg in (annotation, *typing.get_args(annotation)):
        if inspect.isclass(arg) and issubclass(arg, BaseModel):
            return _doc_first(arg)
    return ""


def _fields_table(model: type[BaseModel], prefix: str, comments: dict[str, str]) -> str:
    rows = [
        [
            f"`{prefix}{name}`",
            ", ".join([_type(info.annotation), *_bounds(info)]),
            _default(info),
            info.description or comments.get(f"{prefix}{name}") or _section_doc(info.annotation),
        ]
        for name, info in model.model_fields.items()
    ]
    return _table(["key", "type", "default", "meaning"], rows)


def config_page() -> str:
    from camexp.analyses import ANALYSES  # noqa: F401  (registers the analyses and their settings)
    from camexp.config import SETTINGS_KEYS, ExperimentConfig, MethodSpec
    from camexp.metrics.base import settings_owners

    parts = [
        "# Config keys",
        f"{GENERATED} the pydantic models of `camexp/config.py` (`ExperimentConfig` and its sections) and the "
        "settings model each per-batch metric and analysis declares. Types, defaults and constraints are the ones "
        "camexp validates; unknown keys are errors. The meaning is the field's own description, else the comment "
        "of the annotated example in the [config guide](../guide/config.md).",
    ]
    comments = example_comments()
    for prefix, model in _sections(ExperimentConfig):
        title = f"`{prefix.rstrip('.')}:`" if prefix else "Top level"
        doc = _doc_first(model)
        parts += [f"## {title}", *([doc] if doc else []), _fields_table(model, prefix, comments)]
    parts += [
        "## A method under a name of its own (`methods:` entries)",
        _doc_first(MethodSpec),
        _fields_table(MethodSpec, "methods[].", comments),
    ]
    parts += [
        "## Per-batch metric and analysis settings",
        "Each per-batch metric and analysis validates its own settings, read from the key it declares: camexp's "
        f"own read the top-level keys {', '.join(f'`{k}`' for k in SETTINGS_KEYS)}, others `settings: {{KEY: ...}}`.",
    ]
    seen: set[str] = set()
    owners = settings_owners()
    for entry in owners:
        if entry.key in seen or entry.settings is None:
            continue
        seen.add(entry.key)
        users = [e.name for e in owners if e.key == entry.key]
        key = entry.key if entry.key in SETTINGS_KEYS else f"settings.{entry.key}"
        doc = _doc_first(entry.settings)
        parts += [
            f"### `{key}:`",
            f"Read by {', '.join(f'`{u}`' for u in users)}." + (f" {doc}" if doc else ""),
            _fields_table(entry.settings, f"{key}.", comments),
        ]
    return "\n\n".join(parts) + "\n"


# --- the listings of camexp methods / metrics / analyses ------------------------------------------------------


def _listing_page(title: str, command: str, listing: Any, intro: str) -> str:
    from camexp.report.listings import Listing

    assert isinstance(listing, Listing)
    parts = [
        f"# {title}",
        f"{GENERATED} the registry, through the listing `{command}` prints (camexp/report/listings.py). "
        f"`{command} NAME` prints one entry in full; `{command} --format csv` every field. {intro}",
        _table(
            list(listing.compact),
            [
                [f"[`{r[listing.kind]}`](#{_anchor(r[listing.kind])})"] + [r[c] for c in listing.compact[1:]]
                for r in listing.rows
            ],
        ),
    ]
    for row in listing.rows:
        name = row[listing.kind]
        parts += [f"## `{name}` {{#{_anchor(name)}}}", _table(["field", "value"], [[k, v] for k, v in row.items()])]
        doc = listing.docs.get(name, "")
        if doc:
            parts.append(doc)
    return "\n\n".join(parts) + "\n"


def _anchor(name: str) -> str:
    """An entry's anchor: `+` spelled `p` (gradcam+ and gradcam++ stay apart), other punctuation `-`."""
    return "".join(c if c.isalnum() or c == "_" else "p" if c == "+" else "-" for c in name)


def methods_page() -> str:
    from camexp.explain.core import method_runs
    from camexp.explain.methods import METHODS
    from camexp.report.listings import method_listing

    return _listing_page(
        "Methods",
        "camexp methods",
        method_listing(method_runs(METHODS.names())),
        "`camexp methods CONFIG` gives the costs at that config's layer. The definitions in the project's "
        "notation: [Definitions, D2](../definitions.md#d2-methods).",
    )


def metrics_page() -> str:
    from camexp.report.listings import metric_listing

    return _listing_page(
        "Metrics",
        "camexp metrics",
        metric_listing(),
        "Record metrics: [Definitions, D4](../definitions.md#d4-faithfulness-metrics); per-batch metrics: "
        "[the field's other metrics](../guide/field-metrics.md).",
    )


def analyses_page() -> str:
    from camexp.report.listings import analysis_listing

    return _listing_page(
        "Analyses",
        "camexp analyses",
        analysis_listing(),
        "What they draw: [Analyses and figures](../guide/analyses.md).",
    )


# --- layouts and data set kinds ----------------------------------------------------------------------------------


def _entries_page(title: str, source: str, intro: str, rows: list[list[object]], header: list[str]) -> str:
    return f"# {title}\n\n{GENERATED} {source}. {intro}\n\n{_table(header, rows)}\n"


def layouts_page() -> str:
    from camexp.models.layout import LAYOUTS

    rows: list[list[object]] = [
        [f"`{name}`", e.summary, f"`{e.shape}`", _doc_first(e.auto_layer) or "-"] for name, e in LAYOUTS.items()
    ]
    return _entries_page(
        "Layouts",
        "the layout registry (`camexp/models/layout.py`, `LAYOUTS`)",
        "`model.layout: auto` picks one by its evidence; a plug-in layout is named by import path or the "
        "entry-point group `camexp.layouts` ([plug-ins](../guide/plugins.md#add-your-own-layout)).",
        rows,
        ["layout", "reads", "output shape", "automatic layer for the models it serves"],
    )


def datasets_page() -> str:
    from camexp.data import LOADERS

    def what(fn: Callable[..., Any]) -> str:
        module = inspect.getmodule(fn)
        return _doc_first(fn) or (_doc_first(module) if module else "")

    rows: list[list[object]] = [[f"`{name}`", what(fn), f"`{fn.__module__}`"] for name, fn in LOADERS.items()]
    return _entries_page(
        "Data set kinds",
        "the data set registry (`camexp/data/__init__.py`, `LOADERS`)",
        "`dataset.kind` names one; a plug-in kind is a function `(DatasetConfig) -> Listing` named by import path "
        "or the entry-point group `camexp.datasets`. Layouts on disk: [data sets](../guide/data.md).",
        rows,
        ["kind", "what it lists", "module"],
    )


def index_page() -> str:
    return (
        "# Reference\n\n"
        f"{GENERATED} camexp's own code, so it always describes the installed version.\n\n"
        + "\n".join(
            f"- [{title}]({Path(uri).name})" for uri, (title, _) in PAGES.items() if uri != "reference/index.md"
        )
        + "\n"
    )


PAGES: dict[str, tuple[str, Callable[[], str]]] = {
    "reference/index.md": ("Reference", index_page),
    "reference/config.md": ("Config keys", config_page),
    "reference/methods.md": ("Methods", methods_page),
    "reference/metrics.md": ("Metrics", metrics_page),
    "reference/analyses.md": ("Analyses", analyses_page),
    "reference/layouts.md": ("Layouts", layouts_page),
    "reference/datasets.md": ("Data set kinds", datasets_page),
}


def pages() -> dict[str, str]:
    """Every generated page: its path under docs/ and its Markdown."""
    return {uri: make() for uri, (_, make) in PAGES.items()}


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add the generated pages as virtual files (nothing is written to docs/)."""
    from mkdocs.structure.files import File

    for uri, content in pages().items():
        files.append(File.generated(config, uri, content=content))
    return files


def on_page_content(html: str, **kwargs: Any) -> str:
    """mkdocs hook: a `|` escaped inside a code span of a table cell (`md\\|csv`, as GitHub reads it) loses
    its backslash, which Python-Markdown's tables keep."""
    return re.sub(r"<code>[^<]*</code>", lambda m: m.group(0).replace("\\|", "|"), html)
