"""Faithfulness metrics of docs/definitions.md, D4 as pure tensor functions.

y: (N,) confidence of the target class on the full image; o: (N,) or (N, M) confidence on the
explanation image E = L * I (M methods as columns). All return plain floats or tensors in percent.
"""

from __future__ import annotations

import torch


def _per_image(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """y (N,) shaped to broadcast against o (N,) or (N, M)."""
    return y.reshape(-1, *([1] * (o.dim() - 1)))


def drop_per_image(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """100 max(0, y - o) / y per image (and method): the values average drop averages."""
    return 100.0 * (_per_image(y, o) - o).clamp(min=0) / _per_image(y, o)


def increase_per_image(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """100 1[o > y] per image (and method): the values % increase in confidence averages."""
    return 100.0 * (o > _per_image(y, o)).double()


def average_drop(y: torch.Tensor, o: torch.Tensor) -> float:
    """(100/N) sum max(0, y - o) / y; lower is better."""
    return float(drop_per_image(y, o).mean())


def increase_in_confidence(y: torch.Tensor, o: torch.Tensor) -> float:
    """(100/N) sum 1[o > y]; higher is better."""
    return float(increase_per_image(y, o).mean())


def win_matrix(o: torch.Tensor) -> torch.Tensor:
    """(M, M) percent of images where method a's explanation keeps more confidence than b's (a smaller
    fall, since y is shared), ties counted half to each so W[a,b] + W[b,a] = 100. Diagonal is NaN."""
    a, b = o[:, :, None], o[:, None, :]
    w = 100.0 * ((a > b).double() + 0.5 * (a == b).double()).mean(0)
    return w.fill_diagonal_(float("nan"))


def strictly_best(o: torch.Tensor) -> torch.Tensor:
    """(N, M) True where a method alone has an image's highest o (the strictly smallest fall)."""
    is_top = o == o.max(1, keepdim=True).values
    return is_top & (is_top.sum(1, keepdim=True) == 1)


def best_share(o: torch.Tensor) -> torch.Tensor:
    """(M,) percent of images where a method has the strictly smallest fall (our extension); images where
    the best value is shared count for nobody."""
    return 100.0 * strictly_best(o).double().mean(0)


def relative_performance(o_a: torch.Tensor, o_b: torch.Tensor) -> tuple[float, float, float]:
    """Equivalence paper eq. 16/17: R = exp(mean log(o_a / o_b)), plus mean and std (ddof=1) of the
    per-image log ratio. Confidences of exactly 0 give infinite log ratios and are the caller's to avoid
    (they are recorded in float64, where softmax underflow needs a logit gap of ~745)."""
    log_r = torch.log(o_a.double()) - torch.log(o_b.double())
    n = log_r.numel()
    std = float(log_r.std()) if n > 1 else float("nan")
    mean = float(log_r.mean()) if n else float("nan")
    return float(torch.exp(torch.tensor(mean))), mean, std
