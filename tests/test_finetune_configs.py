"""The shipped fine-tune configs validate and produce exactly the checkpoints the VOC table configs load."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from camexp.errors import ConfigError
from camexp.experiment import load_experiment as load_config
from camexp.finetune.config import load_finetune_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_voc_table_has_a_matching_finetune_config() -> None:
    finetunes = {str(c.checkpoint_path): c for c in map(load_finetune_config, sorted((CONFIGS / "finetune").glob("*.yaml")))}
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
    path.write_text(yaml.safe_dump({"name": name, "model": {"name": "resnet18"},
                                    "dataset": {"kind": "voc", "root": str(tmp_path)}}))
    with pytest.raises(ConfigError, match=f"{path}: name: Value error, must be a plain file name"):
        load_finetune_config(path)
