"""Files that are rewritten in place (records, run.json, checkpoints) are written whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: Path, write: Callable[[Path], object], sync: bool = False) -> None:
    """`write(tmp)` to a temporary file beside `path`, then rename it over `path`: a crash while writing leaves
    the previous file intact. `sync`: flush the bytes to the disk before the rename (a checkpoint that must
    survive a power cut, not only a killed process)."""
    tmp = path.with_suffix(".tmp")
    write(tmp)
    if sync:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    tmp.replace(path)


def write_text_atomically(path: Path, text: str) -> None:
    """`path.write_text(text)`, atomically (`replace_atomically`)."""
    replace_atomically(path, lambda tmp: tmp.write_text(text))
