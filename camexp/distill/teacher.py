"""The frozen teacher: its logits and its maps L^c_t for each image's classes, computed by camexp's explainer
(the same code as `camexp run`), resized to the student's map size, and cached once per image when the
training images are not augmented."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from camexp.explain.core import Explainer
from camexp.models import LoadedModel


@dataclass
class TeacherTargets:
    """For a batch: teacher logits (B,C), the classes of the maps (B,m; -1 pads) and per method the maps (B,m,h,w)."""

    logits: torch.Tensor
    classes: torch.Tensor
    maps: dict[str, torch.Tensor]

    def to(self, device: torch.device) -> TeacherTargets:
        return TeacherTargets(
            self.logits.to(device), self.classes.to(device), {k: v.to(device) for k, v in self.maps.items()}
        )


def image_classes(batch: dict[str, Any], logits: torch.Tensor, target: str, multilabel: bool) -> torch.Tensor:
    """(B,m) class indices per image, -1 padded, on the device of `logits`: the teacher's top-1 (of `logits`),
    the label, or every positive class."""
    if target == "teacher_top1":
        return logits.argmax(1)[:, None]
    if not multilabel:
        return batch["label"][:, None].to(logits.device)
    pos = [torch.nonzero(row).flatten() for row in batch["labels"]]
    out = torch.full((len(pos), max(1, max(len(p) for p in pos))), -1, dtype=torch.long)
    for i, p in enumerate(pos):
        out[i, : len(p)] = p
    return out.to(logits.device)


class Teacher:
    """Maps of `methods` on a frozen model, whose layer gives maps of `own_size` at the training input size,
    resized bilinearly to the student's `map_size` when the two differ."""

    def __init__(
        self,
        loaded: LoadedModel,
        methods: list[str],
        target: str,
        multilabel: bool,
        own_size: tuple[int, int],
        map_size: tuple[int, int],
    ):
        self.explainer = Explainer(loaded, methods)
        self.loaded, self.target, self.multilabel = loaded, target, multilabel
        self.own_size, self.map_size = own_size, map_size
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]] = {}
        self.cache_seconds: float | None = None

    @property
    def resized(self) -> bool:
        return tuple(self.own_size) != tuple(self.map_size)

    def targets(self, x: torch.Tensor, batch: dict[str, Any]) -> TeacherTargets:
        """Teacher logits and maps for images x (pixel space) of `batch`: one forward + head backward per class
        slot (the first slot's forward gives the logits; top-1 classes come from that same pass)."""
        if not self.explainer.runs:  # KD only: the logits
            with torch.no_grad():
                logits = self.loaded.model(x).float()
            return TeacherTargets(logits, image_classes(batch, logits, self.target, self.multilabel), {})
        top1 = self.target == "teacher_top1"
        classes = None if top1 else image_classes(batch, x.new_zeros(len(x), 0), self.target, self.multilabel)
        maps: dict[str, list[torch.Tensor]] = {r.name: [] for r in self.explainer.runs}
        logits = None
        for j in range(1 if classes is None else classes.shape[1]):
            out, inputs = self.explainer.activations(x, None if classes is None else classes[:, j].clamp_min(0))
            if classes is None:
                classes = inputs.targets[:, None]
            logits = out.float() if logits is None else logits
            for r in self.explainer.runs:
                m = r(inputs)  # smoothed when the method has a `smooth` setting
                if self.resized:
                    m = F.interpolate(m[:, None], size=self.map_size, mode="bilinear", align_corners=False)[:, 0]
                maps[r.name].append(m * (classes[:, j] >= 0)[:, None, None])
        assert logits is not None and classes is not None
        return TeacherTargets(logits, classes, {k: torch.stack(v, 1).detach() for k, v in maps.items()})

    def store(self, indices: torch.Tensor, t: TeacherTargets) -> None:
        """Keep each image's targets (on the CPU, without padding) under its data set index."""
        for i, index in enumerate(indices.tolist()):
            n = int((t.classes[i] >= 0).sum())
            maps = {k: v[i, :n].cpu() for k, v in t.maps.items()}
            self.cache[index] = (t.logits[i].cpu(), t.classes[i, :n].cpu(), maps)

    def cached(self, indices: torch.Tensor) -> TeacherTargets:
        """The stored targets of a batch, padded to its largest class count."""
        rows = [self.cache[i] for i in indices.tolist()]
        m = max(1, max(len(r[1]) for r in rows))
        h, w = self.map_size
        classes = torch.full((len(rows), m), -1, dtype=torch.long)
        maps = {k: torch.zeros(len(rows), m, h, w) for k in rows[0][2]}
        for i, (_, cls, per) in enumerate(rows):
            classes[i, : len(cls)] = cls
            for k, v in per.items():
                maps[k][i, : len(cls)] = v
        return TeacherTargets(torch.stack([r[0] for r in rows]), classes, maps)
