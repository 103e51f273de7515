"""Reading image files as RGB, with errors that name the file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from camexp.errors import CamexpError


class BadImageError(CamexpError):
    """An image file that cannot be decoded."""


def load_rgb(path: str | Path) -> Image.Image:
    """Decode `path` fully and convert grayscale, palette, CMYK, RGBA or 16-bit images to 8-bit RGB.

    RGBA is composited on white rather than having its alpha dropped, so transparent regions do not turn
    into arbitrary colours. 16-bit grayscale is scaled to 8 bits (PIL's own conversion clips it at 255,
    which turns a 16-bit photograph almost white); 16-bit RGB(A) PNGs PIL already reduces correctly.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in _WIDE_GRAY:
                return _gray16_to_l(im, path).convert("RGB")
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                out = Image.new("RGB", rgba.size, (255, 255, 255))
                out.paste(rgba, mask=rgba.getchannel("A"))
                return out
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"{path}: cannot read image ({_why(Path(path), e)})") from None


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header, without decoding it; None when even that is unreadable
    (decoding the image will then say why)."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def _why(path: Path, e: Exception) -> str:
    """The reason in words, for symbolic links that `ls` shows but nothing can open."""
    if path.is_symlink() and isinstance(e, OSError):
        if e.errno == errno.ELOOP:
            return "symbolic link loop"
        if e.errno == errno.ENOENT:
            return f"broken symbolic link to {os.readlink(path)}"
    return f"{e.__class__.__name__}: {e}"


_WIDE_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _gray16_to_l(im: Image.Image, path: str | Path) -> Image.Image:
    """A 16-bit grayscale image (PNG/TIFF 'I;16', or PGM's 'I' holding 0..65535) as 8-bit 'L', rounding
    v * 255 / 65535. Values outside 0..65535 (32-bit integer or float images) have no known white
    point: those are refused rather than guessed."""
    values = np.asarray(im)
    if im.mode == "F" or values.min() < 0 or values.max() > 65535:
        what = "a floating-point image" if im.mode == "F" else "32-bit values outside 0..65535"
        raise BadImageError(f"{path}: {what}, whose white point is unknown; convert it to 8- or 16-bit first")
    return Image.fromarray(((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8), "L")
