"""The shipped fine-tune configs validate and produce exactly the checkpoints the VOC table configs load."""
from __future__ import annotations

from pathlib import Path

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
