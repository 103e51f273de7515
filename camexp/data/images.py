"""Reading image files as RGB, with errors that name the file."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from camexp.errors import CamexpError


class BadImageError(CamexpError):
    """An image file that cannot be decoded."""


def load_rgb(path: str | Path) -> Image.Image:
    """Decode `path` fully and convert grayscale, palette, CMYK or RGBA images to RGB.

    RGBA is composited on white rather than having its alpha dropped, so transparent regions do not turn
    into arbitrary colours.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                out = Image.new("RGB", rgba.size, (255, 255, 255))
                out.paste(rgba, mask=rgba.getchannel("A"))
                return out
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"{path}: cannot read image ({e.__class__.__name__}: {e})") from None
