"""What the slow end-to-end runs on the shared VOC 2012 subset share."""

from __future__ import annotations

from pathlib import Path

from camexp.finetune.config import FinetuneConfig, load_finetune_config
from camexp.finetune.train import finetune

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def train_probe(root: str, out: Path) -> FinetuneConfig:
    """configs/finetune/voc12_lite0_probe.yaml's Lite0 linear-probe head, one epoch on the subset's first 8 images."""
    ft = load_finetune_config(
        CONFIGS / "finetune" / "voc12_lite0_probe.yaml",
        {
            "dataset.root": root,
            "dataset.limit": 8,
            "train.epochs": 1,
            "train.batch_size": 8,
            "output.checkpoint": str(out),
        },
    )
    finetune(ft, progress=False)
    return ft
