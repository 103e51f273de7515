"""Registered layouts: how each reads a layer's output, the evidence that singles one out, the refusal of a
declared layout that the layer contradicts, and a plug-in layout by import path through `camexp run`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from camexp.config import ModelConfig
from camexp.errors import CamexpError
from camexp.models import build_model
from camexp.models.layout import LAYOUTS, LayerProbe, resolve_layout


def _probe(module: nn.Module, shape: tuple[int, ...], net: nn.Module | None = None) -> LayerProbe:
    out = torch.arange(torch.Size(shape).numel(), dtype=torch.float32).view(shape)
    return LayerProbe(net or nn.Identity(), "x", module, out, (224, 224))


def test_the_output_shape_alone_decides_only_when_one_reading_has_the_image_shape():
    p = _probe(nn.Identity(), (1, 512, 7, 7))
    assert resolve_layout(p).describe() == "NCHW" and resolve_layout(p).to_maps(p.out) is p.out
    p = _probe(nn.Identity(), (1, 7, 7, 768))  # read as NCHW it would be 7 channels of 7x768 maps
    maps = resolve_layout(p).to_maps(p.out)
    assert maps.shape == (1, 768, 7, 7) and maps[0, 5, 2, 3] == p.out[0, 2, 3, 5]
    with pytest.raises(CamexpError, match=r"reads as nchw or nhwc .*set model.layout"):
        resolve_layout(_probe(nn.Identity(), (1, 8, 8, 10)))  # 8 channels of 8x10 maps, or 10 of 8x8
    with pytest.raises(CamexpError, match=r"outputs \(1, 10\), not a feature map"):
        resolve_layout(_probe(nn.Identity(), (1, 10)))


def test_the_layers_module_decides_and_contradicting_it_is_refused():
    """(1, 8, 8, 10) reads either way by its shape; a 2-D norm layer makes it NCHW, a LayerNorm over the last
    dimension NHWC, and a declared layout against them is refused, naming the module."""
    bn, ln = _probe(nn.BatchNorm2d(8), (1, 8, 8, 10)), _probe(nn.LayerNorm(10), (1, 8, 8, 10))
    assert resolve_layout(bn).describe() == "NCHW" and resolve_layout(ln).describe() == "NHWC"
    with pytest.raises(
        CamexpError,
        match=r"model.layout 'nhwc' contradicts model.layer 'x'; it is nchw: it is a "
        r"BatchNorm2d.*set model.layout to nchw or auto",
    ):
        resolve_layout(bn, "nhwc")
    with pytest.raises(CamexpError, match=r"'nchw' contradicts .*LayerNorm over the last dimension"):
        resolve_layout(ln, "nchw")
    assert resolve_layout(_probe(nn.Identity(), (1, 8, 8, 10)), "nhwc").describe() == "NHWC"  # no evidence: declared


def test_timm_nhwc_flag_is_evidence_below_the_module():
    net = nn.Module()
    net.output_fmt = "NHWC"
    assert resolve_layout(_probe(nn.Identity(), (1, 8, 8, 10), net)).describe() == "NHWC"
    assert resolve_layout(_probe(nn.Conv2d(3, 8, 1), (1, 8, 8, 10), net)).describe() == "NCHW"
    with pytest.raises(CamexpError, match="declares output_fmt 'NHWC'"):
        resolve_layout(_probe(nn.Identity(), (1, 8, 8, 10), net), "nchw")


def test_tokens_drop_prefix_tokens_and_take_them_back_from_the_native_output():
    net = nn.Module()
    net.patch_embed = nn.Module()
    net.patch_embed.grid_size = (2, 3)
    net.num_prefix_tokens = 1
    p = _probe(nn.Identity(), (2, 7, 4), net)
    lay = resolve_layout(p)
    maps = lay.to_maps(p.out)
    assert maps.shape == (2, 4, 2, 3) and maps[1, 3, 1, 2] == p.out[1, 1 + 1 * 3 + 2, 3]
    back = lay.to_native(maps.flip(0), p.out, torch.tensor([1, 0]))
    assert torch.equal(back, p.out.flip(0))
    with pytest.raises(CamexpError, match=r"8 tokens are not 1 prefix token\(s\) \+ a patch grid \(2, 3\)"):
        resolve_layout(_probe(nn.Identity(), (2, 8, 4), net))


@pytest.mark.parametrize(
    "model, layer, declared, module",
    [
        ("tf_efficientnet_lite0", "bn2", "nhwc", "BatchNormAct2d"),
        ("swin_tiny_patch4_window7_224", "norm", "nchw", "LayerNorm over the last dimension"),
    ],
)
def test_a_declared_layout_that_contradicts_the_layer_stops_the_run_in_one_line(
    model: str, layer: str, declared: str, module: str, tmp_path: Path, photo_dir: Path
):
    """The audit's silent wrong number: Lite0's bn2 (BatchNorm2d, (B,1280,7,7)) declared NHWC read 7 channels of
    1280x7 maps; Swin's NHWC norm declared NCHW likewise. Both must stop before any image, naming the fix."""
    from typer.testing import CliRunner

    from camexp.cli import app

    weights = "efficientnet-lite0-package" if model.startswith("tf_") else "random"
    cfg = {
        "name": "layout",
        "dataset": {"kind": "folder", "root": str(photo_dir), "limit": 2},
        "model": {"name": model, "weights": weights, "layer": layer, "layout": declared},
        "methods": ["gradcam"],
        "metrics": ["avg_drop"],
        "runtime": {"device": "cpu"},
        "output": {"dir": str(tmp_path / "out")},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"model.layout '{declared}' cannot read it" in res.output and module in res.output
    assert not (tmp_path / "out" / "per_image.csv").exists()


def test_an_unknown_layout_is_a_config_error_naming_the_key(tmp_path: Path):
    from camexp.experiment import load_experiment

    path = tmp_path / "cfg.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "x", "dataset": {"root": str(tmp_path)}, "model": {"name": "resnet18", "layout": "NCHW"}}
        )
    )
    with pytest.raises(CamexpError, match=r"cfg.yaml: model.layout: .*unknown layout 'NCHW'; known: \['auto', 'nchw'"):
        load_experiment(path)


def test_a_plugin_layout_by_import_path_runs_through_camexp_run(tmp_path: Path, photo_dir: Path):
    """MLP-Mixer's tokens have no patch_embed grid: no built-in layout reads them; the plug-in in
    tests/plugins/my_layouts.py does, names Mixer's layer, and its maps give back the model's own logits."""
    from camexp.experiment import load_experiment
    from camexp.explain.core import Explainer
    from camexp.runner import run_experiment

    with pytest.raises(
        CamexpError,
        match=r"outputs \(1, 196, 512\), which no layout reads \(as tokens: 196 tokens "
        r"are not 0 prefix token\(s\) \+ a patch grid \(unknown",
    ):
        resolve_layout(_probe(nn.Identity(), (1, 196, 512)))  # Mixer's tokens: its net has no patch_embed
    name = "plugins.my_layouts:stem_tokens"
    cfg = {
        "name": "mixer",
        "dataset": {"kind": "folder", "root": str(photo_dir), "limit": 2},
        "model": {"name": "mixer_s16_224", "weights": "random", "layout": name},
        "methods": ["gradcam", "layercam"],
        "metrics": ["avg_drop"],
        "runtime": {"device": "cpu", "batch_size": 2},
        "output": {"dir": str(tmp_path / "out")},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_experiment(load_experiment(path), progress=False)
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert meta["layer"] == "norm" and meta["layer_layout"] == "stem tokens (grid (14, 14))"
    rec = pd.read_csv(tmp_path / "out" / "per_image.csv")
    assert len(rec) == 4 and rec["o"].between(0, 1).all()
    loaded = build_model(ModelConfig(name="mixer_s16_224", weights="random", layout=name))
    assert loaded.maps_shape == (512, 14, 14) and name in LAYOUTS
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    logits, inputs = Explainer(loaded, ["gradcam"]).activations(x)
    tokens: list[torch.Tensor] = []
    h = loaded.layer.register_forward_hook(lambda m, i, o: tokens.append(o))
    with torch.no_grad():
        loaded.model(x)
    h.remove()
    assert torch.equal(inputs.A, tokens[0].transpose(1, 2).reshape(2, 512, 14, 14))  # row-major patch grid
    assert torch.allclose(inputs.tail(inputs.A), logits, atol=1e-4)
