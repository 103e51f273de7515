"""Shared fixtures: the real data subsets beside the checkout, and tiny image files written on the fly."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout (see its README.md); the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def make_jpeg() -> Callable[..., Path]:
    """Write a real JPEG of `size` (w, h) at `path`, creating its folders."""

    def write(path: Path, size: tuple[int, int] = (40, 30), color: tuple[int, int, int] = (120, 60, 30)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, color).save(path, format="JPEG")
        return path

    return write
