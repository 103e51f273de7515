"""Where the real test data lives (the checkout's sibling `shared/data`), skipped when absent."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ILSVRC_IMAGES = SHARED_DATA / "ilsvrc2012-val-subset" / "images"
real_images = pytest.mark.skipif(not ILSVRC_IMAGES.is_dir(), reason=f"{ILSVRC_IMAGES} (shared real data) is not here")
