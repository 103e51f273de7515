"""The analysis entries and their registry: per-batch analyses beyond the faithfulness records (area curve,
alpha statistics, localization, record figures).

An analysis is one per-batch job (camexp/jobs.py) enabled by listing its name under `analyses:`. Its entry
carries its metadata as fields: the factory that builds the run's worker from the config (a class whose
`update(ctx)` sees every batch through the one `BatchContext` and whose `finish(out_dir)` writes figures and
returns Markdown lines), the CSV files the worker appends per batch (`files`, name -> columns; `{}` for none;
None: undeclared, so it runs in a single process only), the main-table `rows` its files give, the `read`er that
recomputes those rows from the files (so `camexp report table` shows them too), `per_image`: the reader of its rows'
per-image values in long form (image_id, method, metric, value[, weight]) for their bootstrap intervals, `check`:
what `camexp check` verifies of the built model before any image (rows it prints; a CamexpError when it cannot run),
`resume`: whether it may be added to a run that has recorded images (`any`: it reads the records alone; `refuse`:
it would cover only the images explained from now on), `cost`: what it costs per image beyond the run's own forward,
in words (forwards, backwards, re-explanations; `camexp analyses` lists it), and `settings`: the pydantic model of its
settings, in its own module, read from the config under `settings_key` (default: its name) and validated once per
run with the metrics' (camexp/metrics/base.py: `validate_settings`; the worker reads them with `settings_of(cfg,
key)` or `ctx.settings(key)`). A worker appends to `ctx.path(name)`: under torchrun the rank's own file, which rank 0
merges before `finish`; the runner also deletes them on a fresh start.

A plug-in analysis is a factory named by import path (`analyses: [mypkg.analyses:MyAnalysis]`) or entry point
(group `camexp.analyses`); its metadata is read off the factory's attributes of the same names once, when it
is registered (`per_batch = False` meaning `resume = "any"`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from camexp.metrics.base import SETTINGS_OWNERS, Resume
from camexp.metrics.batch import BatchContext
from camexp.registry import Registry, call_problem

if TYPE_CHECKING:
    import pandas as pd

    from camexp.config import ExperimentConfig
    from camexp.metrics import MetricResult, Row
    from camexp.models import LoadedModel


class Worker(Protocol):
    """What an analysis factory builds for a run."""

    def update(self, ctx: BatchContext) -> None: ...

    def finish(self, out_dir: Path) -> list[str]:
        """Write final files; return Markdown lines for summary.md (e.g. figure links)."""
        ...


# (run folder, the run's final per-image records, methods) -> rows/tables/notes for the summary
ResultReader = Callable[[Path, "pd.DataFrame", list[str]], "MetricResult"]
# (run folder, final records, methods) -> its rows' per-image values in long form, or None (its files are absent)
PerImageReader = Callable[[Path, "pd.DataFrame", list[str]], "pd.DataFrame | None"]
# (config, the built model) -> rows `camexp check` prints (label, value); raises CamexpError when the analysis
# cannot run on that model with those settings, before any image
ModelCheck = Callable[["ExperimentConfig", "LoadedModel"], list[tuple[str, str]]]


@dataclass(frozen=True)
class Analysis:
    """A registered analysis (see the module docstring for the fields)."""

    name: str
    make: Callable[[ExperimentConfig], Worker]
    files: dict[str, list[str]] | None = None
    rows: tuple[Row, ...] = ()
    read: ResultReader | None = None
    resume: Resume = "refuse"
    per_image: PerImageReader | None = None
    check: ModelCheck | None = None
    settings: type[BaseModel] | None = None
    settings_key: str = ""
    cost: str = ""

    @property
    def key(self) -> str:
        """The config key its settings are read under (default: its name)."""
        return self.settings_key or self.name


def worker_problem(worker: Any) -> str:
    """What a worker (or, for a class factory, the class) gets wrong about `Worker`: a missing `update` or
    `finish`, or one that cannot be called as camexp calls it; '' if nothing."""
    unbound = ("self",) if isinstance(worker, type) else ()
    for method, args in (("update", ("ctx",)), ("finish", ("out_dir",))):
        fn = getattr(worker, method, None)
        if not callable(fn):
            return f"has no method {method}({args[0]}) (a worker needs update(ctx) and finish(out_dir))"
        if problem := call_problem(fn, *unbound, *args):
            return problem
    return ""


def _as_analysis(name: str, obj: Any) -> Analysis:
    """A plug-in analysis, its contract checked before the first image: a factory callable as (config), for a
    class factory the worker's `update` and `finish` (a function factory's worker is checked once built), and
    its `read` and `per_image` readers callable as (run_dir, records, methods), its `check` as (config, loaded)."""
    make = obj.make if isinstance(obj, Analysis) else obj
    if not callable(make):
        raise TypeError(
            f"it is of type {type(obj).__name__}, not an analysis factory: a class (or function) (config) -> "
            "a worker with update(ctx) and finish(out_dir)"
        )
    entry = (
        obj
        if isinstance(obj, Analysis)
        else Analysis(
            name,
            obj,
            files=getattr(obj, "files", None),
            rows=tuple(getattr(obj, "rows", ())),
            read=getattr(obj, "read", None),
            per_image=getattr(obj, "per_image", None),
            check=getattr(obj, "check", None),
            cost=getattr(obj, "cost", ""),
            resume="any" if getattr(obj, "per_batch", True) is False else "refuse",
            settings=getattr(obj, "settings", None),
            settings_key=getattr(obj, "settings_key", ""),
        )
    )
    readers = [call_problem(r, "run_dir", "records", "methods") for r in (entry.read, entry.per_image) if r]
    readers += [call_problem(entry.check, "config", "loaded")] if entry.check else []
    problem = call_problem(make, "config") or (worker_problem(make) if isinstance(make, type) else "")
    if problem := problem or next(filter(None, readers), ""):
        raise TypeError(problem)
    return entry


ANALYSES: Registry[Analysis] = Registry("analysis", _as_analysis, group="camexp.analyses")
SETTINGS_OWNERS.append(ANALYSES)  # its settings are validated once per run with the metrics' (validate_settings)


def analysis(
    name: str,
    files: dict[str, list[str]],
    *,
    rows: tuple[Row, ...] = (),
    read: ResultReader | None = None,
    resume: Resume = "refuse",
    per_image: PerImageReader | None = None,
    check: ModelCheck | None = None,
    settings: type[BaseModel] | None = None,
    settings_key: str = "",
    cost: str = "",
) -> Callable[[Callable[[ExperimentConfig], Worker]], Callable[[ExperimentConfig], Worker]]:
    """Register the factory it decorates as analysis `name` with its metadata (see `Analysis`)."""

    def register(make: Callable[[ExperimentConfig], Worker]) -> Callable[[ExperimentConfig], Worker]:
        entry = Analysis(name, make, files, rows, read, resume, per_image, check, settings, settings_key, cost)
        ANALYSES.register(name, entry)
        return make

    return register
