"""One set of rules for annotation boxes, applied where the loaders read them, so that `camexp run` and
`camexp check` judge a box the same way and say the same words.

A box (pixel edges, see `Item`) must span at least one pixel — in the annotation's own inclusive pixel
indices, xmax >= xmin and ymax >= ymin — and lie inside its image. A malformed box is an error naming the
annotation file and the object; with `dataset.bad_boxes: skip` it is dropped (the object's class label
stays), counted and listed in the listing's provenance (run.json, `camexp check`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from camexp.errors import CamexpError

Box = tuple[float, float, float, float]


def box_problem(box: Box, size: tuple[int, int]) -> str | None:
    """Why `box` (x0, y0, x1, y1 pixel edges) is malformed in a W x H image, or None when it is fine."""
    x0, y0, x1, y1 = box
    w, h = size
    if x1 <= x0:
        return "xmax < xmin (inverted box)"
    if y1 <= y0:
        return "ymax < ymin (inverted box)"
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        return f"lies outside the {w}x{h} image"
    return None


@dataclass
class BoxRules:
    """`dataset.bad_boxes` applied while listing: 'error' raises on the first malformed box, 'skip' drops
    and records it."""

    policy: str = "error"
    skipped: list[str] = field(default_factory=list)

    def keep(self, boxes: Sequence[Box], size: tuple[int, int] | None, where: Callable[[int], str]) -> list[bool]:
        """Which of one image's boxes to keep; `where(k)` names box k (file, line or object) for the message.
        Without a known image size only the inversion rule can be applied."""
        kept = []
        for k, box in enumerate(boxes):
            why = box_problem(box, size or (float("inf"), float("inf")))  # type: ignore[arg-type]
            if why and self.policy == "error":
                raise CamexpError(
                    f"{where(k)}: {why}; fix the annotation, or set dataset.bad_boxes: skip "
                    "to drop such boxes (counted in run.json)"
                )
            if why:
                self.skipped.append(f"{where(k)}: {why}")
            kept.append(why is None)
        return kept

    def provenance(self) -> dict[str, Any]:
        """What run.json records: the count and every skipped box, named."""
        return {"boxes_skipped": len(self.skipped), "skipped_boxes": self.skipped} if self.skipped else {}
