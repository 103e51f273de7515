"""Every backbone family through `camexp run` (random weights, real images), and the tail of each
against the full model: layouts (NCHW, NHWC, tokens with prefix tokens) and the automatic layer."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from camexp.check import check_experiment
from camexp.config import ModelConfig
from camexp.experiment import load_experiment
from camexp.explain.core import Explainer
from camexp.models import build_model
from camexp.models.layers import forward_hooks
from camexp.runner import run_experiment

# family -> (model, expected automatic layer, expected layout, CAM available)
FAMILIES = {
    "resnet": ("resnet18", "layer4", "NCHW", True),
    "vgg": ("vgg11", "features.19", "NCHW", False),
    "densenet": ("densenet121", "features", "NCHW", True),
    "convnext": ("convnext_atto", "stages", "NCHW", False),
    "efficientnet": ("efficientnet_b0", "bn2", "NCHW", True),
    "mobilenetv3": ("mobilenetv3_small_050", "blocks", "NCHW", False),
    "regnet": ("regnetx_002", "s4", "NCHW", True),
    "inception_v3": ("inception_v3", "Mixed_7c", "NCHW", True),
    "vit": ("vit_tiny_patch16_224", "blocks.11.norm1", "tokens (grid (14, 14), 1 prefix token(s))", False),
    "deit": ("deit_tiny_distilled_patch16_224", "blocks.11.norm1", "tokens (grid (14, 14), 2 prefix token(s))", False),
    "swin": ("swin_tiny_patch4_window7_224", "layers.3", "NHWC", False),
    "alexnet": ("tv:alexnet", "features.11", "NCHW", False),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_runs_end_to_end(family: str, tmp_path: Path, ilsvrc_images: Path):
    name, layer, layout, has_cam = FAMILIES[family]
    cfg = {
        "name": family,
        "dataset": {"kind": "folder", "root": str(ilsvrc_images), "limit": 2},
        "model": {"name": name, "weights": "random"},
        "methods": ["gradcam", "gradcam++", "layercam"],
        "runtime": {"device": "cpu", "batch_size": 2},
        "output": {"dir": str(tmp_path / "out")},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    exp = load_experiment(path)
    report = check_experiment(exp)
    assert report.ok, report.errors
    assert report.layer == layer
    run_experiment(exp, progress=False)
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert meta["layer"] == layer and meta["layer_layout"] == layout
    rec = pd.read_csv(tmp_path / "out" / "per_image.csv")
    assert len(rec) == 2 * 3 and rec[["y", "o"]].notna().all().all() and rec["o"].between(0, 1).all()
    loaded = build_model(ModelConfig(name=name, weights="random"))
    assert (loaded.cam_weight is not None) == has_cam, loaded.cam_unavailable


def _substituted_logits(loaded, x: torch.Tensor, a_maps: torch.Tensor) -> torch.Tensor:
    """Independent reference: the full model with the layer's output replaced (prefix tokens kept)."""

    def hook(module, inputs, out):
        if out.dim() == 3:  # tokens: keep the prefix tokens, put the patch maps back in token order
            prefix = out.shape[1] - a_maps.shape[2] * a_maps.shape[3]
            return torch.cat([out[:, :prefix], a_maps.flatten(2).transpose(1, 2)], 1)
        return a_maps.permute(0, 2, 3, 1) if out.shape[-1] == a_maps.shape[1] != out.shape[1] else a_maps

    h = loaded.layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return loaded.model(x)
    finally:
        h.remove()


@pytest.mark.parametrize(
    "name, kind",
    [
        ("resnet18", "forward_head"),
        ("vgg11", "sequential"),
        ("tv:alexnet", "sequential"),
        ("vit_tiny_patch16_224", "full_forward"),
        ("swin_tiny_patch4_window7_224", "full_forward"),
    ],
)
def test_tail_equals_the_full_model(name: str, kind: str, ilsvrc_images: Path):
    from camexp.data import PixelTransform
    from camexp.data.images import load_rgb

    torch.manual_seed(0)
    loaded = build_model(ModelConfig(name=name, weights="random"))
    assert loaded.tail.kind == kind
    tf = PixelTransform(loaded.spec)
    x = torch.stack([tf(load_rgb(p))[0] for p in sorted(ilsvrc_images.glob("*.JPEG"))[:2]])
    ex = Explainer(loaded, ["gradcam"])
    logits, inputs = ex.activations(x)
    assert torch.allclose(inputs.tail(inputs.A), logits, atol=1e-4, rtol=1e-4)
    edited = inputs.A.clone()
    edited[:, 0] = 0
    edited[1, 1:3] *= 2
    assert torch.allclose(inputs.tail(edited), _substituted_logits(loaded, x, edited), atol=1e-4, rtol=1e-4)
    which = torch.tensor([1, 1, 0])
    assert torch.allclose(
        inputs.tail(edited[which], which), _substituted_logits(loaded, x[which], edited[which]), atol=1e-4, rtol=1e-4
    )


def test_lite0_tail_is_its_head_on_real_weights(lite0, ilsvrc_images: Path):
    from camexp.data import PixelTransform
    from camexp.data.images import load_rgb

    assert lite0.tail.kind == "forward_head"
    tf = PixelTransform(lite0.spec)
    x = torch.stack([tf(load_rgb(p))[0] for p in sorted(ilsvrc_images.glob("*.JPEG"))[:3]])
    logits, inputs = Explainer(lite0, ["gradcam"]).activations(x)
    assert torch.allclose(inputs.tail(inputs.A), logits, atol=1e-4)


def test_channels_last_layer_is_never_read_as_nchw():
    """Swin's norm outputs (B,7,7,768): read as NHWC (timm output_fmt), 768 channels on a 7x7 grid; an
    explicit wrong layout is refused rather than producing 7 'channels'."""
    from camexp.errors import CamexpError

    loaded = build_model(ModelConfig(name="swin_tiny_patch4_window7_224", weights="random", layer="norm"))
    assert loaded.layout.describe() == "NHWC" and loaded.maps_shape == (768, 7, 7)
    with pytest.raises(CamexpError, match="needs \\(B,N,D\\)"):
        build_model(ModelConfig(name="swin_tiny_patch4_window7_224", weights="random", layer="norm", layout="tokens"))


def test_forward_hooks_act_while_active_and_are_removed_on_exit_and_on_an_error() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    seen: list[torch.Tensor] = []
    with forward_hooks([(net[0], lambda m, i, o: seen.append(o)), (net[1], lambda m, i, o: o * 0)]):
        out = net(torch.ones(1, 2))
    assert len(seen) == 1 and torch.equal(out, torch.zeros(1, 2))  # a hook's return value replaces the output
    with pytest.raises(RuntimeError, match="inside"), forward_hooks([(net[0], lambda m, i, o: seen.append(o))]):
        raise RuntimeError("inside")
    net(torch.ones(1, 2))  # no hook runs any more
    assert len(seen) == 1 and not net[0]._forward_hooks and not net[1]._forward_hooks


def test_a_cifar_wide_resnet_builds_without_the_distill_package() -> None:
    """`camexp run` with `wrn_16_2` failed unless camexp.distill happened to be imported (issue 28)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from camexp.config import ModelConfig\n"
        "from camexp.models import build_model\n"
        "m = build_model(ModelConfig(name='wrn_16_2', weights='random'))\n"
        "print(m.spec.size, m.layer_name, 'camexp.distill' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["(32,", "32)", out[2], "False"] and out[2]
