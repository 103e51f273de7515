"""Files an analysis keeps in the run folder, read back restricted to the images the run recorded, so that a
resumed run's figures equal an uninterrupted one's (the runner starts them afresh with the run)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from camexp.results import RECORDS, read_records


def recorded_rows(out_dir: Path, name: str, columns: list[str], key: list[str]) -> pd.DataFrame:
    """Rows of `name` for images in the run's final records, the last row per `key` (a resumed batch
    re-appends the rows of images whose records were not written before the kill)."""
    df = read_records(out_dir / name, columns)
    done = set(read_records(out_dir / RECORDS)["index"].astype(int))
    df = df[df["index"].astype(int).isin(done)]
    return df.drop_duplicates(key, keep="last").reset_index(drop=True)
