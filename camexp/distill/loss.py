"""The loss of learning from explanations (Grad-CAM++ paper §5, eqs. 27-28), differentiable in the student.

L = L_task + alpha * ||L^c_s - L^c_t||^2_2 (+ lambda * L_KD). L^c is a registered gradient method of
camexp/explain/methods.py (Grad-CAM++ with the exact alpha, Grad-CAM, ...) applied to the student's own A and
G, where G = dY^c/dA comes from `torch.autograd.grad(create_graph=True)`: the map, its alpha (with the
gradient's higher powers) and its ReLU all stay in the graph, so the optimiser differentiates through them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from camexp.explain.methods import Method, MethodInputs
from camexp.models.layers import forward_hooks
from camexp.models.layout import FeatureLayout

MapNorm = Literal["none", "l2", "cosine"]
KdWeighting = Literal["camexp", "hinton", "attention_transfer"]


@contextmanager
def captured(layer: nn.Module, layout: FeatureLayout) -> Iterator[list[torch.Tensor]]:
    """While active, every output of `layer` is appended, in map layout (B,K,h,w) and still in the graph; the
    model continues on a clone, so an in-place op after the layer cannot change A (as the explainer's hook)."""
    store: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: object, out: torch.Tensor) -> torch.Tensor:
        store.append(layout.to_maps(out))
        return out.clone()

    with forward_hooks([(layer, hook)]):
        yield store


def forward_with_maps(
    model: nn.Module, layer: nn.Module, layout: FeatureLayout, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the layer's activation A of one forward of `model` on x; both in the graph."""
    with captured(layer, layout) as store:
        logits = model(x)
    return logits, store[-1]


def class_maps(
    method: Method, A: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor, create_graph: bool = True
) -> torch.Tensor:
    """(B,m,h,w) maps L^c of `method` for the classes (B,m) of each image (-1: no class in that slot, a zero
    map). One gradient of the logits per slot; with `create_graph` the maps are differentiable in whatever A
    and the logits depend on (the student's parameters)."""
    out = []
    for j in range(classes.shape[1]):
        c = classes[:, j]
        present = c >= 0
        score = logits.gather(1, c.clamp_min(0)[:, None])[:, 0]
        (G,) = torch.autograd.grad((score * present).sum(), A, create_graph=create_graph)
        maps = method(MethodInputs(A=A, G=G, targets=c.clamp_min(0)))
        out.append(maps * present[:, None, None])
    return torch.stack(out, 1)


def map_distance(s: torch.Tensor, t: torch.Tensor, norm: MapNorm = "none") -> torch.Tensor:
    """Distance of maps (..., h, w) -> (...): `none` the squared L2 norm of the difference, a sum over positions
    (the paper's); `l2` the same after scaling each map to unit L2 norm (attention transfer); `cosine`
    1 - cos(s, t) (e2KD). A zero map stays zero under `l2` and has cosine 0."""
    s, t = s.flatten(-2), t.flatten(-2)
    if norm == "cosine":
        return 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-12)
    if norm == "l2":
        s, t = F.normalize(s, dim=-1, eps=1e-12), F.normalize(t, dim=-1, eps=1e-12)
    return (s - t).pow(2).sum(-1)


def explanation_loss(
    student: torch.Tensor, teacher: torch.Tensor, classes: torch.Tensor, norm: MapNorm = "none"
) -> torch.Tensor:
    """Sum over each image's classes of the map distance, mean over the images (as the task loss)."""
    d = map_distance(student, teacher, norm) * (classes >= 0)
    return d.sum() / len(d)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, multilabel: bool) -> torch.Tensor:
    """Hinton's distillation loss, T^2 * KL(p_t^T || p_s^T), mean over images. Single-label: softmax at
    temperature T; multi-label: each class's sigmoid at temperature T as a two-way distribution, summed over
    classes."""
    T = temperature
    s, t = student.float() / T, teacher.float() / T
    if multilabel:
        p = t.sigmoid()
        kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
        return T * T * kl.sum(1).mean()
    return T * T * F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), log_target=True, reduction="batchmean")


def loss_weights(weighting: KdWeighting, kd_weight: float, num_classes: int, multilabel: bool) -> tuple[float, float]:
    """(task weight, KD weight) of an arm with KD, its KD term being `kd_loss` (per image; multi-label: summed
    over classes), with lambda = `kd_weight` and C = `num_classes`. camexp: 1 and lambda. hinton: 1 - lambda and
    lambda (Hinton et al.; multi-label lambda / C, the KD averaged over classes as BCE is). attention_transfer:
    1 - lambda and 2 lambda / C (Zagoruyko & Komodakis' code: kl_div's mean over the B x C elements times
    2 lambda; 0.18 for CIFAR-10 at lambda 0.9)."""
    if weighting == "camexp":
        return 1.0, kd_weight
    if weighting == "hinton":
        return 1.0 - kd_weight, kd_weight / num_classes if multilabel else kd_weight
    return 1.0 - kd_weight, 2.0 * kd_weight / num_classes
