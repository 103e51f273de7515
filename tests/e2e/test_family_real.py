"""XGrad-CAM, Eigen-CAM, Ablation-CAM and Smooth Grad-CAM++ on real ILSVRC2012 images with the real Lite0 weights,
against float64 implementations written here from docs/definitions.md D2 (A and G from a plain full forward and
backward with a hook, no leaf trick, no tail split), to 1e-4 after normalisation. Score-CAM's are in
tests/explain/test_model_methods.py."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from peers import deviation, pytorch_grad_cam_maps, torchcam_maps

from camexp.data import PixelTransform
from camexp.data.images import load_rgb
from camexp.explain.core import Explainer
from camexp.explain.maps import upsample_normalize
from camexp.explain.scoring import Scorer

pytestmark = pytest.mark.slow
TOL = 1e-4


@pytest.fixture(scope="module")
def pictures(ilsvrc_images: Path, lite0) -> torch.Tensor:
    tf = PixelTransform(lite0.spec)
    return torch.stack([tf(load_rgb(p))[0] for p in sorted(ilsvrc_images.iterdir())[:2]])


class Float64:
    """The model in float64; A (and G) of its explained layer from a forward hook that hands the rest of the
    network a leaf copy of the layer's output (written here, independently of camexp's core)."""

    def __init__(self, loaded):
        self.net = copy.deepcopy(loaded.model).double()
        self.layer = self.net.get_submodule("net." + loaded.layer_name)

    def __call__(
        self, x: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Logits, A and, for `targets`, G = d logit_target / dA."""
        store = {}

        def leaf(module, inputs, output):
            store["A"] = output.detach().requires_grad_(targets is not None)
            return store["A"]

        h = self.layer.register_forward_hook(leaf)
        try:
            with torch.set_grad_enabled(targets is not None):
                logits = self.net(x.double())
        finally:
            h.remove()
        a = store["A"]
        if targets is None:
            return logits, a, None
        (g,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), a)
        return logits.detach(), a.detach(), g


@pytest.fixture(scope="module")
def reference(lite0) -> Float64:
    return Float64(lite0)


@pytest.fixture(scope="module")
def clean(reference, pictures) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-1 targets, A and G of the pictures, in float64."""
    logits, _, _ = reference(pictures)
    targets = logits.argmax(1)
    _, a, g = reference(pictures, targets)
    return targets, a, g


def normalised(raw: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    return upsample_normalize(raw.float(), tuple(size))[0]


def test_xgradcam_equals_float64(lite0, pictures, clean, record_property):
    """Ours to 1e-4; pytorch-grad-cam's and torchcam's XGradCAM (an epsilon in the denominator) measured."""
    targets, a, g = clean
    ex = Explainer(lite0, ["xgradcam"]).explain(pictures, targets)
    maps = []
    for i in range(len(a)):
        w = torch.zeros(a.shape[1], dtype=torch.float64)
        for k in range(a.shape[1]):
            total = a[i, k].sum()
            w[k] = 0.0 if total == 0 else (a[i, k] / total * g[i, k]).sum()
        maps.append(torch.einsum("k,khw->hw", w, a[i]).clamp(min=0))
    want = normalised(torch.stack(maps), pictures.shape[-2:])
    assert (ex.maps["xgradcam"] - want).abs().max() < TOL
    from pytorch_grad_cam import XGradCAM
    from torchcam.methods import XGradCAM as TorchcamXGradCAM

    record_property(
        "pytorch_grad_cam_max_deviation", deviation(pytorch_grad_cam_maps(lite0, XGradCAM, pictures, targets), want)
    )
    record_property(
        "torchcam_max_deviation", deviation(torchcam_maps(lite0, TorchcamXGradCAM, pictures, targets), want)
    )


def test_eigencam_equals_numpy_svd_in_float64(lite0, pictures, clean, record_property):
    """Ours to 1e-4; pytorch-grad-cam's EigenCAM (which centres the positions and leaves the sign to the SVD)
    measured."""
    targets, a, _ = clean
    ex = Explainer(lite0, ["eigencam"]).explain(pictures)
    maps = []
    for i in range(len(a)):
        m = a[i].numpy().reshape(a.shape[1], -1).T  # (h*w, K), not centred
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        proj = m @ vt[0]
        proj = -proj if (proj * m.sum(1)).sum() < 0 else proj
        maps.append(torch.from_numpy(np.maximum(proj, 0).reshape(a.shape[2:])))
    want = normalised(torch.stack(maps), pictures.shape[-2:])
    assert (ex.maps["eigencam"] - want).abs().max() < TOL
    from pytorch_grad_cam import EigenCAM

    record_property(
        "pytorch_grad_cam_max_deviation", deviation(pytorch_grad_cam_maps(lite0, EigenCAM, pictures, targets), want)
    )


def ablationcam_float64(
    reference: Float64, a: torch.Tensor, targets: torch.Tensor, size: tuple[int, ...]
) -> torch.Tensor:
    """Lite0's layer feeds timm's forward_head: y_k from that head on A with channel k zeroed, channel by channel."""
    head = reference.net.net.forward_head
    maps = []
    with torch.no_grad():
        for i in range(len(a)):
            c = int(targets[i])
            y = head(a[i : i + 1])[0, c]
            w = torch.zeros(a.shape[1], dtype=torch.float64)
            for ks in torch.arange(a.shape[1]).split(128):  # 128 channels per call, each ablated alone
                ablated = a[i].repeat(len(ks), 1, 1, 1)
                for row, k in enumerate(ks):
                    ablated[row, k] = 0
                w[ks] = (y - head(ablated)[:, c]) / y
            maps.append(torch.einsum("k,khw->hw", w, a[i]).clamp(min=0))
    return normalised(torch.stack(maps), size)


def test_ablationcam_equals_float64_with_the_models_own_head(lite0, pictures, reference, clean):
    targets, a, _ = clean
    ex = Explainer(lite0, ["ablationcam"]).explain(pictures, targets)
    assert ex.counts["ablationcam"]["tail_passes"] < a.shape[0] * a.shape[1]  # all-zero channels were skipped
    assert (ex.maps["ablationcam"] - ablationcam_float64(reference, a, targets, pictures.shape[-2:])).abs().max() < TOL


def test_ablationcam_on_a_small_image_and_pytorch_grad_cams_deviation(lite0, pictures, reference, record_property):
    """pytorch-grad-cam's AblationCAM runs the whole network once per channel (1280 per image), so it is
    measured on one picture at 112x112; it zeroes a channel as we do when the layer's minimum is 0 (ReLU6 here)."""
    from pytorch_grad_cam import AblationCAM

    x = torch.nn.functional.interpolate(pictures[:1], size=(112, 112), mode="bilinear", antialias=True)
    logits, _, _ = reference(x)
    targets = logits.argmax(1)
    _, a, _ = reference(x, targets)
    want = ablationcam_float64(reference, a, targets, x.shape[-2:])
    ours = Explainer(lite0, ["ablationcam"]).explain(x, targets).maps["ablationcam"]
    assert (ours - want).abs().max() < TOL
    record_property("ours_max_deviation", deviation(ours, want))
    record_property(
        "pytorch_grad_cam_max_deviation", deviation(pytorch_grad_cam_maps(lite0, AblationCAM, x, targets), want)
    )


def seed_of(seed: int, image_id: str) -> int:
    """The seeding rule documented in docs/definitions.md: sha256('<seed>\\0<image id>'), first 8 bytes,
    little-endian."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{image_id}".encode()).digest()[:8], "little")


def test_smoothgradcampp_equals_float64(lite0, pictures, reference, clean):
    n, spread, seed, ids = 2, 0.15, 3, ["first", "second"]
    targets, a, _ = clean
    ex = Explainer(lite0, [("s", "smoothgradcam++", {"n": n, "spread": spread, "seed": seed})]).explain(
        pictures, targets, ids
    )
    gens = [torch.Generator().manual_seed(seed_of(seed, i)) for i in ids]
    sigma = spread * (pictures.amax((1, 2, 3)) - pictures.amin((1, 2, 3)))
    w = torch.zeros(a.shape[:2], dtype=torch.float64)
    for _ in range(n):
        noisy = torch.stack(
            [pictures[i] + sigma[i] * torch.randn(pictures.shape[1:], generator=g) for i, g in enumerate(gens)]
        )
        _, a_s, g_s = reference(noisy, targets)
        s = a_s.sum((2, 3), keepdim=True)
        denom = 2 * g_s**2 + s * g_s**3  # eq. (14) in its G^2 form
        alpha = torch.where(denom != 0, g_s**2 / torch.where(denom != 0, denom, 1.0), 0.0)
        w += (alpha * g_s.clamp(min=0)).sum((2, 3)) / n
    want = normalised(torch.einsum("bk,bkhw->bhw", w, a).clamp(min=0), pictures.shape[-2:])
    assert (ex.maps["s"] - want).abs().max() < TOL


@pytest.fixture(scope="module")
def early_layer():
    """Lite0 explained at blocks.0 (16 channels): the network cannot be split there, so the tail is a full
    forward with the layer's output substituted."""
    from camexp.config import ModelConfig
    from camexp.models import build_model

    return build_model(
        ModelConfig(name="tf_efficientnet_lite0", weights="efficientnet-lite0-package", layer="blocks.0")
    )


def test_ablationcam_through_a_full_forward_tail_equals_float64(early_layer, pictures):
    x = torch.nn.functional.interpolate(pictures, size=(112, 112), mode="bilinear", antialias=True)  # cheaper
    assert early_layer.tail.kind == "full_forward"
    ex = Explainer(early_layer, ["ablationcam"], scorer=Scorer(early_layer.model, chunk=5)).explain(x)
    ref = Float64(early_layer)
    _, a, _ = ref(x)
    maps = []
    with torch.no_grad():
        for i in range(len(x)):
            c = int(ex.targets[i])
            ablated = a[i].repeat(a.shape[1] + 1, 1, 1, 1)  # row 0: A itself; row 1 + k: channel k zeroed
            for k in range(a.shape[1]):
                ablated[1 + k, k] = 0
            h = ref.layer.register_forward_hook(lambda m, inp, out: ablated)  # noqa: B023 (removed below)
            try:
                scores = ref.net(x[i : i + 1].double().expand(len(ablated), -1, -1, -1))[:, c]
            finally:
                h.remove()
            maps.append(torch.einsum("k,khw->hw", (scores[0] - scores[1:]) / scores[0], a[i]).clamp(min=0))
    assert (ex.maps["ablationcam"] - normalised(torch.stack(maps), x.shape[-2:])).abs().max() < TOL
