"""Per-image records on disk: append batch by batch, survive a crash, read back as a wide view.

per_image.csv holds one row per (image, method). It is the truth of a run; summaries are views of it.
per_image_metrics.csv holds the per-batch metrics' values in long form, one row per (image, method, metric,
class), and per_image_curves.csv their curves when asked for; both are appended before the batch's records,
so an image in the records has its metric rows too.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from camexp.csvsafe import csv_text, restored
from camexp.errors import CamexpError, os_reason
from camexp.io import replace_atomically, write_text_atomically
from camexp.metrics import PerImage, RecordsView

RECORDS = "per_image.csv"
RUN_JSON = "run.json"
DISTILL_JSON = "distill.json"
STUDY_JSON = "study.json"
# The file that marks each kind of folder camexp writes: a folder holds one kind, since their files would mix
# (a run's per_image.csv beside a study's page, a distillation's checkpoints in a run's resume state).
FOLDER_KINDS = {RUN_JSON: "a camexp run", DISTILL_JSON: "a distillation", STUDY_JSON: "a study"}
BAD_IMAGES = "bad_images.txt"
COLUMNS = ["index", "image_id", "method", "target", "label", "pred", "y", "o", "p_true", "constant_map"]
METRIC_RECORDS = "per_image_metrics.csv"
METRIC_COLUMNS = ["index", "image_id", "method", "metric", "class", "value"]
CURVES = "per_image_curves.csv"
CURVE_COLUMNS = ["index", "image_id", "method", "metric", "class", "points"]
METRIC_KEY = ["index", "method", "metric", "class"]


def batch_records(
    index: np.ndarray,
    image_ids: list[str],
    methods: list[str],
    *,
    y: torch.Tensor,
    p_true: torch.Tensor,
    targets: torch.Tensor,
    pred: torch.Tensor,
    labels: torch.Tensor,
    o: torch.Tensor,
    constant: torch.Tensor,
    finite: torch.Tensor,
) -> pd.DataFrame:
    """The records of one batch, method by method (M*B rows of COLUMNS), from device tensors.

    y, p_true, targets, pred, labels: (B,); o, constant, finite: (M, B). Everything leaves the device in one
    float64 transfer (float64 holds class indices exactly), the loop's only host sync. A non-finite map is
    an error naming the method and the images, never a record.
    """
    rows = [y, p_true, targets, pred, labels, o, constant, finite]
    host = torch.cat([r.to(torch.float64).reshape(-1, r.shape[-1]) for r in rows]).cpu().numpy()
    y_h, p_true_h, *classes = host[:5]
    m = len(methods)
    target, pred_h, label = (np.tile(c, m).astype(np.int64) for c in classes)
    o_h, constant_h, finite_h = np.split(host[5:], 3)  # (M, B) each
    if not finite_h.all():
        j = int(np.flatnonzero(finite_h.min(1) == 0)[0])
        raise CamexpError(
            f"method {methods[j]!r} produced non-finite values for image(s) "
            f"{[image_ids[i] for i in np.flatnonzero(finite_h[j] == 0)]}: NaN/Inf in the model's "
            "activations or gradients"
        )
    return pd.DataFrame(
        {
            "index": np.tile(index, m),
            "image_id": image_ids * m,
            "method": np.repeat(methods, len(image_ids)),
            "target": target,
            "label": label,
            "pred": pred_h,
            "y": np.tile(y_h, m),
            "o": o_h.ravel(),
            "p_true": np.tile(p_true_h, m),
            "constant_map": constant_h.ravel().astype(np.int64),
        }
    )


def metric_records(
    index: np.ndarray, image_ids: list[str], values: list[PerImage], with_curves: bool
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Long rows (METRIC_COLUMNS) of one batch's per-batch metric values and, `with_curves`, their curves
    (CURVE_COLUMNS, the points space-separated). Values leave the device in one float64 transfer per kind."""
    if not values:
        return pd.DataFrame(columns=METRIC_COLUMNS), None
    host = torch.cat([torch.stack([v.pos.double(), v.cls.double(), v.value.double()], 1) for v in values]).cpu().numpy()
    pos, cls = host[:, 0].astype(np.int64), host[:, 1].astype(np.int64)
    names = [(v.method, v.metric) for v in values for _ in range(len(v.pos))]
    rows = pd.DataFrame(
        {
            "index": index[pos],
            "image_id": [image_ids[i] for i in pos],
            "method": [m for m, _ in names],
            "metric": [k for _, k in names],
            "class": cls,
            "value": host[:, 2],
        }
    )
    with_curve = [v for v in values if v.curve is not None]
    if not with_curves or not with_curve:
        return rows, None
    points = [
        " ".join(f"{p:.9g}" for p in row)
        for v in with_curve
        if v.curve is not None
        for row in v.curve.double().cpu().numpy()
    ]
    pos_c = np.concatenate([v.pos.cpu().numpy() for v in with_curve]).astype(np.int64)
    curves = pd.DataFrame(
        {
            "index": index[pos_c],
            "image_id": [image_ids[i] for i in pos_c],
            "method": [v.method for v in with_curve for _ in range(len(v.pos))],
            "metric": [v.metric for v in with_curve for _ in range(len(v.pos))],
            "class": np.concatenate([v.cls.cpu().numpy() for v in with_curve]).astype(np.int64),
            "points": points,
        }
    )
    return rows, curves


def append_records(path: Path, rows: pd.DataFrame, columns: list[str] = COLUMNS) -> None:
    """Append rows with one write + fsync, so a kill leaves at most one partial last line, which the next
    append cuts off first (it would otherwise swallow the first new row)."""
    header = not path.exists() or path.stat().st_size == 0
    if not header:
        _drop_partial_line(path)
    text = csv_text(rows[columns], index=False, header=header, float_format="%.17g")
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _drop_partial_line(path: Path) -> None:
    """Truncate `path` after its last newline (a writer killed mid-line); reads the file only when torn."""
    with open(path, "rb+") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)


def complete_lines(path: Path) -> bytes:
    """The bytes of `path` up to its last newline: what a killed writer finished, read without modifying it."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


def read_records(path: Path, columns: list[str] = COLUMNS) -> pd.DataFrame:
    """Records of a run (or another per-image file with `columns`), without a partially written last line.
    Never writes: report commands read run folders they must leave untouched."""
    data = complete_lines(path) if path.exists() else b""
    if not data.strip():
        return pd.DataFrame(columns=columns)
    try:
        df = restored(pd.read_csv(io.BytesIO(data), dtype={"image_id": str}))
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise CamexpError(f"{path}: not a camexp records file ({str(e).strip()})") from None
    missing = set(columns) - set(df.columns)
    if missing:
        raise CamexpError(f"{path}: not a camexp records file (missing columns {sorted(missing)})")
    return df


def part_path(path: Path, rank: int) -> Path:
    """The file rank `rank` of a distributed run writes in place of `path` (per_image.rank1.csv, ...)."""
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def parts(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.stem}.rank*{path.suffix}"))


def merge_parts(path: Path, columns: list[str] = COLUMNS) -> None:
    """Fold the per-rank files of `path` (from a finished or killed distributed run) into it, then delete them.

    A kill between the append and the delete only duplicates rows, which `finalize_records` drops. A CSV
    has `columns`; any other file is text, one entry per line.
    """
    if path.exists():  # a killed run's partial last line must not swallow the first merged row
        _drop_partial_line(path)
    for part in parts(path):
        if path.suffix == ".csv":
            rows = read_records(part, columns)
            if len(rows):
                append_records(path, rows, columns)
        else:
            _drop_partial_line(part)
            with open(path, "a", encoding="utf-8") as f:
                f.write(part.read_text())
        part.unlink()


def read_all_records(folder: Path) -> pd.DataFrame:
    """per_image.csv of a run folder with the per-rank files a distributed run has not merged yet (read only)."""
    return pd.concat([read_records(p) for p in (folder / RECORDS, *parts(folder / RECORDS))], ignore_index=True)


def any_records(folder: Path) -> bool:
    """Whether per_image.csv (or a rank's part) holds a complete row: numbers that a resume would add to."""
    return any(p.exists() and complete_lines(p).count(b"\n") > 1 for p in (folder / RECORDS, *parts(folder / RECORDS)))


def complete_images(df: pd.DataFrame, methods: list[str]) -> set[int]:
    """Dataset indices that have a record for every method."""
    if df.empty:
        return set()
    have = df[df["method"].isin(methods)].groupby("index")["method"].nunique()
    return set(int(i) for i in have[have == len(methods)].index)


def complete_records(df: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """The rows of images recorded for every method in `methods`, one per (image, method), sorted by
    (dataset index, method order): what every summary is computed over."""
    df = df[df["index"].isin(complete_images(df, methods)) & df["method"].isin(methods)]
    df = df.drop_duplicates(["index", "method"], keep="last")
    order = {m: i for i, m in enumerate(methods)}
    return df.sort_values(["index", "method"], key=lambda s: s.map(order) if s.name == "method" else s)


def conflicting_duplicate(df: pd.DataFrame) -> str | None:
    """The first (image, method) recorded twice with different values, described; None when every
    repeated row is an exact copy (what a kill during a distributed merge leaves, harmless)."""
    rows = df.drop_duplicates()
    twice = rows[rows.duplicated(["index", "method"], keep=False)]
    if twice.empty:
        return None
    keys = twice.groupby(["index", "method"], sort=False)
    (index, method), rows = next(iter(keys))
    more = f" (and {keys.ngroups - 1} more image-method pairs)" if keys.ngroups > 1 else ""
    return (
        f"image {rows['image_id'].iloc[0]} (index {index}), method {method}: {len(rows)} rows with "
        f"different values{more}"
    )


def finalize_records(path: Path, methods: list[str]) -> pd.DataFrame:
    """Rewrite the records sorted by (dataset index, method order), keeping only complete images, so a
    resumed run's file equals an uninterrupted one's."""
    df = complete_records(read_records(path), methods)
    write_text_atomically(path, csv_text(df[COLUMNS], index=False, float_format="%.17g"))
    return df.reset_index(drop=True)


def metric_complete(df: pd.DataFrame, row_names: list[tuple[str, ...]]) -> set[int] | None:
    """Dataset indices that have a row of every per-batch metric (each given by the metric names its rows
    carry); None when no per-batch metric is on."""
    if not row_names:
        return None
    done = None
    for names in row_names:
        have = set(int(i) for i in df.loc[df["metric"].isin(names), "index"]) if len(df) else set()
        done = have if done is None else done & have
    return done


def final_metric_rows(
    path: Path, images: set[int], methods: list[str], columns: list[str] = METRIC_COLUMNS, rewrite: bool = False
) -> pd.DataFrame:
    """Rows of a per-batch metric file for `images` and `methods`, the last per (image, method, metric, class)
    (a resumed batch re-appends rows), sorted by (index, metric, method order, class); `rewrite` writes
    them back so that a resumed or distributed run's file equals an uninterrupted one's."""
    df = read_records(path, columns)
    df = df[df["index"].isin(images) & df["method"].isin(methods)].drop_duplicates(METRIC_KEY, keep="last")
    order = {m: i for i, m in enumerate(methods)}
    df = df.sort_values(
        ["index", "metric", "method", "class"], kind="stable", key=lambda s: s.map(order) if s.name == "method" else s
    ).reset_index(drop=True)
    if rewrite and path.exists():
        write_text_atomically(path, csv_text(df[columns], index=False, float_format="%.17g"))
    return df


def records_view(df: pd.DataFrame, methods: list[str] | None = None) -> RecordsView:
    """Wide view (images x methods) of long records."""
    methods = methods or list(dict.fromkeys(df["method"]))
    wide_o = df.pivot(index="index", columns="method", values="o")[methods]
    per_image = df.drop_duplicates("index").set_index("index").loc[wide_o.index]
    return RecordsView(
        methods=list(methods),
        image_ids=per_image["image_id"].astype(str).tolist(),
        y=torch.tensor(per_image["y"].to_numpy(dtype="float64")),
        o=torch.tensor(wide_o.to_numpy(dtype="float64").copy()),  # copy: a reordered pivot may have negative strides
        p_true=torch.tensor(per_image["p_true"].to_numpy(dtype="float64")),
    )


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomically(path, json.dumps(data, indent=2, default=str))


def record_stop(path: Path, error: BaseException) -> None:
    """Rewrite the run.json at `path` of a run that ended early with status 'stopped' (Ctrl-C) or 'failed' and
    the error's first line, so no report calls it running. A write that fails too is dropped: the original error
    is the one to see."""
    if isinstance(error, KeyboardInterrupt):
        status, line = "stopped", "interrupted (Ctrl-C)"
    else:
        text = str(error) if isinstance(error, CamexpError) else f"{type(error).__name__}: {error}"
        status, line = "failed", (text.strip().splitlines() or [type(error).__name__])[0]
    with suppress(OSError, CamexpError):
        write_json(path, {**read_json(path), "status": status, "error": line})


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CamexpError(f"{path}: cannot read run metadata ({e})") from None


FULL_OR_READ_ONLY = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


@contextmanager
def writes_kept(folder: Path, methods: list[str]) -> Iterator[None]:
    """A write into the run folder that fails (disk full, quota, read-only remount) ends the run with one line
    saying what the records kept and how to go on, instead of a traceback from deep in a batch."""
    try:
        yield
    except OSError as e:
        denied = e.errno in (errno.EACCES, errno.EPERM) and e.filename and Path(e.filename).parent == folder
        if e.errno not in FULL_OR_READ_ONLY and not denied:
            raise
        kept = complete_images(read_all_records(folder), methods)
        raise CamexpError(
            f"{e.filename or folder}: {os_reason(e)} while the run was writing; kept: {len(kept)} images "
            f"recorded for every method in {folder / RECORDS} (a half-written last line is dropped "
            "on resume); free space or make the folder writable, then run the same command to "
            "resume"
        ) from None


# The maps a run keeps with `output: {maps: true}` (docs/guide/run-folder.md, "Maps"): one safetensors shard per
# batch (and rank) in the run folder's maps/, written whole or not at all (a killed write leaves at most a *.tmp,
# which is no shard).
# A shard holds `index` (B,) int64, `target` (B,) int64 and `map/<method>` (B,h,w) float16 per method: the method's
# map at the layer's resolution, min-max normalised to [0,1]; its metadata lists the image ids (JSON). Shards are
# named a<invocation>-b<batch>[.rank<r>].safetensors; a later invocation's map of an (image, method) supersedes an
# earlier one's (a resumed batch explains its images again). At the end of each invocation rank 0 writes
# maps/index.csv (where each map of the final records lies) and deletes the shards it no longer needs.
MAPS_DIR = "maps"
MAPS_INDEX = "index.csv"
MAPS_INDEX_COLUMNS = ["index", "image_id", "method", "target", "shard", "row"]
MAP_KEY = "map/"
SHARD_SUFFIX = ".safetensors"
SHARD_NAME = re.compile(r"^a(\d+)-b(\d+)(?:\.rank(\d+))?\.safetensors$")


def shard_name(invocation: int, batch: int) -> str:
    """The name of a maps shard (the runner's per-rank naming adds .rank<r> under torchrun)."""
    return f"a{invocation:04d}-b{batch:06d}{SHARD_SUFFIX}"


def map_shards(maps_dir: Path) -> list[Path]:
    """The finished shards of a maps folder in the order they were written: invocation, rank, batch."""
    if not maps_dir.is_dir():
        return []
    named = [(SHARD_NAME.match(p.name), p) for p in maps_dir.iterdir()]
    order = {p: (int(m[1]), int(m[3] or 0), int(m[2])) for m, p in named if m}
    return sorted(order, key=order.__getitem__)


def last_invocation(maps_dir: Path) -> int:
    """The highest invocation number among the shards of a maps folder (0 without shards)."""
    return max((int(m[1]) for p in map_shards(maps_dir) if (m := SHARD_NAME.match(p.name))), default=0)


def write_map_shard(
    path: Path, index: np.ndarray, image_ids: list[str], targets: np.ndarray, maps: dict[str, np.ndarray]
) -> None:
    """Write one batch's maps (method -> (B,h,w)) as a shard, atomically and synced like the records' appends."""
    tensors = {"index": index.astype(np.int64), "target": targets.astype(np.int64)}
    tensors |= {MAP_KEY + m: np.ascontiguousarray(v, dtype=np.float16) for m, v in maps.items()}
    meta = {"format": "camexp-maps", "version": "1", "image_ids": json.dumps(image_ids)}
    replace_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta), sync=True)


def _shard_rows(path: Path) -> pd.DataFrame:
    """One row per (image, method) of a shard (MAPS_INDEX_COLUMNS); an unreadable shard is a one-line error."""
    try:
        with safe_open(path, "numpy") as f:
            image_ids = json.loads((f.metadata() or {})["image_ids"])
            index, target = f.get_tensor("index"), f.get_tensor("target")
            methods = [k[len(MAP_KEY) :] for k in f.keys() if k.startswith(MAP_KEY)]
    except (OSError, KeyError, ValueError, SafetensorError) as e:
        raise CamexpError(f"{path}: not a camexp maps shard ({e}); delete it and resume the run") from None
    n = len(index)
    return pd.DataFrame(
        {
            "index": np.tile(index, len(methods)),
            "image_id": image_ids * len(methods),
            "method": np.repeat(methods, n),
            "target": np.tile(target, len(methods)),
            "shard": path.name,
            "row": np.tile(np.arange(n), len(methods)),
        },
        columns=MAPS_INDEX_COLUMNS,
    )


def mapped_images(maps_dir: Path, methods: list[str]) -> set[int]:
    """The record indices with a map of every one of `methods` in the shards of `maps_dir` (headers only): a
    resumed run explains the others again, e.g. those of a corrupt shard the user deleted."""
    per_image = _latest_maps(map_shards(maps_dir), methods).groupby("index")["method"].nunique()
    return set(per_image.index[per_image == len(methods)].astype(int))


def _latest_maps(shards: list[Path], methods: list[str]) -> pd.DataFrame:
    """Per (image, method) of `methods`, the latest of `shards` (in writing order) holding its map."""
    if not shards:
        return pd.DataFrame(columns=MAPS_INDEX_COLUMNS)
    rows = pd.concat([_shard_rows(p) for p in shards], ignore_index=True)
    return rows[rows["method"].isin(methods)].drop_duplicates(["index", "method"], keep="last")


def _run_methods(run_dir: Path) -> list[str]:
    """The methods of a run folder, in its config order (run.json)."""
    meta = read_json(run_dir / RUN_JSON)
    if not isinstance(meta.get("methods"), dict):
        raise CamexpError(f"{run_dir / RUN_JSON}: not a camexp run (no methods)")
    return list(meta["methods"])


def map_locations(run_dir: Path, methods: list[str]) -> pd.DataFrame:
    """Where each map of the run's final records lies (MAPS_INDEX_COLUMNS): the latest shard holding the
    (image, method), over the images recorded for every one of the run's `methods`, sorted by index and method
    order. Reads the records and the shards' headers only, and writes nothing."""
    records = complete_records(read_all_records(run_dir), methods)
    shards = map_shards(run_dir / MAPS_DIR)
    if not shards:
        raise CamexpError(
            f"{run_dir}: the run kept no maps; run it with `output: {{maps: true}}` in its config "
            "(with --fresh: maps cannot be added to images already recorded)"
        )
    rows = _latest_maps(shards, methods)
    located = records[["index", "image_id", "method"]].merge(
        rows.drop(columns="image_id"), on=["index", "method"], how="left", validate="one_to_one"
    )
    missing = located[located["shard"].isna()]
    if len(missing):
        raise CamexpError(
            f"{run_dir}: {len(missing)} of the {len(located)} recorded (image, method) pairs have no map (first: "
            f"image {missing['image_id'].iloc[0]}, method {missing['method'].iloc[0]}): either a shard holding "
            "them was deleted (run the same `camexp run` command: a run with `output: {maps: true}` explains "
            "them again) or they were recorded with `output.maps` off (rerun with `output: {maps: true}` and --fresh)"
        )
    located["row"] = located["row"].astype(np.int64)
    located["target"] = located["target"].astype(np.int64)
    return located[MAPS_INDEX_COLUMNS].reset_index(drop=True)


def write_maps_index(run_dir: Path, methods: list[str]) -> pd.DataFrame:
    """Rank 0 at the end of an invocation (every rank done): write maps/index.csv for the final records and
    delete the shards that no longer hold any of their maps (superseded by a resumed batch) and the
    temporary files of writes a kill cut short."""
    located = map_locations(run_dir, methods)
    maps_dir = run_dir / MAPS_DIR
    write_text_atomically(maps_dir / MAPS_INDEX, csv_text(located, index=False))
    kept = {maps_dir / s for s in located["shard"]}
    for stale in [*(set(map_shards(maps_dir)) - kept), *maps_dir.glob("*.tmp")]:
        stale.unlink()
    return located


def read_maps(
    run_dir: Path | str, methods: list[str] | None = None, images: Iterable[str] | None = None
) -> pd.DataFrame:
    """The maps a run kept (`output: {maps: true}`), one row per (image, method) of its final records, sorted by
    record index then the run's method order: columns `index` (int), `image_id` (str), `method` (str), `target`
    (int, the explained class) and `map` (float32 (h, w) at the layer's resolution, min-max normalised to [0,1];
    bilinear upsampling to the input size and normalising again gives the map the run scored). `methods` and
    `images` (image ids) select; a name the run does not have is an error."""
    run_dir = Path(run_dir)
    known = _run_methods(run_dir)
    unknown = [m for m in methods or [] if m not in known]
    if unknown:
        raise CamexpError(f"{run_dir}: no method(s) {unknown} in this run; it has {known}")
    located = map_locations(run_dir, known)  # the images recorded for every method of the run
    if methods is not None:
        located = located[located["method"].isin(methods)]
    if images is not None:
        wanted, recorded = list(dict.fromkeys(str(i) for i in images)), set(located["image_id"])
        absent = [i for i in wanted if i not in recorded]
        if absent:
            raise CamexpError(
                f"{run_dir}: image id(s) {absent[:5]} not among the run's {located['index'].nunique()} recorded images"
            )
        located = located[located["image_id"].isin(wanted)]
    maps = np.empty(len(located), dtype=object)
    for shard, rows in located.groupby("shard", sort=False):
        with safe_open(run_dir / MAPS_DIR / str(shard), "numpy") as f:
            for method, part in rows.groupby("method", sort=False):
                stack = f.get_tensor(MAP_KEY + str(method)).astype(np.float32)
                for pos, row in zip(located.index.get_indexer(part.index), part["row"]):
                    maps[pos] = stack[row]
    out = located[["index", "image_id", "method", "target"]].reset_index(drop=True)
    out["map"] = maps
    return out


def refuse_other_kind(folder: Path, mine: str) -> None:
    """One line when `folder` holds another kind of camexp output than `mine` (a key of FOLDER_KINDS)."""
    for marker, what in FOLDER_KINDS.items():
        if marker != mine and (folder / marker).exists():
            raise CamexpError(
                f"{folder} holds {what} ({marker}); {FOLDER_KINDS[mine]} needs a folder of its own: choose one "
                "with --out"
            )
