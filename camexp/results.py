"""Per-image records on disk: append batch by batch, survive a crash, read back as a wide view.

per_image.csv holds one row per (image, method). It is the truth of a run; summaries are views of it.
per_image_metrics.csv holds the per-batch metrics' values in long form, one row per (image, method, metric,
class), and per_image_curves.csv their curves when asked for; both are appended before the batch's records,
so an image in the records has its metric rows too.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from camexp.errors import CamexpError
from camexp.metrics import PerImage, RecordsView

RECORDS = "per_image.csv"
RUN_JSON = "run.json"
BAD_IMAGES = "bad_images.txt"
COLUMNS = ["index", "image_id", "method", "target", "label", "pred", "y", "o", "p_true", "constant_map"]
METRIC_RECORDS = "per_image_metrics.csv"
METRIC_COLUMNS = ["index", "image_id", "method", "metric", "class", "value"]
CURVES = "per_image_curves.csv"
CURVE_COLUMNS = ["index", "image_id", "method", "metric", "class", "points"]
METRIC_KEY = ["index", "method", "metric", "class"]


def batch_records(index: np.ndarray, image_ids: list[str], methods: list[str], *, y: torch.Tensor,
                  p_true: torch.Tensor, targets: torch.Tensor, pred: torch.Tensor, labels: torch.Tensor,
                  o: torch.Tensor, constant: torch.Tensor, finite: torch.Tensor) -> pd.DataFrame:
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
        raise CamexpError(f"method {methods[j]!r} produced non-finite values for image(s) "
                          f"{[image_ids[i] for i in np.flatnonzero(finite_h[j] == 0)]}: NaN/Inf in the model's "
                          "activations or gradients")
    return pd.DataFrame({
        "index": np.tile(index, m), "image_id": image_ids * m, "method": np.repeat(methods, len(image_ids)),
        "target": target, "label": label, "pred": pred_h, "y": np.tile(y_h, m), "o": o_h.ravel(),
        "p_true": np.tile(p_true_h, m), "constant_map": constant_h.ravel().astype(np.int64)})


def metric_records(index: np.ndarray, image_ids: list[str], values: list[PerImage], with_curves: bool
                   ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Long rows (METRIC_COLUMNS) of one batch's per-batch metric values and, `with_curves`, their curves
    (CURVE_COLUMNS, the points space-separated). Values leave the device in one float64 transfer per kind."""
    if not values:
        return pd.DataFrame(columns=METRIC_COLUMNS), None
    host = torch.cat([torch.stack([v.pos.double(), v.cls.double(), v.value.double()], 1) for v in values]).cpu().numpy()
    pos, cls = host[:, 0].astype(np.int64), host[:, 1].astype(np.int64)
    names = [(v.method, v.metric) for v in values for _ in range(len(v.pos))]
    rows = pd.DataFrame({"index": index[pos], "image_id": [image_ids[i] for i in pos],
                         "method": [m for m, _ in names], "metric": [k for _, k in names], "class": cls,
                         "value": host[:, 2]})
    with_curve = [v for v in values if v.curve is not None]
    if not with_curves or not with_curve:
        return rows, None
    points = [" ".join(f"{p:.9g}" for p in row) for v in with_curve for row in v.curve.double().cpu().numpy()]
    pos_c = np.concatenate([v.pos.cpu().numpy() for v in with_curve]).astype(np.int64)
    curves = pd.DataFrame({"index": index[pos_c], "image_id": [image_ids[i] for i in pos_c],
                           "method": [v.method for v in with_curve for _ in range(len(v.pos))],
                           "metric": [v.metric for v in with_curve for _ in range(len(v.pos))],
                           "class": np.concatenate([v.cls.cpu().numpy() for v in with_curve]).astype(np.int64),
                           "points": points})
    return rows, curves


def append_records(path: Path, rows: pd.DataFrame, columns: list[str] = COLUMNS) -> None:
    """Append rows with one write + fsync, so a kill leaves at most one partial last line."""
    header = not path.exists() or path.stat().st_size == 0
    text = rows[columns].to_csv(index=False, header=header, float_format="%.17g")
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _drop_partial_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def read_records(path: Path, columns: list[str] = COLUMNS) -> pd.DataFrame:
    """Records of a run (or another per-image file with `columns`), without a partially written last line."""
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=columns)
    _drop_partial_line(path)
    df = pd.read_csv(path, dtype={"image_id": str})
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


def complete_images(df: pd.DataFrame, methods: list[str]) -> set[int]:
    """Dataset indices that have a record for every method."""
    if df.empty:
        return set()
    have = df[df["method"].isin(methods)].groupby("index")["method"].nunique()
    return set(int(i) for i in have[have == len(methods)].index)


def finalize_records(path: Path, methods: list[str]) -> pd.DataFrame:
    """Rewrite the records sorted by (dataset index, method order), keeping only complete images, so a
    resumed run's file equals an uninterrupted one's."""
    df = read_records(path)
    df = df[df["index"].isin(complete_images(df, methods)) & df["method"].isin(methods)]
    df = df.drop_duplicates(["index", "method"], keep="last")
    order = {m: i for i, m in enumerate(methods)}
    df = df.sort_values(["index", "method"], key=lambda s: s.map(order) if s.name == "method" else s)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(df[COLUMNS].to_csv(index=False, float_format="%.17g"))
    tmp.replace(path)
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


def final_metric_rows(path: Path, images: set[int], methods: list[str], columns: list[str] = METRIC_COLUMNS,
                      rewrite: bool = False) -> pd.DataFrame:
    """Rows of a per-batch metric file for `images` and `methods`, the last per (image, method, metric, class)
    (a resumed batch re-appends rows), sorted by (index, metric, method order, class); `rewrite` writes
    them back so that a resumed or distributed run's file equals an uninterrupted one's."""
    df = read_records(path, columns)
    df = df[df["index"].isin(images) & df["method"].isin(methods)].drop_duplicates(METRIC_KEY, keep="last")
    order = {m: i for i, m in enumerate(methods)}
    df = df.sort_values(["index", "metric", "method", "class"], kind="stable",
                        key=lambda s: s.map(order) if s.name == "method" else s).reset_index(drop=True)
    if rewrite and path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(df[columns].to_csv(index=False, float_format="%.17g"))
        tmp.replace(path)
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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CamexpError(f"{path}: cannot read run metadata ({e})") from None
