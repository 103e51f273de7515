"""Figures: guided backprop, the explain grid's panels and titles, run-plot axes, and `camexp explain`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data
import torch
from matplotlib.figure import Figure
from torch import nn
from typer.testing import CliRunner

import camexp.report.figures as figures
from camexp.analyses.alpha_hist import AlphaHistogram, summarize_alpha
from camexp.analyses.plots import draw_alpha, draw_area_curve, draw_drop_dist, draw_ratio_boxes
from camexp.cli import app
from camexp.data.images import load_rgb
from camexp.data.transforms import PixelTransform
from camexp.errors import CamexpError
from camexp.explain.gallery import MethodPanel, ModelRow, explain_batch
from camexp.explain.guided import guided_backprop

CAMERA = Path(skimage.data.__file__).parent / "camera.png"  # grayscale PNG
LITE0 = ["--model", "tf_efficientnet_lite0", "--weights", "efficientnet-lite0-package"]


def pre_activation_gradients(net: nn.Module, run: Callable[[], object]) -> list[torch.Tensor]:
    """Gradients reaching the *input* of every ReLU/ReLU6 module (hooks set before inplace ops overwrite it)."""
    grads: list[torch.Tensor] = []

    def hook(module: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        inp[0].register_hook(grads.append)

    handles = [m.register_forward_pre_hook(hook) for m in net.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    run()
    for h in handles:
        h.remove()
    return grads


def tiny_net(act: type[nn.Module] = nn.ReLU) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        act(inplace=True),
        nn.Conv2d(4, 5, 3),
        nn.ReLU6(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    )
    return net.eval().requires_grad_(False)


def test_guided_gradients_are_non_negative_at_every_inplace_relu() -> None:
    net, x, t = tiny_net(), torch.randn(2, 3, 8, 8) * 3, torch.tensor([0, 2])
    guided = pre_activation_gradients(net, lambda: guided_backprop(net, x, t))
    assert len(guided) == 2 and all(float(g.min()) >= 0 for g in guided) and any(float(g.max()) > 0 for g in guided)

    def plain() -> None:
        leaf = x.clone().requires_grad_(True)
        net(leaf).gather(1, t[:, None]).sum().backward()

    assert any(float(g.min()) < 0 for g in pre_activation_gradients(net, plain))  # the check can fail
    assert not any(m._forward_hooks for m in net.modules())  # the guided hooks are removed afterwards


def test_guided_refuses_a_model_without_relu_modules() -> None:
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(CamexpError, match="ReLU"):
        guided_backprop(net, torch.rand(1, 3, 8, 8), torch.tensor([0]))


def test_guided_on_efficientnet_lite0_relu6_modules(lite0) -> None:
    x = torch.rand(1, 3, 96, 96)
    grads = pre_activation_gradients(lite0.model, lambda: guided_backprop(lite0.model, x, torch.tensor([1])))
    assert len(grads) == 33  # every ReLU6 of timm's BatchNormAct2d blocks, all inplace
    assert all(float(g.min()) >= 0 for g in grads)


def fake_row(model: str, guided: bool) -> ModelRow:
    img, cam = torch.rand(3, 16, 16), torch.rand(16, 16)
    panels = [MethodPanel("gradcam", cam, cam * img, 0.25), MethodPanel("gradcam++", cam, cam * img, 0.5)]
    if guided:
        panels.append(MethodPanel("guided-gradcam++", cam, cam * img, 0.5, torch.rand(3, 16, 16)))
    return ModelRow(model, img, 3, "tabby", 0.75, panels)


def titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_explain_grid_has_the_paper_layout() -> None:
    fig = figures.draw_explain_grid([fake_row("net_a", True), fake_row("net_b", True)])
    assert len(fig.axes) == 2 * 6  # original + 2 x (overlay, E) + guided, per model row
    t = titles(fig)
    assert t[:6] == [
        "net_a\ntabby: 0.75",
        "gradcam",
        "E gradcam\ntabby: 0.25",
        "gradcam++",
        "E gradcam++\ntabby: 0.5",
        "guided-gradcam++",
    ]
    assert t[6].startswith("net_b")
    assert all(ax.images for ax in fig.axes)


def test_overlay_blends_jet_over_the_image() -> None:
    img = torch.zeros(3, 4, 4)
    out = figures.overlay(img, torch.ones(4, 4))
    assert out.shape == (4, 4, 3)
    np.testing.assert_allclose(out[0, 0], 0.5 * np.array([0.5, 0.0, 0.0]), atol=1e-6)  # jet(1) is dark red


def test_run_plots_have_their_panels() -> None:
    curve = pd.DataFrame(
        {
            "method": ["a"] * 3 + ["b"] * 3,
            "theta": [0, 0.5, 1] * 2,
            "mean_o_over_y": [1, 0.5, 0.1, 0.9, 0.6, 0.2],
            "kept": [1, 0.5, 0] * 2,
            "images": 4,
        }
    )
    fig = draw_area_curve(curve)
    assert [line.get_label() for line in fig.axes[0].lines] == ["a", "b"]
    assert fig.axes[0].get_ylabel() == "mean O / Y" and "4 images" in fig.axes[0].get_title()

    h = AlphaHistogram()
    h.update(torch.tensor([0.5, 0.49, 0.51, 7.0]))
    fig = draw_alpha(h, summarize_alpha(h))
    assert len(fig.axes) == 2 and fig.axes[1].get_xlabel() == "tanh(α − 0.5)"
    assert "75.0% in [0.45, 0.55]" in fig.get_suptitle() and "max 7" in fig.axes[1].get_title()

    fig = draw_ratio_boxes({"a vs b": np.array([1.0, 2.0]), "a vs c": np.array([0.5, 1.0])}, "2 images")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a vs b", "a vs c"]
    assert fig.axes[0].get_yscale() == "log"

    fig = draw_drop_dist({"a": np.array([0.1, 0.2]), "b": np.array([0.0, 0.9])})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b"]


def test_explain_cli_on_real_images_across_two_backbones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lite0, ilsvrc_images: Path
) -> None:
    build = figures.build_model
    monkeypatch.setattr(figures, "build_model", lambda cfg, dev: lite0 if cfg.weights == LITE0[-1] else build(cfg, dev))
    drawn: list[Figure] = []
    save = figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda fig, *a: drawn.append(fig) or save(fig, *a))
    images = [CAMERA, ilsvrc_images / "ILSVRC2012_val_00000003.JPEG"]
    result = CliRunner().invoke(
        app,
        [
            "explain",
            *map(str, images),
            "--models",
            "tf_efficientnet_lite0,resnet18",
            "--weights",
            "efficientnet-lite0-package,random",
            "--methods",
            "gradcam,guided-gradcam++",
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    for img in images:
        assert (tmp_path / f"explain_{img.stem}.png").exists() and (tmp_path / f"explain_{img.stem}.pdf").exists()
    fig = drawn[-1]
    assert len(fig.axes) == 2 * 4  # two model rows: original, overlay, E, guided
    t = titles(fig)
    assert t[0].startswith("tf_efficientnet_lite0\n") and t[4].startswith("resnet18\n")
    # ILSVRC2012_val_00000003 is a Shetland sheepdog; Lite0 gets it right
    assert "Shetland sheepdog" in t[0] and "Shetland sheepdog" in t[2]


def test_explain_cli_names_a_missing_or_corrupt_image(tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"not a jpeg")
    for bad in (tmp_path / "missing.png", corrupt):
        result = CliRunner().invoke(app, ["explain", str(CAMERA), str(bad), *LITE0, "--out", str(tmp_path)])
        assert result.exit_code == 2
        assert bad.name in result.output and "Traceback" not in result.output
    unknown = CliRunner().invoke(app, ["explain", str(CAMERA), *LITE0, "--methods", "guided-nope"])
    assert unknown.exit_code == 2 and "guided-nope" in unknown.output
    wrong = CliRunner().invoke(app, ["explain", str(CAMERA), *LITE0, "--confidence", "probit"])
    assert wrong.exit_code == 2 and "--confidence must be 'softmax' or 'sigmoid'" in wrong.output


def test_explain_sigmoid_confidence_is_the_sigmoid_of_the_target_logit(lite0) -> None:
    x = PixelTransform(lite0.spec)(load_rgb(CAMERA))[0][None]
    soft, sig = (explain_batch(lite0, x, ["gradcam"], None, kind)[0] for kind in ("softmax", "sigmoid"))
    logits = lite0.model(x)[0].double()
    target = int(logits.argmax())
    assert soft.confidence == pytest.approx(float(logits.softmax(0)[target]))
    assert sig.confidence == pytest.approx(float(logits[target].sigmoid()))
