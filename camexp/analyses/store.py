"""Files an analysis keeps in the run folder: started afresh with the run, read back restricted to the
images the run recorded, so that a resumed run's figures equal an uninterrupted one's."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from camexp.results import RECORDS, read_records


def reset_if_fresh(out_dir: Path, name: str) -> None:
    """Delete `name` when the run has no records yet (a fresh start, or a kill before the first batch was
    recorded): whatever it holds belongs to another run or will be recomputed."""
    records = out_dir / RECORDS
    if not records.exists() or records.stat().st_size == 0:
        (out_dir / name).unlink(missing_ok=True)


def recorded_rows(out_dir: Path, name: str, columns: list[str], key: list[str]) -> pd.DataFrame:
    """Rows of `name` for images in the run's final records, the last row per `key` (a resumed batch
    re-appends the rows of images whose records were not written before the kill)."""
    df = read_records(out_dir / name, columns)
    done = set(read_records(out_dir / RECORDS)["index"].astype(int))
    df = df[df["index"].astype(int).isin(done)]
    return df.drop_duplicates(key, keep="last").reset_index(drop=True)
