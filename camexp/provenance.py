"""Which software wrote a folder's numbers, per invocation, and a refusal to mix two in one folder.

A resumed or extended run appends to records that an earlier invocation wrote; if camexp's code, torch, timm or
the locked environment changed in between, the folder would hold numbers of two programs under one run.json (a
fix between two commits once turned `random`'s pointing-game value on an image from 1 to 0 for the same
config). Each invocation records `software()`; `check_same` refuses a different one unless the user overrides
it, and the override is kept in run.json's `mixed_software` for every report to show (`mixed_note`).
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from camexp.errors import CamexpError

PACKAGE = Path(__file__).resolve().parent
# Compared on resume: the code that computes the numbers (camexp's own source, the two libraries the models and
# gradients come from) and the whole locked environment. `camexp_commit` and `versions` are recorded only.
COMPARED = ("camexp_source_sha256", "torch", "timm", "uv_lock_sha256")
VERSIONS = ("camexp", "torch", "torchvision", "timm", "numpy", "pandas")
OVERRIDE = "--allow-software-change"


def source_hash(package: Path = PACKAGE) -> str:
    """sha256 over camexp's Python sources (relative path and bytes, in path order): changes with any edit to
    the code, whether or not it was committed, and whatever the version number says."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def lock_hash(package: Path = PACKAGE) -> str | None:
    """sha256 of the uv.lock beside camexp's source (a checkout); None for an installed camexp without one."""
    lock = package.parent / "uv.lock"
    return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None


def git_commit(package: Path = PACKAGE) -> str | None:
    """The checkout's commit (with '+dirty' when camexp's sources differ from it), or None outside git."""
    root = package.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", package.name],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return (commit + ("+dirty" if dirty.stdout.strip() else "")) if head.returncode == 0 and commit else None


def versions() -> dict[str, str]:
    """Python's and the main libraries' versions."""
    out = {"python": platform.python_version()}
    for pkg in VERSIONS:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def software() -> dict[str, Any]:
    """What this process is: the compared keys, the commit and every version."""
    found = versions()
    return {
        "camexp_source_sha256": source_hash(),
        "camexp_commit": git_commit(),
        "torch": found["torch"],
        "timm": found["timm"],
        "uv_lock_sha256": lock_hash(),
        "versions": found,
    }


def changed(before: dict[str, Any] | None, now: dict[str, Any]) -> dict[str, list[Any]]:
    """Compared keys whose values differ, key -> [before, now]; an earlier camexp that recorded no software
    counts as differing in every key."""
    before = before or {}
    return {k: [before.get(k), now.get(k)] for k in COMPARED if before.get(k) != now.get(k)}


def check_same(
    before: dict[str, Any] | None, now: dict[str, Any], folder: Path, *, allow: bool, what: str = "run"
) -> dict[str, list[Any]]:
    """Refuse to add to `folder`'s numbers with other software than wrote them, naming what changed and the way
    out; with `allow`, return the changes for the caller to record (empty: the same software)."""
    diff = changed(before, now)
    if diff and not allow:
        if before is None:
            said = "was written by a camexp that recorded no software versions"
        else:
            said = (
                "was written by other software ("
                + ", ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, (a, b) in diff.items())
                + ")"
            )
        raise CamexpError(
            f"{folder}: this {what} {said}; its numbers would mix two programs. Pass --fresh to start over or "
            f"--out to write elsewhere (or {OVERRIDE} to add to it anyway, recorded in the folder and shown by "
            "every report)"
        )
    return diff


def record(
    previous: dict[str, Any],
    now: dict[str, Any],
    override: dict[str, list[Any]],
    context: dict[str, Any] | None = None,
    **detail: Any,
) -> dict[str, Any]:
    """A folder's metadata keys after this invocation, from the `previous` metadata: `software` (now),
    `invocations` (one entry more: when, with which software, `context` and `detail`, and any override of
    `check_same`) and `mixed_software` (one entry more, with `context`, when `override` changed something)."""
    entry = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "software": now}
    entry |= {**(context or {}), **detail, **({"software_override": override} if override else {})}
    mixed = [{**(context or {}), "changed": override}] if override else []
    return {
        "software": now,
        "invocations": [*previous.get("invocations", []), entry],
        "mixed_software": [*previous.get("mixed_software", []), *mixed],
    }


def continued(previous: dict[str, Any], folder: Path, *, resumes: bool, allow: bool, what: str) -> dict[str, Any]:
    """`record` of this invocation over a folder's `previous` metadata, after `check_same` against the software
    that wrote it when this invocation `resumes` (adds to) what that software wrote."""
    now = software()
    override = check_same(previous.get("software"), now, folder, allow=allow, what=what) if resumes else {}
    return record(previous, now, override)


def mixed_note(meta: dict[str, Any]) -> str | None:
    """The sentence every report shows for a folder whose numbers come from more than one software."""
    mixed = meta.get("mixed_software") or []
    if not mixed:
        return None
    keys = sorted({k for entry in mixed for k in entry.get("changed", {})})
    return (
        f"Mixed software: {len(mixed)} invocation(s) added to this folder with other software than earlier ones "
        f"({', '.join(keys)} changed; passed {OVERRIDE}); its numbers do not all come from one program."
    )


def _short(value: Any) -> str:
    """A hash shortened to 12 characters; versions as they are."""
    text = str(value)
    return text[:12] if len(text) == 64 else text
