"""Every method against values computed by hand on tiny tensors (docs/definitions.md, D2)."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from camexp.explain.maps import upsample_normalize
from camexp.explain.methods import METHODS, MethodInputs

# One image, two channels, 1x2 spatial. Hand values below use these numbers.
A = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]])  # sum_ab A: channel0 = 4, channel1 = 2
G = torch.tensor([[[[0.5, -0.25]], [[0.0, 1.0]]]])


def run(name: str, a: torch.Tensor = A, g: torch.Tensor = G, **kw) -> torch.Tensor:
    return METHODS[name].fn(MethodInputs(A=a, G=g, targets=torch.tensor([0]), **kw))


def test_gradcam_by_hand():
    # w0 = (0.5 - 0.25)/2 = 0.125, w1 = (0 + 1)/2 = 0.5
    # L = ReLU([0.125*1 + 0.5*2, 0.125*3 + 0.5*0]) = [1.125, 0.375]
    assert torch.allclose(run("gradcam"), torch.tensor([[[1.125, 0.375]]]))


def test_gradcam_plus_uses_positive_gradients_only():
    # w0 = 0.5/2 = 0.25, w1 = 0.5 -> L = [0.25 + 1.0, 0.75] = [1.25, 0.75]
    assert torch.allclose(run("gradcam+"), torch.tensor([[[1.25, 0.75]]]))


def test_gradcampp_alpha_by_hand():
    x = MethodInputs(A=A, G=G, targets=torch.tensor([0]))
    # alpha = G^2 / (2G^2 + S G^3) = 1 / (2 + S G): channel0 S=4: G=.5 -> 1/4, G=-.25 -> 1/1 = 1
    # channel1 S=2: G=0 -> 0 (zero gradient), G=1 -> 1/4
    assert torch.allclose(x.alpha, torch.tensor([[[[0.25, 1.0]], [[0.0, 0.25]]]]))


def test_gradcampp_by_hand():
    # w0 = 0.25*0.5 + 1*ReLU(-.25)=0 -> 0.125; w1 = 0 + 0.25*1 = 0.25
    # L = ReLU([0.125*1 + 0.25*2, 0.125*3]) = [0.625, 0.375]
    assert torch.allclose(run("gradcam++"), torch.tensor([[[0.625, 0.375]]]))


def test_gradcampp_all_keeps_negative_gradients():
    # w0 = 0.25*0.5 + 1*(-0.25) = -0.125; w1 = 0.25 -> L = ReLU([-0.125 + 0.5, -0.375]) = [0.375, 0]
    assert torch.allclose(run("gradcam++all"), torch.tensor([[[0.375, 0.0]]]))


def test_gradcampp_orig_normalises_alpha_over_positive_gradients():
    # channel0: positive-G alphas sum to 0.25 -> alpha/0.25: w0 = 1*0.5 = 0.5
    # channel1: sum 0.25 -> w1 = 1*1 = 1 -> L = [0.5 + 2, 1.5] = [2.5, 1.5]
    assert torch.allclose(run("gradcam++orig"), torch.tensor([[[2.5, 1.5]]]))


def test_zero_denominator_gives_zero_alpha_not_inf():
    # S = 4, G = -0.5: 2 + S*G = 0 -> alpha = 0 (docs/definitions.md D2: alpha = 0 where the denominator is 0)
    g = torch.tensor([[[[-0.5, 0.5]], [[0.0, 0.0]]]])
    x = MethodInputs(A=A, G=g, targets=torch.tensor([0]))
    assert torch.equal(x.alpha, torch.tensor([[[[0.0, 0.25]], [[0.0, 0.0]]]]))
    assert torch.isfinite(run("gradcam++all", g=g)).all()


def test_all_zero_gradients_give_zero_maps():
    g = torch.zeros_like(G)
    for name in (
        "gradcam",
        "gradcam+",
        "gradcam++",
        "gradcam++all",
        "gradcam++orig",
        "hirescam",
        "layercam",
        "xgradcam",
    ):
        assert torch.equal(run(name, g=g), torch.zeros(1, 1, 2)), name


def test_alpha_matches_g_squared_form_in_float64():
    """The 1/(2 + S G) form equals eq. (14)'s G^2/(2G^2 + S G^3) wherever G != 0, without any eps."""
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2, 5, 4, 4, generator=gen, dtype=torch.float64)
    g = torch.randn(2, 5, 4, 4, generator=gen, dtype=torch.float64) * 1e-3  # small gradients, as on Lite0
    s = a.sum((2, 3), keepdim=True)
    ref = g**2 / (2 * g**2 + s * g**3)
    assert torch.allclose(MethodInputs(A=a, G=g, targets=torch.tensor([0, 0])).alpha, ref, rtol=1e-12)


def test_cam_uses_classifier_row_of_target_without_relu():
    w = torch.tensor([[1.0, -1.0], [0.0, 2.0]])  # 2 classes x 2 channels
    out = METHODS["cam"].fn(MethodInputs(A=A, G=None, targets=torch.tensor([0]), cam_weight=w))
    assert torch.allclose(out, torch.tensor([[[-1.0, 3.0]]]))  # 1*A0 - 1*A1: [1-2, 3-0]


def test_hirescam_and_layercam_by_hand():
    # hirescam: sum_k G*A = [0.5*1 + 0*2, -0.25*3 + 1*0] = [0.5, -0.75] -> ReLU -> [0.5, 0]
    assert torch.allclose(run("hirescam"), torch.tensor([[[0.5, 0.0]]]))
    # layercam: sum_k ReLU(G)*A = [0.5, 0] -> [0.5, 0]
    assert torch.allclose(run("layercam"), torch.tensor([[[0.5, 0.0]]]))


def test_xgradcam_by_hand():
    g = torch.tensor([[[[1.0, 0.5]], [[0.25, -1.0]]]])
    # w0 = (1*1 + 3*0.5) / 4 = 0.625; w1 = (2*0.25 + 0*(-1)) / 2 = 0.25
    # L = ReLU([0.625*1 + 0.25*2, 0.625*3 + 0.25*0]) = [1.125, 1.875]
    assert torch.allclose(run("xgradcam", g=g), torch.tensor([[[1.125, 1.875]]]))


def test_xgradcam_zero_sum_channel_gets_zero_weight():
    # channel 1 sums to 0 (all zero, or +1 and -1): w1 = 0, not inf/NaN; only channel 0 counts
    for zero_sum in ([0.0, 0.0], [1.0, -1.0]):
        a = torch.tensor([[[[1.0, 3.0]], [zero_sum]]])
        g = torch.tensor([[[[1.0, 0.5]], [[5.0, 7.0]]]])
        assert torch.allclose(run("xgradcam", a, g), torch.tensor([[[0.625, 1.875]]])), zero_sum


def test_eigencam_rank_one_activations_give_the_spatial_pattern():
    # A_k = c_k * p: M = p c^T has right-singular vector c/|c| and L = M v = |c| p (sign fixed positive)
    p, c = torch.tensor([1.0, 3.0, 0.0, 2.0]), torch.tensor([2.0, 1.0, 0.5])
    a = (c[:, None] * p[None, :]).view(1, 3, 2, 2)
    assert torch.allclose(run("eigencam", a, None), (c.norm() * p).view(1, 2, 2), atol=1e-5)


def test_eigencam_against_numpy_svd():
    import numpy as np

    gen = torch.Generator().manual_seed(2)
    a = torch.rand(3, 6, 4, 5, generator=gen) - 0.3
    out = run("eigencam", a, None)
    for i in range(3):
        m = a[i].double().numpy().reshape(6, -1).T  # rows = positions
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        proj = m @ vt[0]
        if (proj * m.sum(1)).sum() < 0:
            proj = -proj
        assert np.allclose(out[i].numpy().ravel(), np.maximum(proj, 0), atol=1e-5)


def test_eigencam_all_zero_activations_give_a_zero_map():
    assert torch.equal(run("eigencam", torch.zeros(2, 3, 2, 2), None), torch.zeros(2, 2, 2))


def test_center_is_a_gaussian_of_a_quarter_of_the_shorter_side_on_the_layers_grid_with_odd_sides():
    """A 4 x 6 input, a 2 x 2 layer grid: 3 x 3 cells of 4/3 x 2 input pixels, whose centres lie at
    (-4/3, 0, 4/3) and (-2, 0, 2) pixels from the image centre; sigma = 4 / 4. An odd grid stays as it is."""
    x = torch.zeros(2, 3, 4, 6)
    out = run("center", torch.zeros(2, 1, 2, 2), None, x=x)
    assert out.shape == (2, 3, 3)
    sigma = 4 / 4
    for i, dy in enumerate((-4 / 3, 0.0, 4 / 3)):
        for j, dx in enumerate((-2.0, 0.0, 2.0)):
            assert out[0, i, j].item() == pytest.approx(math.exp(-(dy**2 + dx**2) / (2 * sigma**2)), rel=1e-6)
    assert torch.equal(out[0], out[1])
    assert run("center", torch.zeros(1, 1, 3, 5), None, x=torch.zeros(1, 3, 6, 10)).shape == (1, 3, 5)


@pytest.mark.parametrize("side", [7, 14, 28])
def test_the_upsampled_center_peaks_at_the_image_centre(side: int):
    """What TorchRay's center baseline points at: the maximum of the upsampled, normalised map lies within half
    a pixel of the image centre (a layer grid of even side, VGG-16's 14 x 14, would have put it 10.6 px off)."""
    h = w = 224
    cam = run("center", torch.zeros(1, 1, side, side), None, x=torch.zeros(1, 3, h, w))
    up, _ = upsample_normalize(cam, (h, w))
    top = int(up[0].flatten().argmax())
    assert abs(top // w + 0.5 - h / 2) <= 0.5 and abs(top % w + 0.5 - w / 2) <= 0.5


def _seed(seed: int, image_id: str) -> int:
    """The documented rule: the first 8 bytes (little-endian) of sha256('<seed>\\0<image id>')."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{image_id}".encode()).digest()[:8], "little")


def test_random_map_is_seeded_per_image_id_not_per_batch():
    a = torch.zeros(3, 2, 4, 5)
    x = torch.rand(3, 3, 8, 10)
    both = run("random", a, None, x=x, image_ids=["a", "b", "c"])
    for i, image_id in enumerate("abc"):
        alone = run("random", a[i : i + 1], None, x=x[i : i + 1], image_ids=[image_id])
        assert torch.equal(alone[0], both[i])
        assert torch.equal(both[i], torch.rand(4, 5, generator=torch.Generator().manual_seed(_seed(0, image_id))))
    assert not torch.equal(both[0], both[1])
    other_seed = METHODS["random"](
        MethodInputs(A=a, G=None, targets=torch.zeros(3), x=x, image_ids=list("abc")), seed=1
    )
    assert not torch.equal(other_seed, both)


def test_random_map_without_ids_is_seeded_by_the_pixels():
    a = torch.zeros(2, 2, 4, 5)
    x = torch.rand(2, 3, 8, 10)
    both = run("random", a, None, x=x)
    assert torch.equal(run("random", a[1:], None, x=x[1:])[0], both[1])
    assert not torch.equal(both[0], both[1])


@pytest.mark.parametrize("name", sorted(m for m in METHODS if METHODS[m].needs_grad and not METHODS[m].needs_model))
def test_methods_are_per_image(name: str):
    """Batch of two = the two images separately (no cross-image reduction)."""
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 4, 4, generator=gen)
    g = torch.randn(2, 3, 4, 4, generator=gen)
    both = run(name, a, g)
    for i in range(2):
        assert torch.allclose(both[i], run(name, a[i : i + 1], g[i : i + 1])[0])
