"""The shipped fine-tune configs validate and produce exactly the checkpoints the VOC table configs load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from camexp.errors import ConfigError
from camexp.experiment import load_experiment as load_config
from camexp.finetune.config import load_finetune_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_every_voc_table_has_a_matching_finetune_config() -> None:
    finetunes = {
        str(c.checkpoint_path): c for c in map(load_finetune_config, sorted((CONFIGS / "finetune").glob("*.yaml")))
    }
    tables = [c for c in map(load_config, sorted(CONFIGS.glob("table*.yaml"))) if c.dataset.kind == "voc"]
    assert len(tables) == 5
    for table in tables:
        ft = finetunes[table.model.weights]
        assert (ft.model.name, ft.dataset.kind, ft.dataset.year) == (table.model.name, "voc", table.dataset.year)
        assert (ft.train.train_split, ft.train.val_split) == ("train", "val")
    assert {t.paper for t in tables if "mloc" in t.analyses} == {"table3"}


@pytest.mark.parametrize("name", ["../../x", "sub/x", ".hidden", ""])
def test_a_name_that_would_leave_checkpoints_is_refused(tmp_path: Path, name: str) -> None:
    """The default checkpoint is checkpoints/<name>.pt: `../../x` used to write outside that folder."""
    path = tmp_path / "ft.yaml"
    path.write_text(
        yaml.safe_dump({"name": name, "model": {"name": "resnet18"}, "dataset": {"kind": "voc", "root": str(tmp_path)}})
    )
    with pytest.raises(ConfigError, match=f"{path}: name: Value error, must be a plain file name"):
        load_finetune_config(path)


def test_a_changed_config_is_refused_naming_the_key(tmp_path: Path) -> None:
    """Issue 22: finetune refused a changed config without saying what changed (`camexp run` names the key). A
    checkpoint written by lr_head 0.05 is refused for lr_head 0.5 with 'train.lr_head: 0.05 -> 0.5'; a larger
    train.epochs resumes."""
    import torch

    from camexp.errors import CamexpError
    from camexp.finetune.checkpoint import FORMAT, resumable
    from camexp.finetune.config import FinetuneConfig

    def config(**train: object) -> FinetuneConfig:
        return FinetuneConfig.model_validate(
            {
                "name": "ft",
                "model": {"name": "resnet18", "weights": "random"},
                "dataset": {"kind": "voc", "root": str(tmp_path)},
                "train": {"lr_head": 0.05, **train},
                "output": {"checkpoint": str(tmp_path / "ft.pt")},
            }
        )

    old = config()
    torch.save(
        {"format": FORMAT, "config": old.model_dump(mode="json"), "fingerprint": old.fingerprint(), "state_dict": {}},
        tmp_path / "ft.pt",
    )
    assert resumable(config(epochs=40), fresh=False)["fingerprint"] == old.fingerprint()
    with pytest.raises(CamexpError) as e:
        resumable(config(lr_head=0.5, hflip=0.0), fresh=False)
    assert (
        f"{tmp_path / 'ft.pt'}: holds a checkpoint of a different fine-tune configuration (train.hflip: 0.5 -> "
        "0.0, train.lr_head: 0.05 -> 0.5); pass --fresh"
    ) in str(e.value)


def test_training_on_from_a_checkpoint_of_other_software_is_refused_or_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint records the software that trained it; `camexp finetune` refuses to train on from one that
    other software trained (one line, before the model is built), unless --allow-software-change, recorded."""
    import torch
    import yaml
    from typer.testing import CliRunner

    from camexp import provenance
    from camexp.cli import app
    from camexp.finetune.checkpoint import FORMAT
    from camexp.finetune.config import load_finetune_config

    path = tmp_path / "ft.yaml"
    config = {
        "name": "ft",
        "model": {"name": "resnet18", "weights": "random"},
        "dataset": {"kind": "voc", "root": str(tmp_path / "voc")},
        "output": {"checkpoint": str(tmp_path / "ft.pt")},
    }
    path.write_text(yaml.safe_dump(config))
    cfg = load_finetune_config(path)
    real = provenance.software()
    first = provenance.continued({}, cfg.checkpoint_path, resumes=False, allow=False, what="checkpoint")
    other = {**first, "software": {**real, "timm": "0.0-other"}}
    torch.save(
        {
            "format": FORMAT,
            "config": cfg.model_dump(mode="json"),
            "fingerprint": cfg.fingerprint(),
            "state_dict": {},
            **other,
        },
        cfg.checkpoint_path,
    )
    res = CliRunner().invoke(app, ["finetune", str(path), "--no-progress"])
    assert res.exit_code == 2, res.output
    said = " ".join(res.output.split())
    assert f"{cfg.checkpoint_path}: this checkpoint was written by other software (timm: 0.0-other -> " in said
    assert "--allow-software-change" in said
    ckpt = torch.load(cfg.checkpoint_path, weights_only=True)
    resumed = provenance.continued(ckpt, cfg.checkpoint_path, resumes=True, allow=True, what="checkpoint")
    assert resumed["software"] == real and len(resumed["invocations"]) == 2
    assert resumed["mixed_software"] == [{"changed": {"timm": ["0.0-other", real["timm"]]}}]
