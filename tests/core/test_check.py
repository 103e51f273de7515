"""check_experiment: a clean report on good data, and one clear error naming the file for each broken layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import pytest
from rich.console import Console

import camexp.check
from camexp.check import check_experiment, render
from camexp.config import ExperimentConfig, ModelConfig
from camexp.models import LoadedModel, build_model

TINY = {"name": "resnet18", "weights": "random"}
GOOD_XML = (
    "<annotation><object><name>dog</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
    "<xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>"
)


_BUILT: dict[str, LoadedModel] = {}


@pytest.fixture(autouse=True)
def build_each_model_once(monkeypatch) -> None:
    """The real build_model, memoised per model config: the data tests need a model but not a fresh one."""

    def cached(cfg: ModelConfig) -> LoadedModel:
        key = cfg.model_dump_json()
        if key not in _BUILT:
            _BUILT[key] = build_model(cfg)
        return _BUILT[key]

    monkeypatch.setattr(camexp.check, "build_model", cached)


def experiment(dataset: dict, model: dict = TINY, **kw) -> ExperimentConfig:
    return ExperimentConfig(name="t", dataset=dataset, model=model, **kw)


def assert_error(cfg: ExperimentConfig, *fragments: str) -> None:
    """Some error of the report contains every fragment (typically the file name and what is wrong)."""
    errors = check_experiment(cfg).errors
    assert any(all(f in e for f in fragments) for e in errors), errors


def test_real_ilsvrc_subset_is_clean(shared_data: Path) -> None:
    cfg = experiment({"kind": "imagenet_val", "root": str(shared_data / "ilsvrc2012-val-subset/images")})
    report = check_experiment(cfg)
    assert report.errors == []
    assert (report.counts, report.dataset_classes, report.model_classes) == ({"all": 300}, 1000, 1000)
    assert report.images_with_boxes == 300 and report.layer == "layer4"
    assert any("49700" in w for w in report.warnings)
    console = Console(record=True, width=120)
    render(report, console)
    text = console.export_text()
    assert "kaggle_csv" in text and "layer4" in text


def test_voc_needs_a_20_class_head(shared_data: Path) -> None:
    cfg = experiment(
        {"kind": "voc", "root": str(shared_data / "voc2012-subset"), "split": "subset"}, confidence="sigmoid"
    )
    report = check_experiment(cfg)
    assert report.counts == {"subset": 108} and report.dataset_classes == 20
    assert report.errors == [
        "model 'resnet18' (weights 'random') predicts 1000 classes but the voc data set has 20; "
        "use weights for that head"
    ]


@pytest.mark.parametrize(
    ("model", "fragments"),
    [
        ({**TINY, "layer": "nope"}, ("'nope' does not exist",)),
        ({"name": "vgg16.tv_in1k", "weights": "checkpoints/voc07_vgg16.pt"}, ("voc07_vgg16.pt", "not found")),
        ({"name": "resnet18", "weights": "timm"}, ("could not load pretrained weights", "resnet18")),
    ],
)
def test_model_problems(tmp_path: Path, make_jpeg, monkeypatch, model: dict, fragments: tuple[str, ...]) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no download, even with a network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    make_jpeg(tmp_path / "n01440764" / "a.JPEG")
    assert_error(experiment({"kind": "imagenet_val", "root": str(tmp_path)}, model), *fragments)


def test_true_target_needs_single_labels(shared_data: Path) -> None:
    cfg = experiment({"kind": "voc", "root": str(shared_data / "voc2012-subset"), "split": "subset"}, target="true")
    assert_error(cfg, "target: true", "single true label")


# --- broken layouts: each builder breaks a small tree and names what the error must say ---------------------


def voc_tree(root: Path, make_jpeg, xml: str = GOOD_XML) -> dict:
    voc = root / "VOCdevkit" / "VOC2007"
    make_jpeg(voc / "JPEGImages" / "000001.jpg", size=(40, 30))
    (voc / "Annotations").mkdir()
    (voc / "Annotations" / "000001.xml").write_text(xml)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "val.txt").write_text("000001\n")
    return {"kind": "voc", "root": str(root), "split": "val"}


def kaggle_tree(root: Path, make_jpeg, rows: str = "ILSVRC2012_val_00000001,n01440764 0 0 39 29 \n") -> dict:
    make_jpeg(root / "images" / "ILSVRC2012_val_00000001.JPEG", size=(40, 30))
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + rows)
    return {"kind": "imagenet_val", "root": str(root / "images")}


def devkit_tree(root: Path, make_jpeg, meta: bool = True) -> dict:
    from scipy.io import savemat

    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    if meta:
        savemat(data / "meta.mat", {"synsets": {"ILSVRC2012_ID": 1, "WNID": "n01440764"}})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("7\n")
    make_jpeg(root / "val" / "ILSVRC2012_val_00000001.JPEG")
    return {"kind": "imagenet_val", "root": str(root / "val"), "layout": "devkit"}


def remove(path: Path) -> None:
    path.unlink()


BROKEN: dict[str, tuple[Callable[[Path, Callable], dict], tuple[str, ...]]] = {
    "missing root": (lambda r, mk: {"kind": "voc", "root": str(r / "nowhere")}, ("nowhere", "not a folder")),
    "voc missing xml": (
        lambda r, mk: (voc_tree(r, mk), remove(next(r.rglob("000001.xml"))))[0],
        ("000001.xml", "annotation file missing"),
    ),
    "voc missing image": (
        lambda r, mk: (voc_tree(r, mk), remove(next(r.rglob("000001.jpg"))))[0],
        ("000001.jpg", "missing"),
    ),
    "voc unknown class": (lambda r, mk: voc_tree(r, mk, GOOD_XML.replace("dog", "dragon")), ("000001.xml", "'dragon'")),
    "voc box outside": (
        lambda r, mk: voc_tree(r, mk, GOOD_XML.replace("<xmax>40", "<xmax>41")),
        (
            "000001.xml: object 1 ('dog', xmin=1 ymin=1 xmax=41 ymax=30)",
            "outside the 40x30 image",
            "dataset.bad_boxes: skip",
        ),
    ),
    "voc bad xml": (lambda r, mk: voc_tree(r, mk, "<annotation>"), ("000001.xml", "not valid XML")),
    "voc no split": (lambda r, mk: {**voc_tree(r, mk), "split": "train"}, ("train.txt", "not found")),
    "image without label": (
        lambda r, mk: kaggle_tree(r, mk, "ILSVRC2012_val_00000002,n01440764 0 0 9 9\n"),
        ("ILSVRC2012_val_00000001.JPEG", "has no label in", "LOC_val_solution.csv"),
    ),
    "unknown wnid": (
        lambda r, mk: kaggle_tree(r, mk, "ILSVRC2012_val_00000001,n99999999 0 0 9 9\n"),
        ("LOC_val_solution.csv: line 2", "n99999999"),
    ),
    "malformed csv": (
        lambda r, mk: kaggle_tree(r, mk, "ILSVRC2012_val_00000001,n01440764 0 0 9\n"),
        ("LOC_val_solution.csv: line 2", "malformed"),
    ),
    "kaggle box outside": (
        lambda r, mk: kaggle_tree(r, mk, "ILSVRC2012_val_00000001,n01440764 0 0 40 29\n"),
        ("LOC_val_solution.csv: line 2: box 1 of ILSVRC2012_val_00000001.JPEG", "outside the 40x30 image"),
    ),
    "devkit unknown id": (lambda r, mk: devkit_tree(r, mk), ("ground_truth.txt: line 1", "'7'", "meta.mat")),
    "devkit missing meta": (lambda r, mk: devkit_tree(r, mk, meta=False), ("meta.mat", "must sit beside")),
    "v2 non-integer folder": (
        lambda r, mk: (mk(r / "1" / "a.jpg"), mk(r / "n01" / "b.jpg"), {"kind": "imagenetv2", "root": str(r)})[2],
        ("'n01'", "not a class index"),
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_layout_named(tmp_path: Path, make_jpeg, case: str) -> None:
    build, fragments = BROKEN[case]
    assert_error(experiment(build(tmp_path, make_jpeg)), *fragments)


def test_check_decodes_every_image_so_a_truncated_jpeg_fails(tmp_path: Path, make_jpeg) -> None:
    """The header of a JPEG cut after 60% of its bytes still reads (the old check passed it); decoding it
    does not, in the check as in the run."""
    import numpy as np
    from PIL import Image

    for name in ("a", "c"):
        make_jpeg(tmp_path / "imgs" / f"{name}.jpg", size=(64, 48))
    cut = tmp_path / "imgs" / "b.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(cut, quality=95)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 6 // 10])
    assert Image.open(cut).size == (160, 120)
    cfg = experiment({"kind": "folder", "root": str(tmp_path / "imgs")})
    report = check_experiment(cfg)
    assert report.decoded == 3 and len(report.errors) == 1
    assert report.errors[0].startswith(f"{cut}: cannot read image (OSError: image file is truncated")
    quick = check_experiment(cfg, quick=True)  # 3 images <= the quick sample: all decoded
    assert quick.decoded == 3 and quick.errors == report.errors


def test_quick_check_decodes_an_even_sample(tmp_path: Path, make_jpeg, monkeypatch) -> None:
    monkeypatch.setattr(camexp.check, "QUICK_SAMPLE", 4)
    for i in range(10):
        make_jpeg(tmp_path / f"{i}.jpg")
    report = check_experiment(experiment({"kind": "folder", "root": str(tmp_path)}), quick=True)
    assert report.decoded == 4 and report.ok  # items 0, 3, 6, 9
    console = Console(record=True, width=120)
    render(report, console)
    assert "all: 10 of 10 listed; 4 decoded (a --quick sample)" in console.export_text()


def test_run_and_check_reject_an_inverted_box_with_the_same_words(tmp_path: Path, make_jpeg) -> None:
    from camexp.data import list_dataset
    from camexp.errors import CamexpError

    cfg = experiment(
        voc_tree(tmp_path, make_jpeg, GOOD_XML.replace("<xmin>1", "<xmin>35").replace("<xmax>40", "<xmax>20"))
    )
    with pytest.raises(CamexpError) as run_error:
        list_dataset(cfg.dataset)  # what `camexp run` lists before its first batch
    assert "object 1 ('dog', xmin=35 ymin=1 xmax=20 ymax=30): xmax < xmin (inverted box)" in str(run_error.value)
    report = check_experiment(cfg)
    assert str(run_error.value) in report.errors and not any("outside" in e for e in report.errors)
    skipping = check_experiment(
        cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"bad_boxes": "skip"})})
    )
    assert any("1 malformed box(es) skipped" in w for w in skipping.warnings)
    assert skipping.images_with_boxes == 0


def test_a_failed_listing_is_not_shown_as_zero_images(tmp_path: Path) -> None:
    report = check_experiment(experiment({"kind": "folder", "root": str(tmp_path / "nowhere")}))
    console = Console(record=True, width=120)
    render(report, console)
    text = console.export_text()
    assert "of 0 listed" not in text and "could not be listed" in text


def test_min_true_prob_on_a_multilabel_set_is_refused_by_check_and_run_alike(tmp_path: Path, make_jpeg) -> None:
    """Issue 22: check said ok, then the run refused naming `relperf_min_true_prob` (the wrong key). Both now
    refuse with the same line naming dataset.min_true_prob."""
    from camexp.errors import CamexpError
    from camexp.runner import run_experiment

    dataset = {**voc_tree(tmp_path, make_jpeg), "min_true_prob": 0.5}
    cfg = experiment(dataset, confidence="sigmoid", output={"dir": str(tmp_path / "out")})
    errors = [e for e in check_experiment(cfg).errors if "min_true_prob" in e]
    assert len(errors) == 1 and "dataset.min_true_prob needs a single true label" in errors[0], errors
    with pytest.raises(CamexpError) as run_error:
        run_experiment(cfg, progress=False)
    assert str(run_error.value) == errors[0]


def test_check_refuses_more_perturbation_steps_than_input_pixels(tmp_path: Path, make_jpeg) -> None:
    make_jpeg(tmp_path / "a.jpg")
    cfg = experiment({"kind": "folder", "root": str(tmp_path)}, metrics=["deletion"], perturbation={"steps": 1_000_000})
    assert_error(cfg, "perturbation.steps: 1000000 steps exceed the 50176 pixels", "use at most 50176")
