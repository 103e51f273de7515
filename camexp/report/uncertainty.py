"""A run's numbers with their uncertainty, recomputed from its records (camexp/stats/bootstrap.py does the math).

Per method: every per-image metric's mean with its percentile bootstrap interval over images
(summary_long.csv). Per pair of methods: the paired bootstrap interval of every metric's difference, win %
with its interval and the exact sign test, relative performance R with its bootstrap and t intervals
(pairwise.csv). Per-image values of further metrics, in long form in per_image_metrics.csv (image_id,
method, metric, value), get the same treatment by adding rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from camexp.analyses import ANALYSES
from camexp.config import StatsConfig
from camexp.csvsafe import write_csv
from camexp.errors import CamexpError
from camexp.metrics import METRICS, MetricParams, PairColumns, RecordsView, Row, all_rows, record_metrics
from camexp.report.markdown import markdown_table
from camexp.results import METRIC_RECORDS, read_records
from camexp.stats.bootstrap import (
    GENERATOR,
    LONG_COLUMNS,
    bootstrap_frames,
    interval_tables,
    wide_metrics,
)

SUMMARY_LONG = "summary_long.csv"
PAIRWISE = "pairwise.csv"
PER_METHOD_COLUMNS = ["metric", "method", "value", "lo", "hi", "n"]
PAIR_COLUMNS = ["metric", "method_a", "method_b", "value", "lo", "hi", "interval", "p_value", "n", "n_untied"]
NOT_DISTINGUISHABLE = "≈"


def row_of(key: str) -> Row | None:
    """The registered row (of a metric or an analysis) that `key` names, or None (e.g. a plug-in's long-form
    values without a declared row)."""
    rows = [*all_rows(), *(r for _, entry in ANALYSES.items() for r in entry.rows)]
    return next((r for r in rows if r.matches(key)), None)


def label_of(key: str) -> str:
    """The main table's label of metric key `key` (the key itself when no row or a prefix row names it)."""
    row = row_of(key)
    return key if row is None or row.prefix else row.label


@dataclass
class RunStats:
    """Intervals of a run: per method (PER_METHOD_COLUMNS) and per pair of methods (PAIR_COLUMNS)."""

    settings: StatsConfig
    per_method: pd.DataFrame
    pairwise: pd.DataFrame

    def legend(self) -> str:
        s = self.settings
        if not s.bootstrap:
            return "Intervals are off (stats.bootstrap: 0)."
        return (
            f"Cells: mean [{100 * s.level:g} % percentile bootstrap interval over images: {s.bootstrap} "
            f"resamples, seed {s.seed}, {GENERATOR}]. **Bold**: best; {NOT_DISTINGUISHABLE}: not "
            "distinguishable from the best (the paired interval of the difference contains no difference)."
        )


def stats_settings(recorded: dict | None = None, **overrides: object) -> StatsConfig:
    """A run's recorded `stats:` settings with command-line overrides (None = keep) applied, validated."""
    merged = {**(recorded or {}), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return StatsConfig.model_validate(merged)
    except ValidationError as e:
        first = e.errors()[0]
        raise CamexpError(f"stats.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def extra_values(
    run_dir: Path | None, records: pd.DataFrame, methods: list[str], analyses: Sequence[str]
) -> pd.DataFrame | None:
    """Long-form per-image values beyond the records: the run's per_image_metrics.csv, and those of every
    listed analysis that declares a per-image reader (mloc: each image's mean Loc per method and δ)."""
    if run_dir is None:
        return None
    parts = []
    if (run_dir / METRIC_RECORDS).exists():
        parts.append(per_image_means(read_records(run_dir / METRIC_RECORDS, LONG_COLUMNS)))
    for name in analyses:
        entry = ANALYSES.get(name)
        if entry.per_image is None:
            continue
        with ANALYSES.running(entry, "per_image", entry.per_image):
            part = entry.per_image(run_dir, records, methods)
        if part is not None:
            parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else None


def per_image_means(rows: pd.DataFrame) -> pd.DataFrame:
    """per_image_metrics.csv as one value per (image, method, metric), ready for the bootstrap.

    Rows of registered per-batch metrics (written with `index` and `class`) count only where their summary
    is a mean over images (`Row.image_mean`): a NaN value is an image seen without a value and is dropped,
    and the value is scaled as the summary row is; an image's several values of one metric (one per class) are
    their mean with their number as `weight`. Rows of other metrics (long-form values a plug-in wrote itself)
    are taken as they are."""
    if "class" not in rows.columns:
        return rows
    entries = [entry for _, entry in METRICS.items() if entry.source == "batch"]
    own = {key for entry in entries for key in entry.row_names}
    scale = {r.key: r.scale for entry in entries for r in entry.rows if r.image_mean}
    foreign = rows[~rows["metric"].isin(own)]
    mine = rows[rows["metric"].isin(scale)].dropna(subset=["value"])
    mine = mine.assign(value=mine["value"] * mine["metric"].map(scale))
    # several values of one image (one per ground-truth class: instances) are one value, their mean, weighing
    # their number, so that the mean over images is the summary's mean over pairs and resamples keep them together
    mine = mine.groupby(["image_id", "method", "metric"], as_index=False, sort=False)["value"].agg(
        value="mean", weight="size"
    )
    return pd.concat([foreign[LONG_COLUMNS], mine[[*LONG_COLUMNS, "weight"]]], ignore_index=True)


def lower_is_better(metric: str) -> bool | None:
    """Which way `metric` improves, as its row says; None when no registered row names it."""
    row = row_of(metric)
    return None if row is None else row.lower_is_better


def image_order(view: RecordsView) -> np.ndarray:
    """The records' rows sorted by image id, so that no number depends on the order images were recorded in."""
    return np.argsort(np.array(view.image_ids, dtype=object), kind="stable")


def per_image_frames(
    view: RecordsView, metrics: list[str], extra: pd.DataFrame | None = None
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Every per-image metric of a run as a wide frame (images sorted by id x methods): the record metrics'
    rows with per-image values and `extra`'s long-form values (per_image_metrics.csv, analyses), and the
    weights of those that carry one (a row without one weighs 1)."""
    order = image_order(view)
    ids = [view.image_ids[i] for i in order]
    y, o = view.y[order], view.o[order]
    wides = {
        row.key: pd.DataFrame(row.per_image(y, o).double().numpy(), index=ids, columns=view.methods)
        for name in metrics
        if (entry := METRICS.get(name)).source == "records"
        for row in entry.rows
        if row.per_image is not None
    }
    weights: dict[str, pd.DataFrame] = {}
    if extra is not None and len(extra):
        try:
            more = wide_metrics(extra, view.methods)
            if "weight" in extra.columns:  # rows without one weigh 1
                if (extra["weight"] < 0).any():
                    raise ValueError("a weight is negative (weights count what an image's value averages)")
                weights = wide_metrics(extra.fillna({"weight": 1.0}), view.methods, "weight")
        except ValueError as e:
            raise CamexpError(f"{METRIC_RECORDS}: {e}") from None
        clash = sorted(set(more) & set(wides))
        if clash:
            raise CamexpError(f"{METRIC_RECORDS}: metric(s) {clash} are also computed from the records; rename them")
        wides.update(more)
    return wides, weights


def compute_stats(
    view: RecordsView,
    metrics: list[str],
    params: MetricParams,
    settings: StatsConfig,
    extra: pd.DataFrame | None = None,
) -> RunStats:
    """Intervals and paired comparisons of the run's metrics (and of `extra`'s long-form per-image values)."""
    order = image_order(view)
    wides, weights = per_image_frames(view, metrics, extra)
    b, level, seed = settings.bootstrap, settings.level, settings.seed
    o_frame = pd.DataFrame(
        view.o[order].double().numpy(), index=[view.image_ids[i] for i in order], columns=view.methods
    )
    frames: dict[tuple[str, str], pd.DataFrame] = {("metric", k): v for k, v in wides.items()}
    paired = [(entry.name, entry.pairwise) for entry in record_metrics(metrics) if entry.pairwise is not None]
    used = {name: o_frame if p.select is None else o_frame[p.select(view, params)[order].numpy()] for name, p in paired}
    for name, p in paired:
        frames[("pairwise", name)] = p.values(used[name])
    # one pass over the resamples for all metrics of the same images
    boots = bootstrap_frames(frames, b, seed, {("metric", k): w for k, w in weights.items()})
    per_method, diffs = interval_tables(wides, b, level, seed, {k: boots[("metric", k)] for k in wides}, weights)
    pairs = [diffs.assign(interval="bootstrap")]
    for name, p in paired:
        table = p.table(used[name], b, level, seed, boots[("pairwise", name)]).drop(columns="metric", errors="ignore")
        table.insert(0, "metric", name)  # the statistic is the metric's: stats/ knows no metric names
        pairs.append(table)
        if p.per_method and len(view.methods) == 2:  # the paper's row: each method's value against the other
            ((a, w_ab, lo, hi, n),) = table[["method_a", "value", "lo", "hi", "n"]].itertuples(index=False)
            other = view.methods[1] if a == view.methods[0] else view.methods[0]
            per_method = pd.concat(
                [
                    per_method,
                    pd.DataFrame(
                        [[name, a, w_ab, lo, hi, n], [name, other, 100 - w_ab, 100 - hi, 100 - lo, n]],
                        columns=PER_METHOD_COLUMNS,
                    ),
                ],
                ignore_index=True,
            )
    pairwise = (
        pd.concat([p for p in pairs if len(p)], ignore_index=True)
        if any(len(p) for p in pairs)
        else pd.DataFrame(columns=PAIR_COLUMNS)
    )
    pairwise = pairwise.reindex(columns=PAIR_COLUMNS).astype({"n": "int64", "n_untied": "Int64"})
    return RunStats(settings, per_method.reindex(columns=PER_METHOD_COLUMNS), pairwise)


def write_stats(run_dir: Path, stats: RunStats) -> None:
    """summary_long.csv and pairwise.csv into the run folder."""
    write_csv(stats.per_method, run_dir / SUMMARY_LONG, index=False, float_format="%.10g")
    write_csv(stats.pairwise, run_dir / PAIRWISE, index=False, float_format="%.10g")


# --- reading and formatting ----------------------------------------------------------------------------------


def cell(value: float, lo: float, hi: float, digits: int = 2) -> str:
    """'36.84 [35.9, 37.8]': the value, and its interval to one digit less, rounded outward (lower bound down,
    upper bound up), so that the printed interval holds the whole interval and a value inside it is printed
    inside it (nearest rounding printed a rank of 7.5 in [7.5, 7.5] as '7.5 [8, 8]'). Every table cell with an
    interval is written here; the CSV files keep every digit."""
    if not math.isfinite(value):
        return "—" if math.isnan(value) else f"{value}"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{_rounded(lo, digits - 1, ROUND_FLOOR)}, {_rounded(hi, digits - 1, ROUND_CEILING)}]"


def _rounded(x: float, places: int, rounding: str) -> str:
    """`x` to `places` decimals in the direction `rounding`, from its shortest decimal form (0.7 stays 0.7,
    where its binary value times 10 would ceil to 8); no '-0'."""
    q = Decimal(repr(float(x))).quantize(Decimal(1).scaleb(-places), rounding=rounding)
    return f"{q + 0:f}"


def _contains_null(pairwise: pd.DataFrame, metric: str, a: str, b: str) -> bool | None:
    """Whether the bootstrap interval comparing a with b for `metric` contains "no difference" (0 for a
    difference, 50 for win %; either order of the pair gives the same answer); None without one."""
    rows = pairwise[
        (pairwise.metric == metric)
        & (pairwise.interval == "bootstrap")
        & (
            ((pairwise.method_a == a) & (pairwise.method_b == b))
            | ((pairwise.method_a == b) & (pairwise.method_b == a))
        )
    ]
    if rows.empty or rows[["lo", "hi"]].isna().any(axis=None):
        return None
    row = row_of(metric)
    return bool(rows.lo.iloc[0] <= (0.0 if row is None else row.null) <= rows.hi.iloc[0])


def marks(stats: RunStats, metric: str) -> dict[str, str]:
    """Per method of `metric`: 'best' (ties too), NOT_DISTINGUISHABLE (its paired interval against the best
    contains no difference) or ''. Empty when the metric has no known direction."""
    rows = stats.per_method[(stats.per_method.metric == metric) & stats.per_method.value.notna()]
    lower = lower_is_better(metric)
    if lower is None or rows.empty:
        return {}
    values = rows.set_index("method").value
    best = values.idxmin() if lower else values.idxmax()
    out = {m: "best" if v == values[best] else "" for m, v in values.items()}  # a tie for best: all bold
    for m in values.index:  # a two-method run's win row compares through the pair's win % (null 50)
        if not out[m] and _contains_null(stats.pairwise, metric, best, m):
            out[m] = NOT_DISTINGUISHABLE
    return out


def marked_cell(value: float, lo: float, hi: float, mark: str, digits: int = 2) -> str:
    """`cell` with its mark: the value in bold for 'best', the mark appended otherwise."""
    text = cell(value, lo, hi, digits)
    if mark == "best":
        head, _, rest = text.partition(" ")
        return f"**{head}** {rest}".rstrip()
    return f"{text} {mark}" if mark else text


def with_missing_rows(main: pd.DataFrame, stats: RunStats) -> pd.DataFrame:
    """The main table plus a row for every per-method metric of `stats` it lacks (e.g. those of
    per_image_metrics.csv), labelled by its row (`label_of`)."""
    label = stats.per_method.metric.map(label_of)
    extra = stats.per_method.assign(label=label)[~label.isin(main.index)]
    if extra.empty:
        return main
    rows = extra.pivot(index="label", columns="method", values="value").reindex(
        index=list(dict.fromkeys(extra.label)), columns=main.columns
    )
    return pd.concat([main, rows]).rename_axis(main.index.name)


def main_cells(main: pd.DataFrame, stats: RunStats, fallback: Callable[[object], str]) -> pd.DataFrame:
    """The main table (metric rows x methods) as text, each number with its interval and mark where the
    run's stats have one, else `fallback(value)`."""
    out = main.map(fallback)
    label_to_key = {label_of(key): key for key in stats.per_method.metric.unique()}
    per = stats.per_method.set_index(["metric", "method"])
    for label in main.index:
        key = label_to_key.get(label, label)
        mk = marks(stats, key)
        for method in main.columns:
            if (key, method) in per.index:
                r = per.loc[(key, method)]
                out.loc[label, method] = marked_cell(r.value, r.lo, r.hi, mk.get(method, ""))
    return out


def pairwise_markdown(stats: RunStats) -> str:
    """One row per pair of methods, one column per comparison, as the metric's `Pairwise` shows its rows (a
    difference of means for the others); '' when there is none."""
    pw = stats.pairwise
    if pw.empty:
        return ""
    shown = {name: entry.pairwise.shown for name, entry in METRICS.items() if entry.pairwise is not None}
    table: dict[str, dict[str, str]] = {}
    for r in pw.itertuples():
        row = table.setdefault(f"{r.method_a} vs {r.method_b}", {})
        how = shown.get(r.metric, PairColumns())
        row[how.column.format(metric=r.metric, interval=r.interval)] = cell(r.value, r.lo, r.hi, how.digits)
        if how.sign_test:
            row["sign test p"] = f"{r.p_value:.3g} ({r.n_untied} untied)"
    frame = pd.DataFrame.from_dict(table, orient="index").fillna("")
    frame.index.name = "A vs B"
    return markdown_table(frame)
