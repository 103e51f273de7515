"""The run-folder lock on its own: exclusive, released on every exit, stale owners recognised."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from camexp.errors import CamexpError
from camexp.lock import LOCK, Owner, hold, read_owner


def test_one_holder_at_a_time_released_on_success_and_on_error(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with hold(folder):
        assert read_owner(folder).pid == os.getpid()
        with pytest.raises(
            CamexpError, match=f"{folder}: another camexp run is writing this folder \\(pid {os.getpid()}"
        ):
            with hold(folder):
                pass
        assert (folder / LOCK).exists()  # the refused second holder did not release the first's lock
    assert not (folder / LOCK).exists()
    with pytest.raises(KeyboardInterrupt):
        with hold(folder):
            raise KeyboardInterrupt
    assert not (folder / LOCK).exists()


def test_ranks_other_than_0_share_rank_0s_lock(tmp_path: Path) -> None:
    with hold(tmp_path, owner=False):
        assert not (tmp_path / LOCK).exists()
    with hold(tmp_path), hold(tmp_path, owner=False):  # a rank of the same job inside rank 0's hold
        assert read_owner(tmp_path).pid == os.getpid()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from /proc")
def test_a_reused_pid_is_not_mistaken_for_the_owner() -> None:
    me = Owner.me()
    assert me.alive() is True
    assert Owner(me.pid, me.host, me.started, process_start="1").alive() is False  # same pid, another process
    assert Owner(me.pid, "another-host", me.started).alive() is None


def test_an_unreadable_lock_is_named(tmp_path: Path) -> None:
    (tmp_path / LOCK).write_text("{half")
    with pytest.raises(CamexpError, match=f"{tmp_path / LOCK}: unreadable lock file .*delete it"):
        with hold(tmp_path):
            pass


def test_the_refusal_names_the_command_holding_the_folder(tmp_path: Path) -> None:
    """A folder held by `camexp study make` is not said to be held by 'another camexp run'; a lock written
    before the command was recorded (no `command` key) was a run's."""
    folder = tmp_path / "study"
    with hold(folder, command="camexp study make"):
        assert read_owner(folder).command == "camexp study make"
        with pytest.raises(CamexpError, match=f"{folder}: another camexp study make is writing this folder"):
            with hold(folder, command="camexp distill"):
                pass
    old = tmp_path / "old"
    old.mkdir()
    (old / LOCK).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "x"}))
    with pytest.raises(CamexpError, match=f"{old}: another camexp run is writing this folder"):
        with hold(old):
            pass
