"""Copy scikit-image's bundled sample photographs into a folder for the offline demo.

These are real photographs that ship inside the scikit-image wheel (no download), including grayscale
ones, so the demo exercises RGB conversion too.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import skimage.data

PHOTOS = [
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "rocket.jpg",
]


def main(dest: str) -> None:
    src = Path(skimage.data.__file__).parent
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        shutil.copyfile(src / name, out / name)
    print(f"{len(PHOTOS)} scikit-image photos in {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/demo-images")
