"""`camexp report consistency RESULTS`: the runs below RESULTS that kept their maps, grouped by data set,
compared across backbones (camexp/consistency/compare.py) and written as consistency.md, consistency.csv,
consistency_pairs.csv and a figure. Reads the run folders only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from camexp.consistency.compare import MEASURES, PairCounts, RunMaps, similarities, summary
from camexp.consistency.similarity import FieldOfView
from camexp.data.transforms import InputSpec
from camexp.errors import CamexpError
from camexp.provenance import mixed_note
from camexp.report.markdown import markdown_table, markdown_text
from camexp.report.runs import RunFolder, dataset_root, find_runs, open_run, read_runs
from camexp.report.tables import write_files
from camexp.report.uncertainty import cell, stats_settings
from camexp.results import MAPS_DIR, RUN_JSON, map_shards, read_json, read_maps
from camexp.savefig import figure_link, new_figure

STEM = "consistency"
CSV_COLUMNS = ["data", "measure", "method_a", "method_b", "value", "lo", "hi", "images"]
# what makes two runs' images the same: the data set their configs name, its folder resolved to an absolute path
# (`dataset_root`: the same folder by a relative and an absolute path is one data set); subset and limit may
# differ: the comparison uses the images every run recorded
DATA_KEYS = ("kind", "root", "split", "year")


@dataclass
class Group:
    """The runs with maps over one data set, and what comparing them gave."""

    data: str
    runs: list[RunMaps]
    models: dict[str, str]
    methods: list[str]
    stats: dict[str, Any] | None
    pairs: pd.DataFrame = field(default_factory=pd.DataFrame)
    counts: PairCounts = field(default_factory=PairCounts)
    per_method: pd.DataFrame = field(default_factory=pd.DataFrame)
    diffs: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)  # per run, e.g. that its numbers come from mixed software


@dataclass
class ConsistencyReport:
    markdown: str
    frame: pd.DataFrame
    pairs: pd.DataFrame
    groups: list[Group]
    figure: Figure


def data_key(run: RunFolder) -> str:
    """The data set a run's config names (DATA_KEYS, the root resolved), as text."""
    ds = {**run.config["dataset"], "root": dataset_root(run.meta, run.path)}
    return ", ".join(f"{k}: {ds[k]}" for k in DATA_KEYS if ds.get(k) is not None)


def run_maps(run: RunFolder, name: str, methods: list[str]) -> RunMaps:
    """A run folder's predictions, labels, preprocessing and maps of `methods`."""
    meta = read_json(run.path / RUN_JSON)
    if not isinstance(meta.get("input"), dict):
        raise CamexpError(f"{run.path / RUN_JSON}: no 'input' (the model's preprocessing); rerun it with this camexp")
    classes = run.records.drop_duplicates("image_id").set_index("image_id")[["pred", "label"]]
    spec = InputSpec.from_json(meta["input"])
    return RunMaps(name, FieldOfView.of_input(spec), spec.size, classes, read_maps(run.path, methods))


def gather(results_dir: Path) -> tuple[list[Group], list[str]]:
    """The runs with maps below `results_dir`, grouped by data set (groups of two runs or more), and the
    warnings of run folders that could not be read."""
    by_data: dict[str, list[RunFolder]] = {}
    read, warnings = read_runs((d for d in find_runs(results_dir) if map_shards(d / MAPS_DIR)), open_run)
    for _, run in read:
        by_data.setdefault(data_key(run), []).append(run)
    if not any(len(runs) > 1 for runs in by_data.values()):
        found = "; ".join(f"{len(r)} on {d}" for d, r in by_data.items()) or "none"
        raise CamexpError(
            f"{results_dir}: --consistency needs two runs or more with `output: {{maps: true}}` over the same data "
            f"set below it (runs with maps: {found})"
        )
    groups = []
    for data, runs in by_data.items():
        if len(runs) < 2:
            warnings.append(f"{runs[0].path}: the only run with maps on {data}; nothing to compare it with")
            continue
        scores = {r.config.get("score", "logit") for r in runs}
        if len(scores) > 1:
            raise CamexpError(
                f"runs on {data} explain different scores {sorted(scores)} (config `score`): their maps are "
                "not comparable; rerun them with one score"
            )
        methods = [m for m in runs[0].methods if all(m in r.methods for r in runs)]
        if not methods:
            raise CamexpError(f"runs on {data} have no method in common: {[r.methods for r in runs]}")
        names = [str(r.path.relative_to(results_dir)) for r in runs]
        models = {n: f"{r.config['model']['name']} ({r.config['model']['weights']})" for n, r in zip(names, runs)}
        maps = [run_maps(r, n, methods) for r, n in zip(runs, names)]
        notes = [f"{n}: {note}" for n, r in zip(names, runs) if (note := mixed_note(r.meta))]
        groups.append(Group(data, maps, models, methods, runs[0].config.get("stats"), notes=notes))
    return groups, warnings


def consistency(results_dir: Path, q: float, stats: dict[str, Any]) -> ConsistencyReport:
    """Compare every group of runs with maps below `results_dir` (top-q regions with `q`; intervals with the
    first run's `stats:` settings updated by `stats`)."""
    if not 0.0 < q < 1.0:
        raise CamexpError(f"--top-q must be between 0 and 1 (a fraction of the pixels), not {q}")
    groups, warnings = gather(results_dir)
    frames, lines = [], [f"# Consistency across backbones: {markdown_text(str(results_dir))}", ""]
    for g in groups:
        settings = stats_settings(g.stats, **stats)
        g.pairs, g.counts = similarities(g.runs, g.methods, q)
        g.per_method, g.diffs = summary(g.pairs, g.methods, settings)
        lines += group_markdown(g, q, settings.level, settings.bootstrap)
        frames.append(long_frame(g))
    lines += [*figure_link("Per-image similarity", STEM), ""]
    if warnings:
        lines += ["## Not compared", "", *(f"- {markdown_text(w)}" for w in warnings), ""]
    pairs = pd.concat([g.pairs.assign(data=g.data) for g in groups], ignore_index=True)
    return ConsistencyReport("\n".join(lines), pd.concat(frames, ignore_index=True), pairs, groups, draw(groups, q))


def long_frame(g: Group) -> pd.DataFrame:
    """The group's per-method means and paired differences as rows of CSV_COLUMNS."""
    means = g.per_method.rename(columns={"metric": "measure", "method": "method_a", "n": "images"})
    diffs = g.diffs.rename(columns={"metric": "measure", "n": "images"})
    return pd.concat([means, diffs], ignore_index=True).assign(data=g.data).reindex(columns=CSV_COLUMNS)


def title(key: str, q: float) -> str:
    row = next(r for r in MEASURES if r.key == key)
    return row.title.replace("top-q", f"top-{100 * q:g} %")


def cells(frame: pd.DataFrame, q: float, prefix: str = "") -> pd.DataFrame:
    """Rows of (row, metric, value, lo, hi) as text cells 'value [lo, hi]': one row per `row`, one column per
    measure."""
    text = [cell(float(r.value), float(r.lo), float(r.hi), 3) for r in frame.itertuples()]
    wide = frame.assign(text=text).pivot(index="row", columns="metric", values="text")
    return wide.reindex(columns=[m.key for m in MEASURES]).rename(columns=lambda k: prefix + title(k, q))


def group_markdown(g: Group, q: float, level: float, n_boot: int) -> list[str]:
    """A group's section: its runs, the filter's counts, the table per method, the paired differences and
    the mean per backbone pair."""
    h, w = max(r.size[0] for r in g.runs), max(r.size[1] for r in g.runs)
    runs = [f"- `{r.name}`: {g.models[r.name]}, input {r.size[0]}×{r.size[1]}, {r.view.describe()}" for r in g.runs]
    table = cells(g.per_method.assign(row=g.per_method["method"]), q).reindex(g.methods)
    table.index.name = "method"
    per = g.per_method[g.per_method["metric"] == MEASURES[0].key].set_index("method")
    table["images"] = per["n"].astype(int)
    table["pairs"] = g.pairs.groupby("method")[MEASURES[0].key].count().reindex(g.methods).fillna(0).astype(int)
    diff_cells = cells(g.diffs.assign(row=g.diffs["method_a"] + " − " + g.diffs["method_b"]), q, "Δ ")
    diff_cells.index.name = "A − B"
    by_pair = g.pairs.assign(pair=g.pairs["run_a"] + " vs " + g.pairs["run_b"])
    pair_table = by_pair.pivot_table(index="pair", columns="method", values=MEASURES[0].key, aggfunc="mean")
    pair_table = pair_table.reindex(columns=g.methods).map(lambda v: f"{v:.3f}")
    pair_table["pairs counted"] = by_pair.groupby("pair")["image_id"].nunique()
    lines = [f"## Data set: {markdown_text(g.data)}", ""]
    if caveat := g.counts.caveat():
        lines += [f"**{caveat[0].upper()}{caveat[1:]}.**", ""]
    lines += ["Runs:", *map(markdown_text, runs), *(f"- {markdown_text(n)}" for n in g.notes), ""]
    lines += [
        f"{g.counts.describe()}. Maps compared over the part of the image every run kept, resampled to {h}×{w}; "
        f"top-{100 * q:g} % regions keep tied values together.",
        "",
        markdown_table(table),
        "",
    ]
    if n_boot:
        lines += [
            f"Cells: mean over the counted (image, backbone pair)s [{100 * level:g} % percentile bootstrap interval "
            f"over images, {n_boot} resamples].",
            "",
        ]
    if len(diff_cells):
        lines += ["### Paired differences between methods (same images)", "", markdown_table(diff_cells), ""]
    lines += [f"### Mean {MEASURES[0].title} per backbone pair", "", markdown_table(pair_table), ""]
    return lines


def draw(groups: list[Group], q: float) -> Figure:
    """Per group (rows) and measure (columns): box plots of the per-image similarity (mean over the image's
    counted pairs) per method."""
    fig = new_figure(4.5 * len(MEASURES), 3.5 * len(groups))
    axes = fig.subplots(len(groups), len(MEASURES), squeeze=False)
    for g, row in zip(groups, axes):
        for measure, ax in zip(MEASURES, row):
            values = g.pairs.dropna(subset=[measure.key]).groupby(["method", "image_id"])[measure.key].mean()
            data = [values[m].to_numpy() if m in values.index.get_level_values(0) else np.array([]) for m in g.methods]
            ax.boxplot(data, tick_labels=g.methods)
            ax.set_ylabel(title(measure.key, q))
            ax.set_ylim(top=1.02)
            ax.grid(alpha=0.3, axis="y")
            ax.set_title(f"{g.data} ({len(g.runs)} runs)", fontsize=8)
    return fig


def write_consistency(rep: ConsistencyReport, folder: Path) -> list[Path]:
    """consistency.md, consistency.csv, consistency_pairs.csv and the figure into `folder`."""
    csvs = {STEM: rep.frame, f"{STEM}_pairs": rep.pairs}
    return write_files(folder, STEM, rep.markdown, csvs, "%.10g", {STEM: rep.figure})
