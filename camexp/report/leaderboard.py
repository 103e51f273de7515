"""`camexp report leaderboard RESULTS_DIR`: one metric across runs; methods as rows, one column per run
(backbone × data set), each value with its interval, and each method's mean rank over the complete runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from camexp.errors import CamexpError
from camexp.provenance import mixed_note
from camexp.report.markdown import markdown_table, markdown_text
from camexp.report.runs import dataset_root, find_runs, read_runs, run_state
from camexp.report.tables import RunSummary, summarize_run_dir
from camexp.report.uncertainty import lower_is_better, marked_cell, marks
from camexp.results import RUN_JSON, read_json


def dataset_label(dataset: dict, root_path: str) -> str:
    """A data set as a reader names it: 'ILSVRC2012 val', 'VOC2007 val', or the image folder's name (of
    `root_path`, the resolved folder: a config's relative '.' has no name)."""
    kind, root = dataset.get("kind", "folder"), Path(root_path).name
    if kind == "imagenet_val":
        return "ILSVRC2012 val"
    if kind == "imagenetv2":
        return f"ImageNetV2 {root}"
    if kind == "voc":
        return f"VOC{dataset.get('year') or ''} {dataset.get('split') or 'val'}"
    return root if kind == "folder" else f"{kind} {root}"


def run_labels(metas: list[dict], run_dirs: list[Path]) -> list[str]:
    """'backbone × data set' per run (and its folder); the run's name is added where two runs would share a
    label."""
    base = [
        f"{m['config']['model']['name']} × {dataset_label(m['config']['dataset'], dataset_root(m, d))}"
        for m, d in zip(metas, run_dirs)
    ]
    return [f"{b} ({m['config']['name']})" if base.count(b) > 1 else b for b, m in zip(base, metas)]


@dataclass
class SummarizedRuns:
    """The runs below a results folder, summarised once: (folder, summary) of each readable run, its run.json,
    and 'skipped FOLDER: why' for each folder that could not be read (foreign, no complete image)."""

    read: list[tuple[Path, RunSummary]]
    metas: list[dict]
    skipped: list[str]

    @property
    def labels(self) -> list[str]:
        return run_labels(self.metas, [d for d, _ in self.read])


def summarized_runs(results_dir: Path, stats: dict[str, Any] | None = None) -> SummarizedRuns:
    """Every run below `results_dir` summarised (`stats` updates each run's recorded `stats:` settings); a
    folder that cannot be reported is skipped with the reason, as in `camexp report table`."""
    read, skipped = read_runs(find_runs(results_dir), lambda d: summarize_run_dir(d, stats))
    return SummarizedRuns(read, [read_json(d / RUN_JSON) for d, _ in read], skipped)


def leaderboard(
    results_dir: Path,
    metric: str | None = None,
    stats: dict[str, Any] | None = None,
    runs: SummarizedRuns | None = None,
) -> tuple[str, pd.DataFrame, list[str]]:
    """Markdown, a wide CSV-ready frame (method, mean_rank, runs_ranked, then value/lo/hi/rank per run) and the
    'skipped FOLDER: why' lines of the folders it could not read; `stats` updates each run's recorded `stats:`
    settings; `runs` (already summarised) spares reading them again. `metric` None: the first rankable metric
    of the runs, in their configs' order."""
    runs = runs or summarized_runs(results_dir, stats)
    read, metas, skipped = runs.read, runs.metas, runs.skipped
    summaries: list[RunSummary] = [s for _, s in read]
    have = list(dict.fromkeys(k for s in summaries if s.stats is not None for k in s.stats.per_method.metric))
    if metric is None:
        metric = next((k for k in have if lower_is_better(k) is not None), None)
        if metric is None:
            raise CamexpError(f"no run below {results_dir} has a rankable metric; available: {sorted(have)}")
    if metric not in have:
        raise CamexpError(f"--metric {metric!r}: no run below {results_dir} has it; available: {sorted(have)}")
    lower = lower_is_better(metric)
    if lower is None:
        raise CamexpError(
            f"--metric {metric!r}: camexp does not know whether lower or higher is better, so it "
            f"cannot rank it; rankable: {sorted(k for k in have if lower_is_better(k) is not None)}"
        )
    labels = runs.labels
    methods: list[str] = []
    cells: dict[str, dict[str, str]] = {}
    columns: dict[str, pd.Series] = {}
    ranks: dict[str, pd.Series] = {}
    incomplete: list[str] = []
    for label, meta, (run_dir, s) in zip(labels, metas, read):
        complete = meta.get("status") == "complete"
        header = label if complete else f"{label} (incomplete: {run_state(run_dir, meta)[0]}, {s.images} images)"
        if not complete:
            incomplete.append(f"{header}: {s.status}")
        if note := mixed_note(meta):
            incomplete.append(f"{header}: {note}")
        assert s.stats is not None  # summarize_run_dir always computes stats (stats_settings is never None)
        rows = s.stats.per_method[s.stats.per_method.metric == metric].set_index("method")
        methods += [m for m in rows.index if m not in methods]
        mk = marks(s.stats, metric)
        cells[header] = {m: marked_cell(r.value, r.lo, r.hi, mk.get(m, "")) for m, r in rows.iterrows()}
        for col in ("value", "lo", "hi"):
            columns[f"{header} {col}" if col != "value" else header] = rows[col]
        if complete:
            ranks[header] = rows.value.rank(ascending=lower, method="average")
            columns[f"{header} rank"] = ranks[header]
    rank_frame = pd.DataFrame(ranks, index=methods)
    mean_rank = rank_frame.mean(axis=1)
    order = mean_rank.sort_values(kind="stable", na_position="last").index
    md_table = pd.DataFrame(cells, index=methods, dtype=object).fillna("").loc[order]  # a run without the metric: blank
    md_table.insert(0, "mean rank", [f"{mean_rank[m]:.2f}" if pd.notna(mean_rank[m]) else "—" for m in order])
    md_table.index.name = "method"
    legends = dict.fromkeys(s.stats.legend() for s in summaries if s.stats is not None)
    direction = "lower" if lower else "higher"
    md = "\n".join(
        [
            f"# camexp leaderboard: {metric} ({direction} is better)",
            "",
            markdown_text(f"{len(read)} runs below {results_dir}; columns: backbone × data set (run.json)."),
            *legends,
            "Mean rank: over the complete runs that list the method (1 = best, ties share their mean "
            "rank); incomplete runs are shown over their recorded images but not ranked.",
            "",
            markdown_table(md_table),
            "",
            *(f"- {markdown_text(w)}" for w in [*incomplete, *skipped]),
        ]
    )
    frame = pd.DataFrame(columns, index=methods).loc[order]
    frame.insert(0, "runs_ranked", rank_frame.notna().sum(axis=1).loc[order])
    frame.insert(0, "mean_rank", mean_rank.loc[order])
    frame.index.name = "method"
    return md, frame.reset_index(), skipped
