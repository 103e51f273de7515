"""The served study's answers: one SQLite database in the study folder (answers.sqlite), one row per answer.

A row holds the participant, the item (its number in key.json), where in that participant's sequence it was
shown (`position`) and whether its sides were swapped against key.json (`flipped`), the choice as the
participant saw it (left / same / right), the milliseconds taken and when the server received it. A
participant answers an item once (UNIQUE): the same answer sent again changes nothing; a new answer to the
item (after Back) replaces it and counts a revision. WAL with synchronous=FULL: an answer is on the disk
before the server acknowledges it, so a killed server (or machine) loses none that it acknowledged.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from camexp.errors import CamexpError

DB = "answers.sqlite"
DB_FILES = (DB, f"{DB}-wal", f"{DB}-shm")  # SQLite's write-ahead log and shared memory beside it
_SCHEMA = """
CREATE TABLE IF NOT EXISTS study (study_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    participant TEXT NOT NULL,
    item INTEGER NOT NULL,
    position INTEGER NOT NULL,
    flipped INTEGER NOT NULL CHECK (flipped IN (0, 1)),
    choice TEXT NOT NULL CHECK (choice IN ('left', 'same', 'right')),
    ms REAL NOT NULL CHECK (ms >= 0),
    received TEXT NOT NULL,
    revisions INTEGER NOT NULL DEFAULT 0,
    UNIQUE (participant, item)
);
"""


@dataclass(frozen=True)
class Row:
    """One stored answer."""

    participant: str
    item: int
    position: int
    flipped: bool
    choice: str
    ms: float
    received: str = ""


class Store:
    """The study's answer database, opened for writing by the server (one connection, one writer at a time)."""

    def __init__(self, path: Path, study_id: str):
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        known = self._db.execute("SELECT study_id FROM study").fetchall()
        if not known:
            self._db.execute("INSERT INTO study VALUES (?)", (study_id,))
        elif known[0][0] != study_id:
            self._db.close()
            raise CamexpError(
                f"{path}: answers to study {known[0][0]!r}, not to this study {study_id!r}; move it away first"
            )

    def add(self, row: Row) -> bool:
        """Store `row` (committed to the disk on return); False when this very answer was already stored."""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO answers (participant, item, position, flipped, choice, ms, received) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (participant, item) DO UPDATE SET "
                "position = excluded.position, flipped = excluded.flipped, choice = excluded.choice, "
                "ms = excluded.ms, received = excluded.received, revisions = revisions + 1 "
                "WHERE choice != excluded.choice OR ms != excluded.ms",
                (row.participant, row.item, row.position, int(row.flipped), row.choice, row.ms, now),
            )
            return cur.rowcount > 0

    def answered(self, participant: str) -> dict[int, tuple[str, float]]:
        """The items `participant` has answered: the choice as seen and the milliseconds."""
        with self._lock:
            rows = self._db.execute("SELECT item, choice, ms FROM answers WHERE participant = ?", (participant,))
            return {item: (choice, ms) for item, choice, ms in rows.fetchall()}

    def close(self) -> None:
        with self._lock:
            self._db.close()


def read_rows(study_dir: Path, study_id: str) -> list[Row]:
    """Every answer in the study folder's database, read-only ([] when the study was never served)."""
    path = study_dir / DB
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            known = db.execute("SELECT study_id FROM study").fetchall()
            rows = db.execute(
                "SELECT participant, item, position, flipped, choice, ms, received FROM answers ORDER BY rowid"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as e:
        raise CamexpError(f"{path}: not a readable camexp answer database ({e})") from None
    if [r[0] for r in known] != [study_id]:
        raise CamexpError(f"{path}: answers to another study than {study_id!r}; move it away and tally again")
    return [Row(p, int(i), int(pos), bool(f), c, float(ms), rec) for p, i, pos, f, c, ms, rec in rows]
