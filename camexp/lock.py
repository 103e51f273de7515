"""One run per run folder: a lock file naming its owner (pid, host, start), held while the run writes.

Without it, a second `camexp run --fresh` into a folder deleted the records of the run writing there, and
the first still finished with `status: complete` over a fraction of its images. The lock is created with
O_EXCL, so of two runs exactly one gets it; it is removed when the run ends, also by an exception or
Ctrl-C. A lock whose process is gone (kill -9, a crash) is stale: on the same host that is checked (the
pid, and the process's start time so a reused pid does not count) and the lock is taken over with a note;
a lock from another host cannot be checked and is explained instead. Under torchrun, rank 0 takes the lock
for the whole job (recording torchrun's run id) and the other ranks share it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from camexp.errors import CamexpError, os_reason

LOCK = "camexp.lock"


@dataclass(frozen=True)
class Owner:
    """Who holds a run folder. `process_start` (Linux: clock ticks since boot) tells a live owner from a
    later process that happens to get the same pid."""

    pid: int
    host: str
    started: str
    process_start: str | None = None
    job: str | None = None
    command: str = "camexp run"  # what holds the folder (locks written before it was recorded were runs')

    @classmethod
    def me(cls, command: str = "camexp run") -> Owner:
        return cls(
            os.getpid(),
            socket.gethostname(),
            datetime.now(timezone.utc).isoformat(timespec="seconds"),
            _process_start(os.getpid()),
            os.environ.get("TORCHELASTIC_RUN_ID"),
            command,
        )

    def describe(self) -> str:
        job = f", torchrun job {self.job}" if self.job else ""
        return f"pid {self.pid} on host {self.host}, started {self.started}{job}"

    def alive(self) -> bool | None:
        """Whether the owner still runs; None when it runs on another host (it cannot be checked from here)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by another user
            pass
        return self.process_start is None or _process_start(self.pid) in (None, self.process_start)


def _process_start(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time since boot); None where /proc does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def read_owner(folder: Path) -> Owner | None:
    """The owner recorded in `folder`'s lock; None when there is no lock. An unreadable lock (being written
    this instant, or left half-written) is a CamexpError naming it."""
    path = folder / LOCK
    try:
        return Owner(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        raise CamexpError(
            f"{path}: unreadable lock file ({e.__class__.__name__}); if no camexp run is writing "
            f"{folder}, delete it and run again"
        ) from None


@contextmanager
def hold(
    folder: Path, *, owner: bool = True, note: Callable[[str], None] | None = None, command: str = "camexp run"
) -> Iterator[None]:
    """Create `folder` and hold it for the duration as `command` (named to whoever finds it held); `owner=False`
    (torchrun ranks other than 0) shares rank 0's lock. A folder that cannot be created or written, or that another
    live camexp command holds, is one CamexpError."""
    if not owner:
        yield
        return
    make_folder(folder)
    me = Owner.me(command)
    _acquire(folder, me, note or _stderr)
    try:
        yield
    finally:
        if read_owner_quietly(folder) == me:
            (folder / LOCK).unlink(missing_ok=True)


def make_folder(folder: Path) -> None:
    """mkdir -p, with one line when `folder` is a file, read-only or on a full disk."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        what = "is a file, not a folder" if folder.is_file() else f"cannot be created ({os_reason(e)})"
        raise CamexpError(f"{folder}: the run folder {what}; choose another with --out (or output.dir)") from None


def _acquire(folder: Path, me: Owner, note: Callable[[str], None]) -> None:
    path = folder / LOCK
    for _ in range(2):  # the second attempt follows the removal of a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_owner(folder)
            if holder is None:  # released between our attempt and the read
                continue
            alive = holder.alive()
            if alive is False:
                path.unlink(missing_ok=True)
                note(
                    f"{folder}: removed the stale lock of a {holder.command} that is no longer running "
                    f"({holder.describe()}; killed?); the files it wrote are kept"
                )
                continue
            if alive is None:
                raise CamexpError(  # noqa: B904 (the lock file's existence is the error, not the exception)
                    f"{folder}: held by a {holder.command} on another host ({holder.describe()}), which cannot "
                    f"be checked from here; if it is no longer running, delete {path} and run again"
                )
            raise CamexpError(
                f"{folder}: another {holder.command} is writing this folder ({holder.describe()}); wait for "
                "it to finish, or write elsewhere with --out"
            ) from None
        except OSError as e:
            raise CamexpError(
                f"{folder}: cannot write to the run folder ({os_reason(e)}); choose another with --out (or output.dir)"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(me)))
        return
    raise CamexpError(f"{path}: could not take the lock (another run took it at the same moment?); run again")


def read_owner_quietly(folder: Path) -> Owner | None:
    """The owner, or None when there is no lock or it cannot be read."""
    try:
        return read_owner(folder)
    except CamexpError:
        return None


def _stderr(line: str) -> None:
    print(f"note: {line}", file=sys.stderr)
