"""User-facing errors: the CLI prints their message on one line and exits with code 2."""

from __future__ import annotations

import errno

WORKER_PREFIX = "Caught "
WORKER_TRACEBACK = "\nOriginal Traceback"


class CamexpError(Exception):
    """A mistake the user can fix (bad config, missing file, bad image); never shown as a traceback."""

    def __init__(self, message: object = "", *args: object):
        super().__init__(_own_line(message), *args)


def _own_line(message: object) -> object:
    """The error's own one-line message. Raised in a DataLoader worker (`runtime.workers` >= 1), the error is
    re-created in the main process from torch's text 'Caught BadImageError in DataLoader worker process 0.
    Original Traceback ...', whose last line is 'camexp...BadImageError: <message>': keep that message."""
    if isinstance(message, str) and message.startswith(WORKER_PREFIX) and WORKER_TRACEBACK in message:
        last = message.rstrip().rsplit("\n", 1)[-1]
        return last.partition(": ")[2] or last
    return message


class ConfigError(CamexpError):
    """A config file that does not validate; the message names the file and the key."""


def os_reason(e: OSError) -> str:
    """An OSError in the words a user acts on (a full disk, a read-only mount, a file in the way)."""
    known = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EEXIST: "a file is in the way",
        errno.ENOTDIR: "a file is in the way of a folder",
    }
    return known.get(e.errno, e.strerror or str(e))  # type: ignore[arg-type]
