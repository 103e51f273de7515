"""TorchRay's methods end to end on the real VOC 2012 subset: configs/torchray_smoke_voc12_lite0.yaml with the Lite0
linear-probe head of configs/finetune/voc12_lite0_probe.yaml (one epoch on 8 images). RISE's and extremal
perturbation's input-resolution maps go through every metric of the config with no special case; excitation
backprop on Lite0 is refused in one line before any image. Skipped when ../shared/data is absent."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from camexp.errors import CamexpError
from camexp.experiment import load_experiment
from camexp.runner import run_experiment
from tests.e2e.probe import CONFIGS, train_probe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    tmp = tmp_path_factory.mktemp("torchray")
    root = str(shared_data / "voc2012-subset")
    ft = train_probe(root, tmp / "head.pt")
    return tmp, {"dataset.root": root, "dataset.limit": 4, "model.weights": str(ft.checkpoint_path)}


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "rise-64", "method": "rise", "params": {"n": 64}},  # the config's 1000 masks, fewer
        {"name": "extremal-2", "method": "extremal_perturbation", "params": {"max_iter": 2}},  # the config's 20 steps
    ],
    ids=lambda e: e["method"],
)
def test_input_resolution_maps_go_through_every_metric(setup, entry):
    tmp, overrides = setup
    name = entry["name"]
    cfg = load_experiment(
        CONFIGS / "torchray_smoke_voc12_lite0.yaml",
        {**overrides, "methods": ["center", entry], "output.dir": str(tmp / name)},
    )
    main = run_experiment(cfg, progress=False).main
    assert name in main.columns and len(main.index) >= 6
    assert all(math.isfinite(float(v)) for v in main[name]), main
    assert main.loc[main.index.str.startswith("Pointing game % (all)"), name].between(0, 100).all()


def test_excitation_backprop_on_lite0_is_refused_before_any_image(setup):
    tmp, overrides = setup
    out = tmp / "ebp"
    cfg = load_experiment(
        CONFIGS / "torchray_smoke_voc12_lite0.yaml",
        {**overrides, "methods": ["excitation_backprop"], "output.dir": str(out)},
    )
    with pytest.raises(CamexpError, match="excitation backprop is not defined for tf_efficientnet_lite0") as e:
        run_experiment(cfg, progress=False)
    assert "\n" not in str(e.value) and not (out / "per_image.csv").exists()
