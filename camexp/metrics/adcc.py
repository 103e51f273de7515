"""ADCC (Poppi et al., CVPR-W 2021; docs/guide/field-metrics.md, "ADCC"): the harmonic mean of coherency,
1 - complexity and 1 - average drop, the composite score built for CAMs.

Per image and method, with L the run's map (upsampled, min-max normalised to [0,1]) and E = L * I the run's
explanation image (the `occlusion` rule: `pixel` masks the [0,1] image, `normalized` the normalised tensor):

- Coherency: E is explained again by the same method for the same class, in one explainer call per method
  and batch; with r the Pearson correlation over pixels between L and that map L_E, coherency = (r + 1) / 2
  (the paper rescales r to [0,1]). Undefined (NaN) when either map is constant.
- Complexity: the L1 norm of L over the number of pixels, sum |L| / (H W).
- Average drop: max(0, Y - O) / Y, docs/definitions.md D4 for one image, Y the target's `confidence` on the
  image (the records' Y) and O on E, read from the logits of E's re-explanation (no extra forward).
- ADCC = 3 / (1 / coherency + 1 / (1 - complexity) + 1 / (1 - average drop)), 0 when a term is 0.

Each is recorded per image (in [0,1]) and shown in % like the paper; ADCC and coherency higher is better,
complexity and average drop lower. The authors' released `metrics/adcc.py` multiplies where the paper
divides (3 * (...)); camexp follows the paper.
"""

from __future__ import annotations

import torch

from camexp.explain.scoring import target_scores
from camexp.metrics.base import PerImage, Row, batch_metric
from camexp.metrics.batch import BatchContext

ADCC = Row("adcc", "ADCC %", False, scale=100.0, criterion="composite")
COHERENCY = Row("adcc_coherency", "ADCC coherency %", False, scale=100.0, criterion="faithfulness")
COMPLEXITY = Row("adcc_complexity", "ADCC complexity %", True, scale=100.0, criterion="complexity")
AVG_DROP = Row("adcc_avg_drop", "ADCC average drop %", True, scale=100.0, criterion="faithfulness")


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,H,W) x (B,H,W) -> (B,) float64 Pearson correlation of each pair over pixels; NaN for a constant map."""
    a = a.double().flatten(1)
    b = b.double().flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = (a.square().sum(1) * b.square().sum(1)).sqrt()
    return (a * b).sum(1) / torch.where(den > 0, den, torch.nan)


def adcc_score(coherency: torch.Tensor, complexity: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """The paper's harmonic mean of coherency, 1 - complexity and 1 - average drop (0 when a term is 0)."""
    return 3 / (1 / coherency + 1 / (1 - complexity) + 1 / (1 - drop))


def explanation_images(batch: BatchContext, maps: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) pixel-space E = L * I under the run's `occlusion` rule: `normalized` masks the normalised
    tensor, which in pixel space is L * I + (1 - L) * mean."""
    m = maps[:, None].to(batch.x.dtype)
    if batch.cfg.occlusion == "pixel":
        return m * batch.x
    return m * batch.x + (1 - m) * batch.scorer.model.mean


def adcc(batch: BatchContext) -> list[PerImage]:
    pos = torch.arange(len(batch.x), device=batch.x.device)
    ids = batch.batch.get("image_id")
    y = batch.y
    out = []
    for m in batch.methods:
        maps = batch.maps[m]
        again = batch.explainer.only(m).explain(explanation_images(batch, maps), batch.targets, ids)
        coherency = (pearson(maps, again.maps[m]) + 1) / 2
        complexity = maps.double().abs().flatten(1).mean(1)
        o = target_scores(again.logits, batch.targets, batch.cfg.confidence)
        drop = (y - o).clamp(min=0) / y
        out += [
            PerImage(m, ADCC.key, pos, batch.targets, adcc_score(coherency, complexity, drop)),
            PerImage(m, COHERENCY.key, pos, batch.targets, coherency),
            PerImage(m, COMPLEXITY.key, pos, batch.targets, complexity),
            PerImage(m, AVG_DROP.key, pos, batch.targets, drop),
        ]
    return out


batch_metric(
    "adcc",
    "ADCC (Poppi et al. 2021): harmonic mean of coherency, 1 - complexity and 1 - average drop",
    rows=(ADCC, COHERENCY, COMPLEXITY, AVG_DROP),
    cost="one re-explanation per method of its explanation image E = L * I (a forward, a backward with a "
    "gradient method, the method's own model calls); average drop reads that forward's logits",
)(adcc)
