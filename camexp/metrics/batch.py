"""The one batch context: what every per-batch job (a per-batch metric or an analysis, camexp/jobs.py) sees.

`BatchContext` holds the batch's pixel images, the run's Explanation (maps, targets, logits), the explainer
(for other classes' maps) with its scorer, and the collated batch (image ids, labels, boxes). Values several
jobs need are computed lazily and once per batch: the model-space images, each map's pixel ranking (one
stable sort per map), the target scores on the full images, and the maps of classes other than the target
(pointing games, mLoc): `class_maps` explains each (image, class) pair at most once per batch, in batched
calls, and serves every job from that cache.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from camexp.accel import chunks
from camexp.errors import CamexpError
from camexp.explain.model_methods import image_keys
from camexp.explain.scoring import target_scores

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig
    from camexp.explain.core import Explainer, Explanation
    from camexp.explain.scoring import Scorer

T = TypeVar("T")
# what one re-explanation of a method costs, in the words `camexp metrics` / `camexp analyses` use
REEXPLANATION = "forward, backward with a gradient method, the method's own model calls"


def class_maps_cost(pairs: str) -> str:
    """The cost, in `camexp metrics` / `camexp analyses`, of a job that reads `class_maps` for `pairs`."""
    return (
        f"one re-explanation of every method per {pairs} ({REEXPLANATION}); the target's maps are the run's own, "
        "and each (image, class) pair is explained once for every metric and analysis"
    )


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """(B,H,W) maps -> (B, H*W) int64: each pixel's place in the map's descending order, ties by ascending
    pixel index (one stable sort). Pixel k is among the first n of the order exactly when rank[k] < n."""
    flat = maps.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


@dataclass
class BatchContext:
    """One batch of a run as every per-batch job sees it; tensors on the run's device, the good images only.
    `own(name)`: where this process appends to the run folder's file `name` (the runner's per-rank naming)."""

    cfg: ExperimentConfig
    explainer: Explainer
    x: torch.Tensor  # (B,3,H,W) pixel-space images in [0,1]
    explanation: Explanation
    batch: dict[str, Any]  # the collated batch restricted to the good images (index, image_id, boxes, scale, ...)
    validated: Mapping[str, Any]  # settings key -> its metric's validated settings, once per run (validate_settings)
    own: Callable[[str], Path] | None = field(default=None, repr=False)
    _cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(self.explanation.maps)

    @property
    def targets(self) -> torch.Tensor:
        return self.explanation.targets

    @property
    def maps(self) -> dict[str, torch.Tensor]:
        """Method -> (B,H,W) normalised maps of the targets."""
        return self.explanation.maps

    @property
    def logits(self) -> torch.Tensor:
        return self.explanation.logits

    @property
    def image_ids(self) -> list[str]:
        return self.batch["image_id"]

    @property
    def y(self) -> torch.Tensor:
        """(B,) the target's confidence (the run's `confidence`) on the full images: the records' Y."""
        return self.full_scores(self.cfg.confidence)

    def path(self, name: str) -> Path:
        """Where this process appends to the run folder's file `name` (a per-rank file under torchrun)."""
        if self.own is None:
            raise ValueError(f"this batch context writes no files ({name})")
        return self.own(name)

    @property
    def scorer(self) -> Scorer:
        return self.explainer.scorer

    @property
    def score_kind(self) -> str:
        """The perturbation metrics' score: `perturbation.score`, where `confidence` means the run's."""
        kind = self.settings("perturbation").score
        return self.cfg.confidence if kind == "confidence" else kind

    def settings(self, key: str) -> Any:
        """The validated settings a metric reads under config key `key`."""
        if key not in self.validated:
            raise CamexpError(f"settings.{key}: no registered metric reads settings under {key!r}")
        return self.validated[key]

    def cached(self, key: Any, make: Callable[[], T]) -> T:
        """`make()` once per batch under `key`, shared by every metric of the batch."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def image_keys(self) -> list[str]:
        """Each image's seeding key: its id, or a hash of its pixels without ids (`image_keys`)."""
        return self.cached("image_keys", lambda: image_keys(self.x, self.batch.get("image_id")))

    def normalized(self) -> torch.Tensor:
        """(B,3,H,W) the images in model space (mean/std normalised), where perturbation metrics edit pixels."""
        return self.cached("normalized", lambda: self.scorer.model.normalize(self.x).float())

    def ranks(self, method: str) -> torch.Tensor:
        """(B, H*W) pixel ranks of `method`'s maps (see `pixel_ranks`)."""
        return self.cached(("ranks", method), lambda: pixel_ranks(self.explanation.maps[method]))

    def full_scores(self, kind: str | None = None) -> torch.Tensor:
        """(B,) float64 score of the target on the full images from the run's own logits: `kind` (softmax,
        sigmoid, logit), by default `score_kind`. With the run's `confidence` this is the records' Y."""
        kind = kind or self.score_kind
        return self.cached(("full", kind), lambda: target_scores(self.explanation.logits, self.targets, kind))

    def scores(self, count: int, images: Callable[[torch.Tensor], torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """(count,) float64 scores (`score_kind`) of model-space images built pass by pass: `images(jobs)`
        returns the images of job numbers `jobs`; targets (count,). Memory holds one pass at a time, as large as
        the scorer allots generated images (`Scorer.pass_chunk`: on the CPU, the cost is per pass)."""
        out = torch.empty(count, dtype=torch.float64, device=self.x.device)
        chunk = self.scorer.pass_chunk(self.x, count)
        for span in chunks(count, chunk):
            jobs = torch.arange(span.start, span.stop, device=self.x.device)
            logits = self.scorer.logits(images(jobs), normalized=True, chunk=chunk)
            out[jobs] = target_scores(logits, targets[jobs], self.score_kind)
        return out

    def class_maps(self, pos: torch.Tensor, classes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Maps (P,H,W) per method explaining class classes[p] of image pos[p]: the run's own maps where the
        class is the image's target, the rest explained in one batched call. Cached per (image, class)."""
        store: dict[tuple[int, int], tuple[int, int]] = self._cache.setdefault("class_rows", {})
        chunks: list[dict[str, torch.Tensor]] = self._cache.setdefault("class_chunks", [self.explanation.maps])
        pairs = list(zip(pos.tolist(), classes.tolist()))
        targets = self.targets.tolist()
        for i, c in pairs:
            if c == targets[i]:
                store.setdefault((i, c), (0, i))
        need = list(dict.fromkeys(p for p in pairs if p not in store))
        if need:
            sel = torch.tensor([i for i, _ in need], device=self.x.device)
            cls = torch.tensor([c for _, c in need], device=self.x.device)
            ids = self.batch.get("image_id")  # seeded methods seed by (seed, image id), as in the run's own maps
            need_ids = None if ids is None else [ids[i] for i, _ in need]
            chunks.append(self.explainer.explain(self.x[sel], cls, need_ids).maps)
            store.update({p: (len(chunks) - 1, r) for r, p in enumerate(need)})
        where = [store[p] for p in pairs]
        return {
            m: torch.stack([chunks[k][m][r] for k, r in where]) if where else self.explanation.maps[m][:0]
            for m in self.methods
        }
