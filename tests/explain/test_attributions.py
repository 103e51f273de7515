"""The reference pixel attributions and the `smooth:` wrapper against Captum configured alike (same target, baseline,
steps, windows, noise, and the method's channel reduction applied to Captum's attribution), on real EfficientNet-Lite0
photographs and, for the ReLU rules, a random-weight VGG-16; and their settings refused in one line before any image.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from peers import user_model

from camexp.config import ModelConfig, SmoothSpec
from camexp.data import PixelTransform
from camexp.data.images import load_rgb
from camexp.errors import CamexpError
from camexp.explain.attributions import gaussian_blur
from camexp.explain.core import Explainer, method_runs
from camexp.explain.model_methods import seed_of
from camexp.explain.scoring import Scorer
from camexp.models import build_model
from tests.explain.torchray_utils import imsmooth as torchray_imsmooth

SIDE = 128  # real photographs, resized: Lite0 is fully convolutional, and a smaller side keeps the passes cheap
IDS = ["chelsea", "coffee"]
RTOL = 1e-5


@pytest.fixture(scope="module")
def photos(photo_dir: Path, lite0) -> torch.Tensor:
    tf = PixelTransform(lite0.spec)
    x = torch.stack([tf(load_rgb(photo_dir / f"{name}.png"))[0] for name in IDS])
    return F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", antialias=True).clamp(0, 1)


def explain(loaded, x: torch.Tensor, method: str, chunk: int | None = 3, ids: list[str] = IDS, **params):
    """(maps as the method returned them (B,H,W), targets, counts) of one method (`params` may hold `smooth`) on
    images `ids`, in forward chunks of `chunk`."""
    ex = Explainer(loaded, [("m", method, params)], scorer=Scorer(loaded.model, chunk=chunk))
    out = ex.explain(x, image_ids=ids)
    return out.layer_maps["m"], out.targets, out.counts["m"]


def close(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """Relative difference of two sets of maps, in norm (elements near 0 make an element-wise ratio meaningless)."""
    return float((ours.double() - reference.detach().double()).norm() / reference.detach().double().norm())


def test_gradient_is_captum_saliency(lite0, photos):
    ours, t, counts = explain(lite0, photos, "gradient")
    theirs = Saliency(user_model(lite0)).attribute(photos.clone().requires_grad_(), target=t, abs=True).amax(1)
    assert close(ours, theirs) <= RTOL
    assert counts == {"forwards": 2, "backwards": 2}


def test_gradient_x_input_is_captum_input_x_gradient(lite0, photos):
    ours, t, _ = explain(lite0, photos, "gradient_x_input")
    theirs = InputXGradient(user_model(lite0)).attribute(photos.clone().requires_grad_(), target=t).sum(1)
    assert close(ours, theirs) <= RTOL


def uniform_baseline(x: torch.Tensor, seed: int) -> torch.Tensor:
    """The documented rule: uniform noise from a CPU generator seeded by (seed, image id)."""
    return torch.stack(
        [torch.rand(tuple(x.shape[1:]), generator=torch.Generator().manual_seed(seed_of(seed, i))) for i in IDS]
    )


def test_blur_baseline_is_torchvisions_gaussian_blur(photos):
    from torchvision.transforms.functional import gaussian_blur as torchvision_blur

    for sigma in (1.5, 3.0):
        theirs = torchvision_blur(photos, kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma)
        assert torch.allclose(gaussian_blur(photos, sigma), theirs, rtol=0, atol=2e-6)


@pytest.fixture(scope="module")
def lite0_64(lite0):
    """Lite0 in float64: on a path between two images some points sit within float32 rounding of a ReLU6 kink, where
    the order of a batch (Captum's step-major, ours image-major) picks the side and moves the map by 1e-3."""
    loaded = copy.deepcopy(lite0)
    loaded.model.double()
    return loaded


@pytest.mark.parametrize("baseline", ["black", "blur", "uniform"])
def test_integrated_gradients_is_captums_right_riemann_sum(lite0_64, photos, baseline):
    """The same baseline handed to Captum (the blur is checked against torchvision above)."""
    sigma, x = 3.0, F.interpolate(photos, size=(64, 64), mode="bilinear", antialias=True).double()  # float64: slow
    ours, t, counts = explain(lite0_64, x, "integrated_gradients", steps=5, baseline=baseline, blur_sigma=sigma)
    base = {
        "black": lambda: torch.zeros_like(x),
        "blur": lambda: gaussian_blur(x, sigma),
        "uniform": lambda: uniform_baseline(x, 0).double(),
    }[baseline]()
    ig = IntegratedGradients(user_model(lite0_64))
    theirs = ig.attribute(x, baselines=base, target=t, n_steps=5, method="riemann_right").sum(1)
    assert close(ours, theirs) <= RTOL
    assert counts == {"forwards": 10, "backwards": 10}  # 5 steps x 2 images, in chunks of 3


def test_occlusion_is_captum_occlusion_with_windows_cut_at_the_edge(lite0, photos):
    window, stride = 48, 32  # 128 = 32 * 2 + 48 + 16: the last windows overhang and are cut, as Captum's
    ours, t, counts = explain(lite0, photos, "occlusion", window=window, stride=stride)
    occ = Occlusion(user_model(lite0))
    theirs = occ.attribute(photos, (3, window, window), strides=(3, stride, stride), target=t, baselines=0)
    assert close(ours, theirs.mean(1)) <= RTOL
    assert counts == {"forwards": 2 * (4 * 4 + 1)}


def noise_of(x: torch.Tensor, n: int, sigma: float, seed: int) -> torch.Tensor:
    """(B*n,3,H,W) noise in Captum's row order (image-major), drawn by the documented rule: copy s of image i is the
    s-th N(0,1) draw of its generator seeded by (seed, id), times sigma * (max - min) of the image."""
    rows = []
    for img, key in zip(x, IDS, strict=True):
        gen = torch.Generator().manual_seed(seed_of(seed, key))
        scale = sigma * (img.max() - img.min())
        rows += [scale * torch.randn(tuple(x.shape[1:]), generator=gen) for _ in range(n)]
    return torch.stack(rows)


@pytest.mark.parametrize(
    "method, captum, kind, reduce, extra",
    [
        ("gradient", Saliency, "mean", lambda a: a.abs().amax(1), {"abs": False}),
        ("gradient", Saliency, "var", lambda a: a.abs().amax(1), {"abs": False}),
        ("gradient_x_input", InputXGradient, "mean", lambda a: a.sum(1), {}),
    ],
)
def test_smooth_is_captum_noise_tunnel(lite0, photos, monkeypatch, method, captum, kind, reduce, extra):
    """SmoothGrad / VarGrad of the signed attribution, reduced after (the paper's and NoiseTunnel's order)."""
    n, sigma = 3, 0.2
    ours, t, counts = explain(lite0, photos, method, smooth={"n": n, "sigma": sigma, "kind": kind})
    noise = noise_of(photos, n, sigma, 0)
    monkeypatch.setattr(
        NoiseTunnel, "_add_noise_to_input", staticmethod(lambda inp, stdev, k: inp.repeat_interleave(k, 0) + noise)
    )
    nt = NoiseTunnel(captum(user_model(lite0)))
    nt_type = "smoothgrad" if kind == "mean" else "vargrad"
    theirs = nt.attribute(photos, nt_type=nt_type, nt_samples=n, target=t, **extra)  # Saliency: the signed gradient
    assert close(ours, reduce(theirs)) <= RTOL
    assert counts == {"forwards": 6, "backwards": 6}


def test_smooth_of_a_cam_is_the_mean_of_its_maps_on_each_copy(lite0, photos):
    """A CAM is smoothed at the layer's resolution: the mean of its maps explained on each noisy copy alone."""
    ours, t, counts = explain(lite0, photos, "gradcam", smooth={"n": 2, "sigma": 0.1})
    noise = noise_of(photos, 2, 0.1, 0).view(2, 2, *photos.shape[1:])  # (image, copy, ...)
    ex = Explainer(lite0, ["gradcam"])
    maps = [ex.explain(photos + noise[:, s], t).layer_maps["gradcam"] for s in range(2)]
    assert close(ours, (maps[0] + maps[1]) / 2) <= RTOL
    assert counts == {"forwards": 4, "head_backwards": 4}


def test_maps_do_not_depend_on_chunks_or_batch_mates(lite0, photos):
    whole, _, _ = explain(lite0, photos, "integrated_gradients", chunk=None, steps=3, baseline="uniform")
    alone, _, _ = explain(lite0, photos[1:], "integrated_gradients", 2, IDS[1:], steps=3, baseline="uniform")
    assert close(alone[0], whole[1]) <= RTOL  # the uniform baseline is drawn by image id, not by position


def test_expected_gradients_is_its_definition(lite0, photos):
    """A second implementation: sample s draws alpha, then the reference's index, from a generator seeded by
    (seed, image id, s); the gradient of the logit at r + alpha (x - r), times x - r, averaged and summed over
    channels."""
    samples = 3
    ours, t, counts = explain(lite0, photos, "expected_gradients", samples=samples, reference="batch")
    net = user_model(lite0)
    expected = []
    for i, key in enumerate(IDS):
        total = torch.zeros_like(photos[i])
        for s in range(samples):
            gen = torch.Generator().manual_seed(seed_of(0, key, s))
            alpha = torch.rand((), generator=gen)
            ref = photos[int(torch.randint(len(photos), (), generator=gen))]
            point = (ref + alpha * (photos[i] - ref)).requires_grad_()
            (g,) = torch.autograd.grad(net(point[None])[0, t[i]], point)
            total += (photos[i] - ref) * g
        expected.append((total / samples).sum(0))
    assert close(ours, torch.stack(expected)) <= RTOL
    assert counts == {"forwards": 6, "backwards": 6}


@pytest.fixture(scope="module")
def vgg16():
    """timm's VGG-16 with random weights (ReLU(inplace) everywhere, as the published backbones)."""
    torch.manual_seed(0)
    return build_model(ModelConfig(name="vgg16", weights="random"))


@pytest.mark.parametrize("method, captum", [("guided_backprop", GuidedBackprop), ("deconvnet", Deconvolution)])
def test_relu_rules_are_captums_on_vgg16(vgg16, photos, method, captum):
    x = F.interpolate(photos, size=(64, 64), mode="bilinear", antialias=True)
    ours, t, _ = explain(vgg16, x, method)
    plain, _, _ = explain(vgg16, x, "gradient")
    theirs = captum(user_model(vgg16)).attribute(x.clone().requires_grad_(), target=t).abs().amax(1)
    assert close(ours, theirs) <= RTOL
    assert close(ours, plain) > 0.01  # the rule matters on this net
    assert all(getattr(m, "inplace", True) for m in vgg16.model.modules() if isinstance(m, torch.nn.ReLU))


@pytest.mark.parametrize("method", ["gradient", "guided_backprop", "deconvnet"])
def test_smoothing_is_torchrays_saliency_smoothing(vgg16, photos, method):
    """TorchRay's pointing game smooths these maps (`smooth=0.02`): its imsmooth, as released, with sigma 0.02 x the
    larger side and replicated edges, of the unsmoothed map; through the `smooth:` wrapper, once, of its mean."""
    x = F.interpolate(photos, size=(48, 64), mode="bilinear", antialias=True)
    plain, t, _ = explain(vgg16, x, method)
    ours, _, _ = explain(vgg16, x, method, smoothing=0.02)
    theirs = torchray_imsmooth(plain[:, None], sigma=0.02 * 64, padding_mode="replicate")[:, 0]
    assert close(ours, theirs) <= RTOL and close(ours, plain) > 0.01
    spec = {"n": 2, "sigma": 0.1, "kind": "mean", "seed": 0}
    noisy, _, _ = explain(vgg16, x, method, smooth=spec)
    both, _, _ = explain(vgg16, x, method, smoothing=0.02, smooth=spec)
    assert close(both, torchray_imsmooth(noisy[:, None], sigma=0.02 * 64, padding_mode="replicate")[:, 0]) <= RTOL


def test_relu_rules_are_unavailable_without_relu_modules():
    tiny = build_model(ModelConfig(name="test_convnext", weights="random"))  # GELU
    for name in ("guided_backprop", "deconvnet"):
        with pytest.raises(CamexpError, match=f"method '{name}' needs ReLU/ReLU6 activation modules"):
            Explainer(tiny, [name])


@pytest.mark.parametrize(
    "method, params, said",
    [
        ("integrated_gradients", {"steps": 0}, "steps must be at least 1, not 0"),
        ("integrated_gradients", {"baseline": "grey"}, "baseline must be one of ['black', 'blur', 'uniform']"),
        ("integrated_gradients", {"baseline": 0}, "parameter 'baseline' must be of type str"),
        ("integrated_gradients", {"step": 5}, "no parameter(s) ['step']"),
        ("expected_gradients", {"samples": -1}, "samples must be at least 1"),
        ("occlusion", {"stride": 40, "window": 32}, "stride (40) must not exceed window (32)"),
        ("deconvnet", {"smoothing": -0.1}, "smoothing must be >= 0, not -0.1"),
        ("gradient", {"reduce": "median"}, "reduce must be one of ['sum', 'abs_sum', 'max_abs', 'mean']"),
        ("gradient", {"smooth": {"n": 0}}, "smooth.n: Input should be greater than or equal to 1"),
        ("gradcam", {"smooth": {"kind": "median"}}, "smooth.kind: Input should be 'mean' or 'var'"),
        ("gradcam", {"smooth": {"nn": 3}}, "smooth.nn: Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(method, params, said):
    with pytest.raises(CamexpError) as err:
        method_runs([("m", method, params)])
    assert said in str(err.value) and "\n" not in str(err.value)


def test_smooth_is_recorded_with_the_parameters_and_costed():
    (run,) = method_runs([("m", "integrated_gradients", {"steps": 4, "smooth": {"n": 3}})])
    assert run.resolved == {
        "baseline": "black",
        "steps": 4,
        "blur_sigma": 10.0,
        "seed": 0,
        "reduce": "sum",
        "smooth": SmoothSpec(n=3).model_dump(),
    }
    assert run.cost(None) == "3 noisy copies x (4 forwards + 4 backwards of the whole network (one per step))"
