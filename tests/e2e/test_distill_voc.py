"""The smoke config end to end on the real VOC 2012 subset: a Lite0 teacher fine-tuned by `camexp finetune`, every
arm of the poster with two paired seeds, then `camexp table --compare-paper`. Skipped when ../shared/data is absent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from camexp.cli import app
from camexp.distill.config import load_distill_config
from camexp.distill.report import summarize_distill
from camexp.distill.train import distill
from camexp.finetune.config import load_finetune_config
from camexp.finetune.train import finetune

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a busy 2-core machine competing threads make small convolutions many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smoke(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("distill_voc")
    root = str(shared_data / "voc2012-subset")
    teacher = tmp / "teacher.pt"
    ft = load_finetune_config(
        REPO / "configs" / "finetune" / "voc12_lite0_smoke.yaml",
        {"dataset.root": root, "output.checkpoint": str(teacher), "train.epochs": 1, "dataset.limit": 32},
    )
    finetune(ft, progress=False)
    cfg = load_distill_config(
        REPO / "configs" / "distill_smoke_voc12.yaml",
        {"dataset.root": root, "teacher.weights": str(teacher), "output.dir": str(tmp / "res" / "smoke")},
    )
    return distill(cfg, progress=False)


def test_every_arm_trains_on_the_same_images_in_the_same_order(smoke: Path) -> None:
    cfg = json.loads((smoke / "distill.json").read_text())
    assert cfg["status"] == "complete" and cfg["metric"] == "mAP" and cfg["teacher_maps"]["mode"] == "cache"
    arms, seeds = cfg["config"]["arms"], cfg["config"]["seeds"]
    assert len(arms) == 6 and seeds == [0, 1]
    for seed in seeds:
        hist = {a: json.loads((smoke / a / f"seed{seed}" / "history.json").read_text())["history"] for a in arms}
        assert all(len(h) == 2 for h in hist.values())
        for epoch in range(2):
            assert len({h[epoch]["order_sha"] for h in hist.values()}) == 1
        assert all(
            (h[0]["exp_loss"] > 0) == ("exp_" in a) and (h[0]["kd_loss"] > 0) == ("+kd" in a) for a, h in hist.items()
        )
    table = summarize_distill(smoke).table.set_index("arm")
    assert table["seeds"].tolist() == [2] * 6 and table["mean"].between(0, 1).all()
    assert table.loc["ce+exp_gradcampp", ["lo", "hi"]].notna().all()  # a paired interval over the 2 seeds


def test_table_compare_paper_prints_the_poster_beside_the_arms(smoke: Path) -> None:
    result = CliRunner().invoke(app, ["table", str(smoke.parent), "--compare-paper"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Grad-CAM++ poster Table 3" in out and all(v in out for v in ("0.42", "0.34", "0.31"))
    assert "ce+kd+exp_gradcam" in out and "not comparable with poster3" in out
