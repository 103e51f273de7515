"""Run folders as report commands see them: read-only, checked, and honest about how far a run got.

`camexp report table` must never modify a run folder, must not present half a run as a whole one, and must not
fall over (or report garbage) on a folder it did not write: a foreign run.json or records that two runs
wrote into is skipped with the reason, and the other runs are still reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from camexp.errors import CamexpError
from camexp.lock import read_owner_quietly
from camexp.metrics import METRICS
from camexp.report.markdown import markdown_text
from camexp.results import (
    BAD_IMAGES,
    RECORDS,
    RUN_JSON,
    STUDY_JSON,
    complete_lines,
    complete_records,
    conflicting_duplicate,
    parts,
    read_all_records,
    read_json,
)


@dataclass
class RunFolder:
    """A run folder's metadata and its records restricted to the images complete for every method."""

    path: Path
    meta: dict[str, Any]
    records: pd.DataFrame
    status: str | None  # None: the run is complete; else a sentence saying what is missing

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]

    @property
    def methods(self) -> list[str]:
        """The method names the records carry (a `{name, method, params}` entry records under its name)."""
        return [m if isinstance(m, str) else m["name"] for m in self.config["methods"]]


STUDY_REPORT = "study_report.md"  # a human-trust study folder (camexp/study) holds it beside STUDY_JSON


def find_studies(results_dir: Path) -> list[Path]:
    """Every human-trust study folder (holding study.json, from `camexp study make`) below `results_dir`:
    not runs, but `camexp report table` lists them beside the runs."""
    return sorted(p.parent for p in results_dir.rglob(STUDY_JSON))


def study_section(folder: Path) -> str:
    """A study folder's tally report (headings one level down), or a note that it is a study not yet tallied."""
    report = folder / STUDY_REPORT
    title = f"## Human-trust study: {markdown_text(str(folder))}"
    if not report.is_file():
        return (
            f"{title}\n\nA study (from `camexp study make`), not a run: no answers tallied "
            f"yet (`camexp study tally {folder} ANSWERS...`).\n"
        )
    lines = report.read_text().splitlines()[1:]
    return "\n".join([title, *("#" + line if line.startswith("#") else line for line in lines)]) + "\n"


def find_runs(results_dir: Path) -> list[Path]:
    """Every folder holding a run.json below `results_dir` (a run that has not recorded an image yet
    included), sorted."""
    return sorted(p.parent for p in results_dir.rglob(RUN_JSON))


T = TypeVar("T")


def read_runs(run_dirs: Iterable[Path], read: Callable[[Path], T]) -> tuple[list[tuple[Path, T]], list[str]]:
    """(folder, `read`(folder)) of each run folder, in order, and 'skipped FOLDER: why' (one line) for each that
    `read` failed on: every report skips a folder it cannot read and still reports the others. A CamexpError
    says why in its first line (a plug-in's traceback below it is for a run, not a report's list); any other
    error, e.g. from files a crashed run or a broken plug-in left half-made, is named by its type."""
    out: list[tuple[Path, T]] = []
    skipped: list[str] = []
    for run_dir in run_dirs:
        try:
            out.append((run_dir, read(run_dir)))
        except Exception as e:  # one folder a report cannot read never stops the others
            why = str(e).partition("\n")[0] if isinstance(e, CamexpError) else f"{type(e).__name__}: {e}"
            skipped.append(f"skipped {run_dir}: {why}")
    return out, skipped


def open_run(run_dir: Path) -> RunFolder:
    """Read a run folder without writing to it; a CamexpError says why it cannot be reported."""
    run = RunFolder(run_dir, _camexp_meta(run_dir / RUN_JSON), pd.DataFrame(), None)
    records = read_all_records(run_dir)
    if conflict := conflicting_duplicate(records):
        raise CamexpError(
            f"{run_dir / RECORDS}: {conflict}: records of two runs were mixed in this folder; rerun it with --fresh"
        )
    run.records = complete_records(records, run.methods).reset_index(drop=True)
    run.status = _status(run_dir, run.meta, run.records["index"].nunique())
    return run


def _camexp_meta(path: Path) -> dict[str, Any]:
    """run.json, if camexp wrote it: a config with a name, methods and metrics this version knows."""
    meta = read_json(path)
    cfg = meta.get("config") if isinstance(meta, dict) else None

    def named(v: object) -> bool:
        return isinstance(v, str) or isinstance(v, dict) and isinstance(v.get("name"), str)

    if (
        not isinstance(cfg, dict)
        or not isinstance(cfg.get("name"), str)
        or not isinstance(cfg.get("methods"), list)
        or not all(map(named, cfg["methods"]))
        or not isinstance(cfg.get("metrics"), list)
        or not all(isinstance(m, str) for m in cfg["metrics"])
        or not isinstance(cfg.get("dataset"), dict)
        or not isinstance((cfg.get("model") or {}).get("name"), str)
    ):
        raise CamexpError(f"{path}: not a camexp run.json (no 'config' with name, model, dataset, methods and metrics)")
    if unknown := METRICS.unknown(cfg["metrics"]):
        why = METRICS.plugin_failure(unknown) or f"metrics {unknown} are unknown to this camexp version"
        raise CamexpError(f"{path}: {why}")
    return meta


def dataset_root(meta: dict[str, Any], run_dir: Path) -> str:
    """The run's data set folder as an absolute path, so that reports match runs over the same images whatever
    path their configs wrote: run.json's `dataset.root_resolved` (camexp/data: `list_dataset`). For an older
    run.json: its config's root if absolute, else that root taken from the run's working directory, which the
    run folder's place gives when its output folder was relative (the folder is CWD/output.dir); the root as
    written when nothing tells."""
    recorded = (meta.get("dataset") or {}).get("root_resolved")
    if isinstance(recorded, str):
        return recorded
    cfg = meta["config"]
    root = Path(str(cfg["dataset"].get("root", "")))
    if root.is_absolute():
        return str(root.resolve())
    out = Path((cfg.get("output") or {}).get("dir") or Path("results") / cfg["name"])
    here = run_dir.resolve().parts
    if not out.is_absolute() and ".." not in out.parts and here[-len(out.parts) :] == out.parts:
        return str(Path(*here[: -len(out.parts)]).joinpath(root).resolve())
    return str(root)


def images_to_do(meta: dict[str, Any]) -> int | None:
    """How many images the run set out to explain: after subset, limit and the min_true_prob filter."""
    dataset = meta.get("dataset") or {}
    passed = (dataset.get("min_true_prob") or {}).get("passed")
    return passed if passed is not None else dataset.get("selected", meta.get("images_in_dataset"))


def _status(run_dir: Path, meta: dict[str, Any], done: int) -> str | None:
    """None for a finished run with every image recorded (or skipped as unreadable); else what is missing."""
    total = images_to_do(meta)
    bad = sum(
        len(complete_lines(p).split()) for p in [run_dir / BAD_IMAGES, *parts(run_dir / BAD_IMAGES)] if p.exists()
    )
    if meta.get("status") == "complete" and (total is None or done + bad >= total):
        return None
    state, more = run_state(run_dir, meta)
    skipped = f", {bad} unreadable" if bad else ""
    return (
        f"Incomplete run ({state}{more}): {done} of {total if total is not None else '?'} images recorded for every "
        f"method{skipped}. The numbers below cover those {done} images only."
    )


def run_state(run_dir: Path, meta: dict[str, Any]) -> tuple[str, str]:
    """How far an unfinished run got, as every report words it: a short state ('running now', 'stopped before
    the end' for a run.json saying 'running' whose process is gone, "run.json says 'failed'") and what follows
    it (who runs it, how to resume it, the error). A 'running' run is checked against the folder's lock
    (camexp/lock.py)."""
    if meta.get("status") != "running":
        return f"run.json says {meta.get('status')!r}", f": {meta['error']}" if meta.get("error") else ""
    owner = read_owner_quietly(run_dir)
    alive = owner.alive() if owner else False
    if owner is not None and alive:
        return "running now", f": {owner.describe()}"
    if owner is not None and alive is None:
        return "running on another host or stopped", f": {owner.describe()}"
    config = meta.get("config_path")
    return "stopped before the end", (
        f"; resume it with `camexp run {config}`" if config else "; the same `camexp run` command resumes it"
    )
