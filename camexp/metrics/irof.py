"""IROF, iterative removal of features (Rieger & Hansen 2020; docs/guide/field-metrics.md, "Faithfulness
correlation, IROF, infidelity"): remove superpixels by the map's mean relevance, area over the score curve.

Each image (pixel space, [0,1]) is cut into superpixels by scikit-image's SLIC (`settings.irof.segments`,
`compactness`, labels from 0; computed once per image, shared by every method). Per method, the L segments
are ordered by the map's mean over each segment, descending (ties by segment label). After step l = 1..L
the first l segments are replaced by the baseline (`perturbation`'s substrates; `zero`: the data set's mean
colour in the normalised tensor) and the image is scored (`perturbation.score`); p_l = score_l / score_0,
p_0 = 1 (the run's own score). IROF = the area over that curve on x = l / L in [0, 1]:
1 − Σ_l (p_l + p_{l+1}) / (2L). Higher is better: the score falls fast when the relevant segments go first.

Quantus 0.6 (`IROF`) computes L − Σ_{l=1}^{L-1} (p_l + p_{l+1}) / 2: the curve without its first point and
without normalising x, so its value grows with the number of segments (recorded in docs/guide/field-metrics.md;
`quantus_aoc` is its form, which the tests compare). Cost per image: M·L forwards (L ≈ `segments`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from skimage.segmentation import slic

from camexp.metrics.base import PerImage, Row, batch_metric, settings_of
from camexp.metrics.batch import BatchContext
from camexp.metrics.perturbation import Substrate, substrate

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig

IROF = Row("irof", "IROF (area over the curve)", False, criterion="faithfulness")


class IrofSettings(BaseModel):
    """`settings.irof:` the superpixels (SLIC, scikit-image; Quantus' defaults) and what replaces them."""

    model_config = ConfigDict(extra="forbid")

    segments: int = Field(100, ge=2, description="SLIC's n_segments: about how many superpixels per image")
    compactness: float = Field(10.0, gt=0.0, description="SLIC's compactness (colour against space)")
    baseline: Substrate = Field(
        "zero", description="what replaces a removed superpixel: zero (the mean colour), blur, or [r, g, b] in [0,1]"
    )


def superpixels(image: torch.Tensor, segments: int, compactness: float) -> np.ndarray:
    """(3,H,W) pixel-space image -> (H,W) int64 SLIC labels 0..L-1 (relabelled in order when SLIC skips one)."""
    hwc = np.moveaxis(image.detach().cpu().double().numpy(), 0, -1)
    labels = slic(hwc, n_segments=segments, compactness=compactness, start_label=0)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)


def segment_ranks(labels: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """(P,) segment labels 0..L-1 and (P,) map -> (P,) each pixel's segment's place (0 = first removed) in
    the descending order of the segments' mean map value, ties by label."""
    count = int(labels.max()) + 1
    sums = torch.zeros(count, dtype=torch.float64, device=heat.device).index_add_(0, labels, heat.double())
    sizes = torch.bincount(labels, minlength=count).double()
    order = torch.sort(sums / sizes, descending=True, stable=True).indices
    place = torch.empty_like(order).scatter_(0, order, torch.arange(count, device=order.device))
    return place[labels]


def aoc(curve: np.ndarray) -> float:
    """IROF of one curve p_0 = 1, p_1..p_L: 1 − the trapezoid area on x = l / L."""
    steps = len(curve) - 1
    return float(1.0 - (curve[:-1] + curve[1:]).sum() / (2 * steps))


def quantus_aoc(curve: np.ndarray) -> float:
    """Quantus 0.6's IROF of the same curve: L − the trapezoid area of p_1..p_L with unit spacing."""
    return float(len(curve) - 1 - (curve[1:-1] + curve[2:]).sum() / 2)


def irof_curves(batch: BatchContext) -> list[list[np.ndarray]]:
    """Per method and image, the curve p_0 = 1, p_1..p_L of the score ratio as segments are removed; every
    step image of the batch is one job of one chunked stream."""
    s = batch.settings("irof")
    b, _, h, w = batch.x.shape
    labels = batch.cached(
        ("irof_segments", s.segments, s.compactness),
        lambda: [torch.from_numpy(superpixels(img, s.segments, s.compactness)).flatten() for img in batch.x],
    )
    counts = [int(lab.max()) + 1 for lab in labels]
    places = torch.stack(
        [
            torch.stack([segment_ranks(labels[i].to(batch.x.device), batch.maps[m][i].flatten()) for i in range(b)])
            for m in batch.methods
        ]
    )  # (M, B, P)
    # jobs: per method, per image, steps 1..L_i
    job_m, job_i, job_l = [], [], []
    for j in range(len(batch.methods)):
        for i, count in enumerate(counts):
            job_m += [j] * count
            job_i += [i] * count
            job_l += list(range(1, count + 1))
    device = batch.x.device
    jm, ji, jl = (torch.tensor(v, device=device) for v in (job_m, job_i, job_l))
    xn, base = batch.normalized(), substrate(batch, s.baseline)

    def images(jobs: torch.Tensor) -> torch.Tensor:
        removed = (places[jm[jobs], ji[jobs]] < jl[jobs, None]).view(-1, 1, h, w)
        return torch.where(removed, base[ji[jobs]], xn[ji[jobs]])

    scores = batch.scores(len(job_m), images, batch.targets[ji]).cpu().numpy()
    full = batch.full_scores().cpu().numpy()
    out, start = [], 0
    for _ in batch.methods:
        per_image = []
        for i, count in enumerate(counts):
            with np.errstate(invalid="ignore", divide="ignore"):
                per_image.append(np.concatenate([[1.0], scores[start : start + count] / full[i]]))
            start += count
        out.append(per_image)
    return out


def _note(cfg: ExperimentConfig) -> str:
    s = settings_of(cfg, "irof")
    return f"; SLIC with about {s.segments} segments (compactness {s.compactness:g}), baseline {s.baseline}"


@batch_metric(
    "irof",
    "area over the score curve as SLIC superpixels are removed by mean relevance (Rieger & Hansen 2020): "
    "higher is better",
    rows=(IROF,),
    settings=IrofSettings,
    note=_note,
    cost="M x L forwards, L the image's SLIC segments (about settings.irof.segments = 100)",
)
def irof(batch: BatchContext) -> list[PerImage]:
    curves = irof_curves(batch)
    pos = torch.arange(len(batch.x), device=batch.x.device)
    values = torch.tensor([[aoc(c) for c in per_image] for per_image in curves], dtype=torch.float64)
    return [PerImage(m, "irof", pos, batch.targets, values[j].to(pos.device)) for j, m in enumerate(batch.methods)]
