"""`kind: cifar10`: CIFAR-10 in its standard python layout, `cifar-10-batches-py/{data_batch_1..5, test_batch,
batches.meta}` (the unpacked "CIFAR-10 python version" archive). Split `train` is data_batch_1..5, `test` the
test_batch (the default).

Each batch is a pickle of a dict with `data` (N x 3072 uint8: 1024 red, then green, then blue values, rows of
32 pixels) and `labels`; `batches.meta` holds the 10 `label_names`. The images are written once as PNG files
(lossless) into a cache folder (`$CAMEXP_CACHE`, default ~/.cache/camexp, under a key of the batch files'
path, size and modification time), so that the rest of camexp reads them like any image file.

The pickles are read by an unpickler that builds only what those files hold (dicts, lists, bytes, numbers and
numpy arrays): a plain `pickle.load` would run whatever code a crafted file names, the moment a data set is
opened. Anything else is refused in one line naming the file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from camexp.config import DatasetConfig
from camexp.data.base import Item, Listing
from camexp.errors import CamexpError

FOLDER = "cifar-10-batches-py"
SPLITS = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
META = "batches.meta"
LAYOUT = f"{FOLDER}/{{data_batch_1..5, test_batch, {META}}} (the unpacked CIFAR-10 python version)"


def list_cifar10(cfg: DatasetConfig) -> Listing:
    """The images of one split with their labels, as cached PNG files."""
    folder = find_cifar_dir(cfg.root)
    split = cfg.split or "test"
    if split not in SPLITS:
        raise CamexpError(f"dataset.split {split!r}: CIFAR-10 has the splits {sorted(SPLITS)}")
    files = [folder / name for name in SPLITS[split]]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in _field(_unpickle(folder / META), "label_names")]
    cache = _cache_dir(files) / split
    labels = (
        _write_pngs(files, cache, len(names)) if not (cache / "labels.npy").is_file() else np.load(cache / "labels.npy")
    )
    items = [Item(path=cache / f"{i:05d}.png", image_id=f"{split}_{i:05d}", label=int(y)) for i, y in enumerate(labels)]
    return Listing(
        items,
        names,
        provenance={"layout": "cifar10-python", "folder": str(folder), "split": split, "png_cache": str(cache)},
    )


def find_cifar_dir(root: Path) -> Path:
    """`root` if it is the cifar-10-batches-py folder, else root/cifar-10-batches-py; a clear error otherwise."""
    for cand in (root, root / FOLDER):
        if cand.is_dir() and all((cand / n).is_file() for n in (*SPLITS["train"], *SPLITS["test"], META)):
            return cand
    raise CamexpError(f"dataset.root {root}: no CIFAR-10 python layout found; expected {LAYOUT} at or below it")


# The globals a CIFAR-10 pickle may name: numpy's array reconstruction (numpy 1's and 2's module paths; protocol 5
# pickles use `_frombuffer`) and `_codecs.encode`, which protocol-2 pickles written by Python 3 use for bytes.
ALLOWED_GLOBALS = frozenset(
    {
        *((f"numpy.{core}.multiarray", "_reconstruct") for core in ("core", "_core")),
        *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _DataOnly(pickle.Unpickler):
    """Refuses every global but numpy's array reconstruction: loading cannot call anything else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never holds; refused")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[Any, Any]:
    try:
        with open(path, "rb") as f:
            data = _DataOnly(f, encoding="bytes").load()
    except Exception as e:  # arbitrary bytes raise any type (MemoryError, KeyError, ...): all mean "not a batch"
        raise CamexpError(f"{path}: not a CIFAR-10 python batch ({e.__class__.__name__}: {e})") from None
    if not isinstance(data, dict):
        raise CamexpError(f"{path}: not a CIFAR-10 python batch (a pickled dict)")
    return data


def _field(data: dict[Any, Any], key: str) -> Any:
    """A batch's entry, whether the pickle keys it as bytes (the original files) or str."""
    for k in (key.encode(), key):
        if k in data:
            return data[k]
    raise CamexpError(f"a CIFAR-10 batch lacks the key {key!r}")


def _cache_dir(files: list[Path]) -> Path:
    stamp = "\n".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    base = Path(os.environ.get("CAMEXP_CACHE", Path.home() / ".cache" / "camexp")).expanduser()
    return base / "cifar10" / hashlib.sha256(stamp.encode()).hexdigest()[:16]


def _write_pngs(files: list[Path], cache: Path, classes: int) -> np.ndarray:
    """Decode the batches into cache/NNNNN.png and labels.npy, written last (a crash leaves no partial cache)."""
    images, labels = [], []
    for path in files:
        batch = _unpickle(path)
        data, y = np.asarray(_field(batch, "data"), dtype=np.uint8), np.asarray(_field(batch, "labels"))
        if data.ndim != 2 or data.shape[1] != 3072 or len(y) != len(data):
            raise CamexpError(f"{path}: expected data of N x 3072 bytes and N labels, found {data.shape} and {len(y)}")
        if len(y) and (y.min() < 0 or y.max() >= classes):
            raise CamexpError(f"{path}: labels must lie in 0..{classes - 1}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(y.astype(np.int64))
    tmp = cache.with_name(cache.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, im in enumerate(np.concatenate(images)):
        Image.fromarray(im, "RGB").save(tmp / f"{i:05d}.png")
    y = np.concatenate(labels)
    np.save(tmp / "labels.npy", y)
    shutil.rmtree(cache, ignore_errors=True)
    tmp.replace(cache)
    return y
