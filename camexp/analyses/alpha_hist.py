"""Streaming statistics of the Grad-CAM++ alpha (equivalence paper Fig. 3/4) as pure tensor code.

Storing every alpha of a run is out of the question (B*K*h*w per batch), so the state is small and stays
on the device: a fixed-bin histogram of the non-zero alphas on the tanh-squeezed axis u = tanh(alpha - 0.5)
(the paper's histogram axis: it holds the rare huge outliers inside (-1, 1) while resolving the bulk near
alpha = 0.5 to ~1/BINS), plus exact counts (all entries, non-zero, within [0.45, 0.55]) and running
extremes. Zeros are left out because alpha = 0 exactly where the gradient vanishes, where it plays no role.
Quartiles and whiskers for the box plot are read off the histogram, so they are exact to one bin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

BINS = 2000
NEAR_HALF = (0.45, 0.55)


def squeeze(alpha: torch.Tensor) -> torch.Tensor:
    """The histogram axis: u = tanh(alpha - 0.5) in [-1, 1]."""
    return torch.tanh(alpha - 0.5)


def unsqueeze(u: torch.Tensor) -> torch.Tensor:
    """Inverse of `squeeze`; u = +-1 (saturated tanh) maps to +-inf."""
    return 0.5 + torch.atanh(u)


def bin_edges() -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, BINS + 1, dtype=torch.float64)


@dataclass
class AlphaHistogram:
    """Running alpha statistics; `update` on device tensors, `merge` to combine, plain numbers in `row`."""

    counts: torch.Tensor = field(default_factory=lambda: torch.zeros(BINS, dtype=torch.long))
    total: int | torch.Tensor = 0
    nonzero: int | torch.Tensor = 0
    near_half: int | torch.Tensor = 0
    lo: float | torch.Tensor = float("inf")
    hi: float | torch.Tensor = float("-inf")

    def update(self, alpha: torch.Tensor) -> None:
        """Add every entry of `alpha` (any shape); nothing leaves the device."""
        nz = alpha[alpha != 0].float()
        idx = ((squeeze(nz) + 1) * (BINS / 2)).long().clamp_(0, BINS - 1)
        self.counts = self.counts.to(alpha.device) + torch.bincount(idx, minlength=BINS)
        self.total = self.total + alpha.numel()
        self.nonzero = self.nonzero + nz.numel()
        self.near_half = self.near_half + ((nz >= NEAR_HALF[0]) & (nz <= NEAR_HALF[1])).sum()
        if nz.numel():
            self.lo = torch.minimum(torch.as_tensor(self.lo, device=nz.device), nz.min())
            self.hi = torch.maximum(torch.as_tensor(self.hi, device=nz.device), nz.max())

    def merge(self, other: AlphaHistogram) -> AlphaHistogram:
        return AlphaHistogram(
            self.counts.cpu() + other.counts.cpu(),
            int(self.total) + int(other.total),
            int(self.nonzero) + int(other.nonzero),
            int(self.near_half) + int(other.near_half),
            min(float(self.lo), float(other.lo)),
            max(float(self.hi), float(other.hi)),
        )

    def row(self) -> dict[str, object]:
        """Plain-number state (one host transfer), sparse bins as {bin: count}."""
        counts = self.counts.cpu()
        nz = counts.nonzero()[:, 0]
        return {
            "total": int(self.total),
            "nonzero": int(self.nonzero),
            "near_half": int(self.near_half),
            "min": float(self.lo),
            "max": float(self.hi),
            "bins": {int(i): int(counts[i]) for i in nz},
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AlphaHistogram:
        counts = torch.zeros(BINS, dtype=torch.long)
        for i, n in row["bins"].items():
            counts[int(i)] = int(n)
        return cls(
            counts, int(row["total"]), int(row["nonzero"]), int(row["near_half"]), float(row["min"]), float(row["max"])
        )


@dataclass(frozen=True)
class AlphaSummary:
    """What the figure and summary.md show: counts, extremes, share near 0.5 and box-plot statistics."""

    total: int
    nonzero: int
    min: float
    max: float
    share_near_half: float
    q1: float
    median: float
    q3: float
    whislo: float
    whishi: float


def histogram_quantile(counts: torch.Tensor, q: float) -> float:
    """The q-quantile of alpha from the histogram, linear within a bin on the u axis."""
    c = counts.double()
    cum = c.cumsum(0)
    target = q * float(cum[-1])
    b = int(torch.searchsorted(cum, torch.tensor([target], dtype=torch.float64)).clamp(max=BINS - 1))
    before = float(cum[b - 1]) if b else 0.0
    frac = (target - before) / float(c[b]) if c[b] else 0.0
    edges = bin_edges()
    u = edges[b] + frac * (edges[b + 1] - edges[b])
    return float(unsqueeze(u.clamp(-1 + 1e-12, 1 - 1e-12)))


def summarize_alpha(h: AlphaHistogram) -> AlphaSummary:
    """Box-plot statistics (Tukey whiskers: the most extreme bin centre within 1.5 IQR, clipped to the
    observed extremes) and shares; NaN where there are no non-zero alphas."""
    nonzero = int(h.nonzero)
    if not nonzero:
        nan = float("nan")
        return AlphaSummary(int(h.total), 0, nan, nan, nan, nan, nan, nan, nan, nan)
    counts = h.counts.cpu()
    q1, med, q3 = (histogram_quantile(counts, q) for q in (0.25, 0.5, 0.75))
    iqr = q3 - q1
    edges = bin_edges()
    centres = unsqueeze((edges[:-1] + edges[1:]) / 2)
    inside = (counts > 0) & (centres >= q1 - 1.5 * iqr) & (centres <= q3 + 1.5 * iqr)
    lo, hi = float(h.lo), float(h.hi)
    whislo = max(lo, min(q1, float(centres[inside].min()))) if inside.any() else q1
    whishi = min(hi, max(q3, float(centres[inside].max()))) if inside.any() else q3
    return AlphaSummary(int(h.total), nonzero, lo, hi, int(h.near_half) / nonzero, q1, med, q3, whislo, whishi)
