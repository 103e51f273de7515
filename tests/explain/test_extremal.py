"""Extremal perturbation against TorchRay 1.0's released extremal_perturbation() written out here (TorchRay targets
torch 1.x and is not installed: tests/explain/test_torchray.py): its Perturbation pyramid, MaskGenerator, simple
reward, area regulariser and SGD loop as released (debug plots and prints dropped), one image at a time with all its
areas, then its pointing game's reduction (smooth each mask, sum over areas). TorchRay's jitter draws nothing (it
flips the perturbed images on even steps), so both sides are deterministic and must agree to float rounding."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch.optim as optim
from typer.testing import CliRunner

from camexp.cli import app
from camexp.data import PixelTransform
from camexp.data.images import load_rgb
from camexp.explain.core import Explainer
from camexp.explain.methods import METHODS
from camexp.explain.scoring import Scorer
from tests.explain.torchray_utils import imsmooth

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RTOL = 1e-5

# ---- TorchRay 1.0, torchray/attribution/extremal_perturbation.py, as released (imsmooth: torchray_utils.py)


class Perturbation:
    def __init__(self, input, num_levels=8, max_blur=20, type="blur"):
        self.type = type
        self.num_levels = num_levels
        self.pyramid = []
        assert num_levels >= 2
        assert max_blur > 0
        with torch.no_grad():
            for sigma in torch.linspace(0, 1, self.num_levels):
                if type == "blur":
                    y = imsmooth(input, sigma=(1 - sigma) * max_blur)
                elif type == "fade":
                    y = input * sigma
                else:
                    raise AssertionError
                self.pyramid.append(y)
            self.pyramid = torch.cat(self.pyramid, dim=0)

    def apply(self, mask):
        n = mask.shape[0]
        w = mask.reshape(n, 1, *mask.shape[1:])
        w = w * (self.num_levels - 1)
        k = w.floor()
        w = w - k
        k = k.long()
        y = self.pyramid[None, :]
        y = y.expand(n, *y.shape[1:])
        k = k.expand(n, 1, *y.shape[2:])
        y0 = torch.gather(y, 1, k)
        y1 = torch.gather(y, 1, torch.clamp(k + 1, max=self.num_levels - 1))
        return ((1 - w) * y0 + w * y1).squeeze(dim=1)


def simple_reward(activation, target, variant):
    assert variant == "preserve"
    return activation[:, target]


class MaskGenerator:
    def __init__(self, shape, step, sigma, clamp=True, pooling_method="softmax"):
        self.shape = shape
        self.step = step
        self.sigma = sigma
        self.coldness = 20
        self.clamp = clamp
        self.pooling_method = pooling_method
        assert int(step) == step
        self.kernel = lambda z: torch.exp(-2 * ((z - 0.5).clamp(min=0) ** 2))
        self.margin = self.sigma
        self.padding = 1 + math.ceil((self.margin + sigma) / step)
        self.radius = 1 + math.ceil(sigma / step)
        self.shape_in = [math.ceil(z / step) for z in self.shape]
        self.shape_mid = [z + 2 * self.padding - (2 * self.radius + 1) + 1 for z in self.shape_in]
        self.shape_up = [self.step * z for z in self.shape_mid]
        self.shape_out = [z - step + 1 for z in self.shape_up]
        self.weight = torch.zeros((1, (2 * self.radius + 1) ** 2, self.shape_out[0], self.shape_out[1]))
        step_inv = [
            torch.tensor(zm, dtype=torch.float32) / torch.tensor(zo, dtype=torch.float32)
            for zm, zo in zip(self.shape_mid, self.shape_up)
        ]
        for ky in range(2 * self.radius + 1):
            for kx in range(2 * self.radius + 1):
                uy, ux = torch.meshgrid(
                    torch.arange(self.shape_out[0], dtype=torch.float32),
                    torch.arange(self.shape_out[1], dtype=torch.float32),
                    indexing="ij",  # torch 1.x's only behaviour, said explicitly
                )
                iy = torch.floor(step_inv[0] * uy) + ky - self.padding
                ix = torch.floor(step_inv[1] * ux) + kx - self.padding
                delta = torch.sqrt(
                    (uy - (self.margin + self.step * iy)) ** 2 + (ux - (self.margin + self.step * ix)) ** 2
                )
                k = ky * (2 * self.radius + 1) + kx
                self.weight[0, k] = self.kernel(delta / sigma)

    def generate(self, mask_in):
        mask = F.unfold(mask_in, (2 * self.radius + 1,) * 2, padding=(self.padding,) * 2)
        mask = mask.reshape(len(mask_in), -1, self.shape_mid[0], self.shape_mid[1])
        mask = F.interpolate(mask, size=self.shape_up, mode="nearest")
        mask = F.pad(mask, (0, -self.step + 1, 0, -self.step + 1))
        mask = self.weight * mask
        assert self.pooling_method == "softmax"
        mask = (mask * F.softmax(self.coldness * mask, dim=1)).sum(dim=1, keepdim=True)
        m = round(self.margin)
        if self.clamp:
            mask = mask.clamp(min=0, max=1)
        cropped = mask[:, :, m : m + self.shape[0], m : m + self.shape[1]]
        return cropped, mask


def extremal_perturbation(
    model, input, target, areas, max_iter=800, num_levels=8, step=7, sigma=21, jitter=True, smooth=0
):
    """TorchRay's extremal_perturbation() with perturbation='blur', variant='preserve', reward simple_reward,
    resize=False; debug, print_iter and the energy history dropped."""
    momentum = 0.9
    learning_rate = 0.01
    regul_weight = 300
    device = input.device
    for p in model.parameters():
        p.requires_grad_(False)
    perturbation = Perturbation(input, num_levels=num_levels, type="blur")
    shape = perturbation.pyramid.shape[2:]
    mask_generator = MaskGenerator(shape, step, sigma)
    h, w = mask_generator.shape_in
    pmask = torch.ones(len(areas), 1, h, w).to(device)
    max_area = np.prod(mask_generator.shape_out)
    reference = torch.ones(len(areas), max_area).to(device)
    for i, a in enumerate(areas):
        reference[i, : int(max_area * (1 - a))] = 0
    optimizer = optim.SGD([pmask], lr=learning_rate, momentum=momentum, dampening=momentum)
    for t in range(max_iter):
        pmask.requires_grad_(True)
        mask_, mask = mask_generator.generate(pmask)
        x = perturbation.apply(mask_)
        if jitter and t % 2 == 0:
            x = torch.flip(x, dims=(3,))
        y = model(x)
        reward = simple_reward(y, target, variant="preserve")
        reward = reward.reshape(len(areas), -1).mean(dim=1)
        mask_sorted = mask.reshape(len(areas), -1).sort(dim=1)[0]
        regul = -((mask_sorted - reference) ** 2).mean(dim=1) * regul_weight
        energy = (reward + regul).sum()
        optimizer.zero_grad()
        (-energy).backward()
        optimizer.step()
        pmask.data = pmask.data.clamp(0, 1)
        regul_weight *= 1.0035
    mask_ = mask_.detach()
    if smooth > 0:
        mask_ = imsmooth(mask_, sigma=smooth * min(mask_.shape[2:]), padding_mode="constant")
    return mask_


def torchray_maps(
    loaded, x: torch.Tensor, targets: torch.Tensor, areas: list[float], smoothing: float = 0.09, **kw
) -> torch.Tensor:
    """TorchRay's pointing-game saliency of each image (B,H,W): its masks, smoothed, summed over the areas (the
    benchmark's `mask.sum(dim=0)`), one image at a time on the normalised input, on a copy of the network (TorchRay
    switches its parameters' gradients off)."""
    net = copy.deepcopy(loaded.model.net)
    norm = loaded.model.normalize(x)
    return torch.cat(
        [
            extremal_perturbation(net, norm[i : i + 1], int(targets[i]), areas, smooth=smoothing, **kw).sum(0)
            for i in range(len(x))
        ]
    )


# ---- camexp against it


def ours(
    loaded, x: torch.Tensor, chunk: int | None = None, **params
) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """camexp's maps (B,H,W) as the method returns them, targets and counters, in forward chunks of `chunk`."""
    ex = Explainer(loaded, [("m", "extremal_perturbation", params)], scorer=Scorer(loaded.model, chunk=chunk))
    out = ex.explain(x)
    return out.layer_maps["m"], out.targets, out.counts["m"]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


SETTINGS = {"areas": [0.05, 0.2], "max_iter": 4}


def test_maps_are_torchrays_on_a_tiny_cnn(tiny, images):
    """Two images x two areas optimised as one batch of masks = TorchRay image by image. TorchRay's own map for
    another class differs by 20 times the tolerance or more (random weights: small logits), so the comparison sees
    the reward, not only the area penalty."""
    maps, t, counts = ours(tiny, images, **SETTINGS)
    want = torchray_maps(tiny, images, t, **SETTINGS)
    assert maps.shape == want.shape == images.shape[:1] + images.shape[2:]
    torch.testing.assert_close(maps, want, rtol=RTOL, atol=RTOL * float(want.abs().max()))
    assert counts == {"forwards": 2 * 2 * 4, "backwards": 2 * 2 * 4}
    other = torchray_maps(tiny, images[:1], (t[:1] + 1) % 1000, **SETTINGS)
    assert relative(other, want[:1]) > 20 * RTOL


def test_other_settings_on_a_wide_image_are_torchrays(tiny):
    """No jitter, no smoothing, another pyramid and grid, on a 64 x 96 image (TorchRay keeps the aspect ratio)."""
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    params = {
        "areas": [0.1],
        "max_iter": 3,
        "jitter": False,
        "smoothing": 0.0,
        "num_levels": 4,
        "step": 5,
        "sigma": 9.0,
    }
    maps, t, _ = ours(tiny, x, **params)
    want = torchray_maps(tiny, x, t, **params)
    assert maps.shape == (1, 64, 96)
    torch.testing.assert_close(maps, want, rtol=RTOL, atol=RTOL * float(want.abs().max()))


def test_a_batch_gives_the_maps_of_its_images_one_by_one(tiny, images):
    """Two images x two areas in forward chunks of 3 masks (one chunk holds both images) = each image alone."""
    settings = {**SETTINGS, "step": 5, "sigma": 9.0}  # a smaller mask generator: three runs here
    together, t, _ = ours(tiny, images, chunk=3, **settings)
    alone = torch.cat([ours(tiny, images[i : i + 1], **settings)[0] for i in range(len(images))])
    torch.testing.assert_close(together, alone, rtol=RTOL, atol=RTOL * float(alone.abs().max()))


@pytest.mark.slow
def test_maps_are_torchrays_on_real_lite0_photographs(lite0, photo_dir: Path):
    """Real ImageNet Lite0 on two photographs (96 x 96, Lite0 is fully convolutional), TorchRay's VOC areas: 8 masks
    in forward chunks of 3. Another class's map differs by about 1 % after these 4 steps."""
    tf = PixelTransform(lite0.spec)
    x = torch.stack([tf(load_rgb(photo_dir / f"{name}.png"))[0] for name in ("chelsea", "coffee")])
    x = F.interpolate(x, size=(96, 96), mode="bilinear", antialias=True).clamp(0, 1)
    areas = METHODS["extremal_perturbation"].params["areas"]
    maps, t, _ = ours(lite0, x, chunk=3, max_iter=4)
    want = torchray_maps(lite0, x, t, areas=areas, max_iter=4)
    torch.testing.assert_close(maps, want, rtol=RTOL, atol=RTOL * float(want.abs().max()))
    other = torchray_maps(lite0, x[:1], (t[:1] + 1) % 1000, areas=areas, max_iter=4)
    assert relative(other, want[:1]) > 100 * RTOL


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"areas": [0.1, 1.5]}, "areas"),
        ({"areas": []}, "areas"),
        ({"max_iter": 0}, "max_iter"),
        ({"num_levels": 1}, "num_levels"),
        ({"sigma": 0}, "sigma"),
        ({"smoothing": -1}, "smoothing"),
        ({"area": [0.1]}, "area"),
        ({"jitter": "yes"}, "jitter"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(params, key):
    why = METHODS["extremal_perturbation"].param_problem(params)
    assert key in why and "\n" not in why


def test_bad_settings_stop_the_cli_before_any_image(tmp_path: Path):
    """`camexp check` of the TorchRay smoke config with a bad setting: exit 2, one line naming the key."""
    text = (CONFIGS / "torchray_smoke_voc12_lite0.yaml").read_text()
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        text.replace("  - center\n", "  - {name: ep, method: extremal_perturbation, params: {max_iter: 0}}\n")
    )
    result = CliRunner().invoke(app, ["check", str(cfg)])
    assert result.exit_code == 2, result.output
    assert "max_iter must be at least 1, not 0" in result.output and "Traceback" not in result.output
