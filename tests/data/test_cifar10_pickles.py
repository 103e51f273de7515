"""The CIFAR-10 reader builds only data: a crafted pickle that names any callable is refused before it runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from camexp.config import DatasetConfig
from camexp.data import list_dataset
from camexp.errors import CamexpError
from tests.distill.test_distill import NAMES, write_cifar


class _Runs:
    """Unpickling this calls os.system: what the audit's crafted batches.meta did."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMEXP_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("victim", ["batches.meta", "test_batch"])
def test_a_pickle_that_runs_code_is_refused_before_it_runs(tmp_path: Path, victim: str) -> None:
    write_cifar(tmp_path / "d")
    marker = tmp_path / "pwned"
    payload = {b"label_names": [n.encode() for n in NAMES], b"data": _Runs(marker), b"labels": [0]}
    (tmp_path / "d" / "cifar-10-batches-py" / victim).write_bytes(pickle.dumps(payload))
    with pytest.raises(CamexpError, match=rf"{victim}: not a CIFAR-10 python batch .*posix\.system") as e:
        list_dataset(DatasetConfig(kind="cifar10", root=tmp_path / "d"))
    assert "\n" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_every_pickle_protocol_of_real_batches_still_reads(tmp_path: Path, protocol: int) -> None:
    """Protocol 2 is what the original (Python 2) files use; 5 pickles arrays through numpy's `_frombuffer`."""
    write_cifar(tmp_path / "d", test=3)
    folder = tmp_path / "d" / "cifar-10-batches-py"
    data = np.arange(3 * 3072, dtype=np.uint8).reshape(3, 3072)
    batch = {b"batch_label": b"t", b"labels": [1, 2, 3], b"data": data, b"filenames": [b"a", b"b", b"c"]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
    listing = list_dataset(DatasetConfig(kind="cifar10", root=tmp_path / "d"))
    assert [it.label for it in listing.items] == [1, 2, 3]


def test_garbage_is_one_line_naming_the_file(tmp_path: Path) -> None:
    write_cifar(tmp_path / "d")
    meta = tmp_path / "d" / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(b"\x80\x04\x95garbage that is no pickle")
    with pytest.raises(CamexpError, match=r"batches\.meta: not a CIFAR-10 python batch"):
        list_dataset(DatasetConfig(kind="cifar10", root=tmp_path / "d"))
