"""Files that are rewritten in place (records, run.json, checkpoints) are written whole or not at all; text
files a user gave are read as UTF-8 or refused in one line."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from camexp.errors import CamexpError


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


def read_user_text(path: Path) -> str:
    """A text file the user gave (a config, a split or label list) as UTF-8, whatever the locale says; a file in
    another encoding is one line naming it and the offending byte, not a UnicodeDecodeError traceback."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CamexpError(
            f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save the file as UTF-8"
        ) from None
