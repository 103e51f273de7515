"""The multiple-instance metric end to end on the real VOC 2012 subset: configs/instances_voc12_lite0.yaml with the
Lite0 linear-probe head of configs/finetune/voc12_lite0_probe.yaml (here one epoch on 8 images). The pairs with
k >= 2 and k = 1 are counted independently from the XML files and the image sizes. Skipped when ../shared/data is
absent."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from camexp.config import ExperimentConfig
from camexp.data.voc import VOC_CLASSES
from camexp.experiment import load_experiment
from camexp.report.tables import RunSummary, summarize_run_dir
from camexp.report.uncertainty import SUMMARY_LONG
from camexp.results import METRIC_COLUMNS, METRIC_RECORDS, read_records
from camexp.runner import run_experiment
from tests.e2e.probe import CONFIGS, train_probe

pytestmark = pytest.mark.slow

IMAGES = 24  # the subset's first 24 images: 11 pairs with k >= 2 (on 11 images), 18 with k = 1
ROWS = ["instances_found", "instances_all", "instances_single"]


@pytest.fixture(scope="module")
def run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, RunSummary]:
    tmp = tmp_path_factory.mktemp("instances")
    root = str(shared_data / "voc2012-subset")
    ft = train_probe(root, tmp / "head.pt")
    cfg = load_experiment(
        CONFIGS / "instances_voc12_lite0.yaml",
        {
            "dataset.root": root,
            "dataset.limit": IMAGES,
            "model.weights": str(ft.checkpoint_path),
            "methods": ["gradcam", "gradcam++"],
            "output.dir": str(tmp / "run"),
        },
    )
    return cfg, run_experiment(cfg, progress=False)


def _pairs_from_annotations(voc: Path, ids: list[str], size: int = 224, crop_pct: float = 0.875) -> dict:
    """(image number, class name) -> k: the class's boxes not flagged difficult that cover a pixel centre of
    the input after the resize (shorter side to floor(size / crop_pct), the longer truncated) and centre crop."""
    resize = math.floor(size / crop_pct)
    out = {}
    for n, image_id in enumerate(ids):
        w0, h0 = Image.open(voc / "JPEGImages" / f"{image_id}.jpg").size
        nw, nh = (resize, int(resize * h0 / w0)) if w0 <= h0 else (int(resize * w0 / h0), resize)
        left, top = round((nw - size) / 2), round((nh - size) / 2)
        k: Counter = Counter()
        for obj in ET.parse(voc / "Annotations" / f"{image_id}.xml").getroot().findall("object"):
            name = obj.findtext("name", "")
            k[name] += 0
            if obj.findtext("difficult", "0").strip() == "1":
                continue
            x0, y0, x1, y1 = (float(obj.findtext(f"bndbox/{key}", "")) for key in ("xmin", "ymin", "xmax", "ymax"))
            x0, x1 = (x0 - 1) * nw / w0 - left, x1 * nw / w0 - left
            y0, y1 = (y0 - 1) * nh / h0 - top, y1 * nh / h0 - top
            cols = any(x0 <= c + 0.5 < x1 for c in range(size))
            rows = any(y0 <= r + 0.5 < y1 for r in range(size))
            k[name] += cols and rows
        out.update({(n, name): count for name, count in k.items()})
    return out


def test_pairs_are_those_the_annotations_give(run: tuple[ExperimentConfig, RunSummary], shared_data: Path) -> None:
    cfg, _ = run
    voc = shared_data / "voc2012-subset" / "VOCdevkit" / "VOC2012"
    ids = (voc / "ImageSets" / "Main" / "subset.txt").read_text().split()[:IMAGES]
    want = _pairs_from_annotations(voc, ids)
    rows = read_records(cfg.output_dir / METRIC_RECORDS, METRIC_COLUMNS)
    rows = rows[rows["metric"].isin(ROWS)]
    for method, mine in rows.groupby("method"):
        valid = mine.dropna(subset=["value"])
        names = [VOC_CLASSES[int(c)] for c in valid["class"]]
        got_many = {(i, c) for i, c, m in zip(valid["index"], names, valid["metric"]) if m == "instances_found"}
        got_single = {(i, c) for i, c, m in zip(valid["index"], names, valid["metric"]) if m == "instances_single"}
        assert got_many == {p for p, k in want.items() if k >= 2}, method
        assert got_single == {p for p, k in want.items() if k == 1}, method
        assert len(got_many) == 11 and len({i for i, _ in got_many}) == 11 and len(got_single) == 18
        assert ((valid["value"] >= 0) & (valid["value"] <= 1)).all()
        found = valid[valid["metric"] == "instances_found"].set_index(["index", "class"])["value"]
        every = valid[valid["metric"] == "instances_all"].set_index(["index", "class"])["value"]
        assert every.equals((found == 1).astype(float).reindex(every.index))
        assert set(valid.loc[valid["metric"] == "instances_single", "value"]) <= {0.0, 1.0}


def test_rows_intervals_and_note(run: tuple[ExperimentConfig, RunSummary]) -> None:
    cfg, summary = run
    labels = [
        "Instances found % (k ≥ 2) (higher is better)",
        "All instances found % (k ≥ 2) (higher is better)",
        "Instance found % (k = 1, control) (higher is better)",
    ]
    values = summary.main.loc[labels, ["gradcam", "gradcam++"]].to_numpy()
    assert ((values >= 0) & (values <= 100)).all()
    (note,) = [n for n in summary.result.notes if n.startswith("Multiple instances")]
    assert "k ≥ 2: 11 (image, class) pairs on 11 images; k = 1 (control): 18 (image, class) pairs" in note
    stats = pd.read_csv(cfg.output_dir / SUMMARY_LONG)
    mine = stats[stats["metric"].isin(ROWS)]
    assert len(mine) == 6 and (mine["lo"] <= mine["value"]).all() and (mine["value"] <= mine["hi"]).all()
    assert mine.set_index("metric").loc["instances_found", "n"].tolist() == [11, 11]
    again = summarize_run_dir(cfg.output_dir)  # `camexp table` recomputes the same numbers from the files
    assert again.main.loc[labels].equals(summary.main.loc[labels])
