"""A plug-in module whose own code fails while it is imported (a typo at module level)."""

from __future__ import annotations

SCALE = 2 * undefined_scale  # noqa: F821


def cam(x: object) -> object:
    return x
