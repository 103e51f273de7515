"""Fine-tune real EfficientNet-Lite0 weights on the real VOC 2012 subset (a few steps on CPU), then run the
VOC protocol (faithfulness, mLoc, pointing games) with the checkpoint. Skipped when ../shared/data is absent."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from camexp import provenance
from camexp.config import ExperimentConfig, ModelConfig
from camexp.data import build_dataset
from camexp.errors import CamexpError
from camexp.experiment import load_experiment as load_config
from camexp.explain.core import Explainer
from camexp.finetune.config import FinetuneConfig, load_finetune_config
from camexp.finetune.train import FinetuneResult, Trainer, finetune
from camexp.models import build_model
from camexp.report.tables import RunSummary, summarize_run_dir
from camexp.results import METRIC_COLUMNS, METRIC_RECORDS, read_records
from camexp.runner import run_experiment

VOC_SUBSET = "voc2012-subset"
LITE0 = {"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _finetune_yaml(tmp: Path, root: Path, **train: object) -> Path:
    return _write(
        tmp / "ft.yaml",
        {
            "name": "voc12_lite0_test",
            "model": LITE0,
            "dataset": {"kind": "voc", "root": str(root), "year": 2012, "limit": 4},
            "train": {
                "train_split": "subset",
                "val_split": "subset",
                "epochs": 2,
                "batch_size": 4,
                "lr_head": 0.05,
                "lr_body": 0.001,
                "crop_scale": [0.8, 1.0],
                "device": "cpu",
                **train,
            },
            "output": {"checkpoint": str(tmp / "voc12_lite0_test.pt")},
        },
    )


@pytest.fixture(scope="module")
def tuned(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[FinetuneResult, FinetuneConfig]:
    """Two epochs of one step each, with a simulated crash in epoch 2's validation, then a resume."""
    tmp = tmp_path_factory.mktemp("finetune")
    cfg = load_finetune_config(_finetune_yaml(tmp, shared_data / VOC_SUBSET))
    crashing = Trainer(cfg, progress=False)
    real_evaluate, calls = crashing.evaluate, []

    def evaluate_then_crash() -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")
        return real_evaluate()

    crashing.evaluate = evaluate_then_crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        crashing.fit()
    assert torch.load(cfg.checkpoint_path, weights_only=True)["epoch"] == 1
    return finetune(cfg, progress=False), cfg


def test_resume_continues_after_the_last_epoch_and_loss_falls(tuned: tuple[FinetuneResult, FinetuneConfig]) -> None:
    result, _ = tuned
    assert result.resumed_epochs == 1
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.history[1]["train_loss"] < result.history[0]["train_loss"]
    assert 0.0 <= result.mean_ap <= 1.0 and len(result.ap) == 20
    ckpt = torch.load(result.checkpoint, weights_only=True)  # both invocations' software, one program
    assert len(ckpt["invocations"]) == 2 and ckpt["mixed_software"] == []
    assert ckpt["software"] == ckpt["invocations"][1]["software"] == provenance.software()


def test_checkpoint_reloads_to_identical_logits(tuned: tuple[FinetuneResult, FinetuneConfig]) -> None:
    result, cfg = tuned
    ckpt = torch.load(cfg.checkpoint_path, weights_only=True)
    assert ckpt["model_name"] == "tf_efficientnet_lite0" and ckpt["num_classes"] == 20
    assert ckpt["class_names"][0] == "aeroplane" and ckpt["config"]["name"] == cfg.name and "optimizer" in ckpt
    loaded = build_model(ModelConfig(name="tf_efficientnet_lite0", weights=str(cfg.checkpoint_path)))
    x = torch.rand(2, 3, *loaded.spec.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), result.model(x))
    assert loaded.class_names == result.class_names


def _run_yaml(tmp: Path, root: Path, weights: Path) -> Path:
    return _write(
        tmp / "run.yaml",
        {
            "name": "voc12_mloc_test",
            "paper": "table3",
            "dataset": {"kind": "voc", "root": str(root), "year": 2012, "split": "subset", "limit": 4},
            "model": {"name": "tf_efficientnet_lite0", "weights": str(weights)},
            "methods": ["gradcam", "gradcam++"],
            "confidence": "sigmoid",
            "metrics": ["avg_drop", "increase", "win", "pointing_game", "energy_pointing"],
            "analyses": ["mloc"],
            "runtime": {"device": "cpu", "batch_size": 4},
            "output": {"dir": str(tmp / "run")},
        },
    )


@pytest.fixture(scope="module")
def voc_run(
    tuned: tuple[FinetuneResult, FinetuneConfig], shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ExperimentConfig, RunSummary]:
    """The VOC protocol with the fine-tuned checkpoint: faithfulness, mLoc and the pointing games."""
    _, ft = tuned
    cfg = load_config(_run_yaml(tmp_path_factory.mktemp("voc_run"), shared_data / VOC_SUBSET, ft.checkpoint_path))
    return cfg, run_experiment(cfg, progress=False)


def test_run_with_the_checkpoint_end_to_end(voc_run: tuple[ExperimentConfig, RunSummary]) -> None:
    cfg, summary = voc_run
    rows = [
        "mLoc δ=0",
        "mLoc δ=0.25",
        "mLoc δ=0.5",
        "Average drop % (lower is better)",
        "Pointing game % (all)",
        "Energy pointing % (higher is better)",
    ]
    assert set(rows) <= set(summary.main.index) and summary.images == 4
    values = summary.main.loc[rows[:3]].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    assert any("mLoc: mean over" in n for n in summary.result.notes)
    again = summarize_run_dir(cfg.output_dir)  # `camexp table` recomputes the same numbers from the files
    assert again.main.loc[rows].equals(summary.main.loc[rows])
    energy = read_records(cfg.output_dir / METRIC_RECORDS, METRIC_COLUMNS).query("metric == 'energy_pointing'")
    counts = json.loads((cfg.output_dir / "run.json").read_text())["per_image_metric_images"]
    assert counts["energy_pointing"] == {"seen": 4, "with_value": energy.dropna(subset=["value"])["index"].nunique()}
    assert counts["pointing_game"]["seen"] == 4


def test_pointing_game_against_original_image_coordinates(voc_run: tuple[ExperimentConfig, RunSummary]) -> None:
    """Each (image, class) hit recomputed independently: the map of the class explained alone, its maximum
    taken back through the centre crop and the resize into the original image, and its distance to the
    class's boxes from the XML file (in original pixels) compared with 15."""
    cfg, _ = voc_run
    loaded = build_model(cfg.model)
    ds = build_dataset(cfg.dataset, loaded.spec)
    explainer = Explainer(loaded, cfg.method_names)
    rows = read_records(cfg.output_dir / METRIC_RECORDS, METRIC_COLUMNS)
    rows = rows[rows["metric"] == "pointing_game"]
    h, w = loaded.spec.size
    resize = math.floor(h / loaded.spec.crop_pct)
    checked = skipped = 0
    for index, item in enumerate(ds.items):
        w0, h0 = Image.open(item.path).size
        new_w, new_h = (resize, int(resize * h0 / w0)) if w0 <= h0 else (int(resize * w0 / h0), resize)
        left, top = int(round((new_w - w) / 2.0)), int(round((new_h - h) / 2.0))
        window = (left * w0 / new_w, top * h0 / new_h, (left + w) * w0 / new_w, (top + h) * h0 / new_h)
        x = ds[index]["image"][None]
        for c in sorted(set(item.box_labels)):
            boxes = [b for b, lab in zip(item.boxes, item.box_labels) if lab == c]
            ours = rows[(rows["index"] == index) & (rows["class"] == c)].set_index("method")["value"]
            if not any(b[0] < window[2] and b[2] > window[0] and b[1] < window[3] and b[3] > window[1] for b in boxes):
                assert ours.isna().all()
                skipped += 1
                continue
            maps = explainer.explain(x, torch.tensor([c])).maps
            for m, cam in maps.items():
                row, col = divmod(int(cam[0].flatten().argmax()), w)
                px, py = (col + 0.5 + left) * w0 / new_w, (row + 0.5 + top) * h0 / new_h
                dist = min(math.hypot(max(b[0] - px, 0, px - b[2]), max(b[1] - py, 0, py - b[3])) for b in boxes)
                assert ours[m] == float(dist <= 15.0), (item.image_id, c, m, dist)
                checked += 1
    assert checked >= 2 * len(ds)


def test_checkpoint_with_another_class_list_is_refused(
    tuned: tuple[FinetuneResult, FinetuneConfig], shared_data: Path, tmp_path: Path
) -> None:
    _, ft = tuned
    ckpt = torch.load(ft.checkpoint_path, weights_only=True)
    names = ckpt["class_names"]
    ckpt["class_names"] = [names[1], names[0], *names[2:]]
    wrong = tmp_path / "wrong.pt"
    torch.save(ckpt, wrong)
    cfg = load_config(_run_yaml(tmp_path, shared_data / VOC_SUBSET, wrong))
    with pytest.raises(CamexpError, match=r"class list does not match.*class 0 is 'bicycle'.*'aeroplane'"):
        run_experiment(cfg, progress=False)


def test_resume_refuses_a_checkpoint_of_another_configuration(
    tuned: tuple[FinetuneResult, FinetuneConfig], shared_data: Path, tmp_path: Path
) -> None:
    _, ft = tuned
    cfg = load_finetune_config(
        _finetune_yaml(tmp_path, shared_data / VOC_SUBSET, lr_head=0.5), {"output.checkpoint": str(ft.checkpoint_path)}
    )
    changed = r"different fine-tune configuration \(train.lr_head: 0.05 -> 0.5\); pass --fresh"
    with pytest.raises(CamexpError, match=changed):
        finetune(cfg, progress=False)


def test_checkpoint_of_another_backbone_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r18.pt"
    torch.save({"model_name": "resnet18", "num_classes": 20, "state_dict": {}}, path)
    with pytest.raises(CamexpError, match="checkpoint of 'resnet18'.*set model.name"):
        build_model(ModelConfig(name="tf_efficientnet_lite0", weights=str(path)))


def test_finetune_config_rejects_dataset_split(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ft.yaml",
        {"name": "x", "model": LITE0, "dataset": {"kind": "voc", "root": str(tmp_path), "split": "val"}},
    )
    with pytest.raises(CamexpError, match="train.train_split"):
        load_finetune_config(path)
