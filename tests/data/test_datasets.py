"""Loaders against the real subsets in ../shared/data and against layouts built here in tmp_path."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from camexp.config import DatasetConfig
from camexp.data import build_dataset, list_dataset
from camexp.data.transforms import InputSpec, PixelTransform
from camexp.data.voc import VOC_CLASSES
from camexp.data.wnids import imagenet_wnid_index
from camexp.errors import CamexpError

SPEC = InputSpec(
    size=(224, 224),
    interpolation="bilinear",
    crop_pct=0.875,
    crop_mode="center",
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)
# Real ImageNet-1k wnids with their sorted-order indices.
TENCH, GOLDFISH, SEA_SNAKE, ALP, TOILET_TISSUE = "n01440764", "n01443537", "n01751748", "n09193705", "n15075141"


def voc_cfg(root: Path, **kw) -> DatasetConfig:
    return DatasetConfig(kind="voc", root=root, split="subset", **kw)


def assert_boxes_inside(dataset) -> None:
    """Every mapped box of every sample lies inside the transformed image."""
    h, w = SPEC.size
    for i in range(len(dataset)):
        s = dataset[i]
        assert s["image"].shape == (3, h, w)
        b = s["boxes"]
        assert ((b[:, 0] >= 0) & (b[:, 2] <= w) & (b[:, 1] >= 0) & (b[:, 3] <= h) & (b[:, 0] <= b[:, 2])).all()


# --- PASCAL VOC 2012 subset -------------------------------------------------------------------------------


def test_voc_subset_items_and_known_boxes(shared_data: Path) -> None:
    listing = list_dataset(voc_cfg(shared_data / "voc2012-subset"))
    assert len(listing.items) == 108 and listing.multilabel and listing.class_names == list(VOC_CLASSES)
    items = {it.image_id: it for it in listing.items}
    person, aeroplane = VOC_CLASSES.index("person"), VOC_CLASSES.index("aeroplane")
    one = items["2007_000027"]  # XML: one person, 1-based (174, 101, 349, 351)
    assert one.label == -1 and one.labels == (person,)
    assert one.boxes == ((173, 100, 349, 351),) and one.box_labels == (person,) and one.box_difficult == (False,)
    two = items["2007_000032"]  # XML: two aeroplanes then two persons
    assert two.labels == (aeroplane, person) and two.box_labels == (aeroplane, aeroplane, person, person)
    assert two.boxes == ((103, 77, 375, 183), (132, 87, 197, 123), (194, 179, 213, 229), (25, 188, 44, 238))
    assert listing.provenance["year"] == 2012 and listing.provenance["selected"] == 108


@pytest.mark.parametrize("difficult", ["keep", "drop"])
def test_voc_labels_match_the_per_class_files(shared_data: Path, difficult: str) -> None:
    """`<class>_subset.txt` says 1 (present), 0 (only difficult) or -1 (absent) per image."""
    listing = list_dataset(voc_cfg(shared_data / "voc2012-subset", difficult=difficult))
    main = shared_data / "voc2012-subset/VOCdevkit/VOC2012/ImageSets/Main"
    present = {"1", "0"} if difficult == "keep" else {"1"}
    expected: dict[str, set[int]] = {it.image_id: set() for it in listing.items}
    for c, name in enumerate(VOC_CLASSES):
        for line in (main / f"{name}_subset.txt").read_text().split("\n"):
            if line.strip() and line.split()[1] in present:
                expected[line.split()[0]].add(c)
    assert {it.image_id: set(it.labels) for it in listing.items} == expected
    if difficult == "drop":
        assert not any(any(it.box_difficult) for it in listing.items)


def test_voc_root_may_be_devkit_its_parent_or_the_year_folder(shared_data: Path) -> None:
    base = shared_data / "voc2012-subset"
    ids = [
        [it.image_id for it in list_dataset(voc_cfg(r)).items]
        for r in (base, base / "VOCdevkit", base / "VOCdevkit/VOC2012")
    ]
    assert ids[0] == ids[1] == ids[2]
    with pytest.raises(CamexpError, match="VOC2007"):
        list_dataset(voc_cfg(base, year=2007))


def test_voc_boxes_inside_after_transform(shared_data: Path) -> None:
    dataset = build_dataset(voc_cfg(shared_data / "voc2012-subset", subset={"every": 3}), SPEC)
    assert len(dataset) == 36 and dataset[0]["labels"].shape == (20,)
    assert_boxes_inside(dataset)


# --- ILSVRC2012 val subset (flat images + Kaggle CSV) --------------------------------------------------------


def test_ilsvrc_kaggle_labels(shared_data: Path) -> None:
    root = shared_data / "ilsvrc2012-val-subset"
    listing = list_dataset(DatasetConfig(kind="imagenet_val", root=root / "images"))
    assert listing.provenance["layout"] == "kaggle_csv" and listing.provenance["labels_without_image"] == 49_700
    items = {it.image_id: it for it in listing.items}
    assert len(items) == 300 and len(listing.class_names) == 1000
    assert [items[f"ILSVRC2012_val_0000000{i}"].label for i in (1, 2, 3)] == [65, 970, 230]
    assert items["ILSVRC2012_val_00000002"].boxes == ((45, 49, 500, 163), (2, 69, 438, 208))  # inclusive -> edges
    # Every label agrees with the line order of LOC_synset_mapping.txt (an independent sorted-wnid list).
    order = {line.split()[0]: i for i, line in enumerate((root / "LOC_synset_mapping.txt").read_text().splitlines())}
    with (root / "LOC_val_solution.csv").open() as f:
        first_wnid = {row["ImageId"]: row["PredictionString"].split()[0] for row in csv.DictReader(f)}
    assert all(it.label == order[first_wnid[it.image_id]] for it in listing.items)


def test_ilsvrc_boxes_inside_after_transform(shared_data: Path) -> None:
    cfg = DatasetConfig(kind="imagenet_val", root=shared_data / "ilsvrc2012-val-subset", subset={"every": 4})
    dataset = build_dataset(cfg, SPEC)
    assert len(dataset) == 75
    assert_boxes_inside(dataset)


def test_subset_is_deterministic_and_recorded(shared_data: Path) -> None:
    cfg = DatasetConfig(
        kind="imagenet_val", root=shared_data / "ilsvrc2012-val-subset", subset={"random": 20, "seed": 3}, limit=10
    )
    a, b = list_dataset(cfg), list_dataset(cfg)
    assert [it.image_id for it in a.items] == [it.image_id for it in b.items]
    assert a.provenance["subset"] == {"random": 20, "seed": 3}
    assert (a.provenance["listed"], a.provenance["selected"], a.provenance["limit"]) == (300, 10, 10)
    other = list_dataset(cfg.model_copy(update={"subset": cfg.subset.model_copy(update={"seed": 4})}))
    assert other.provenance["ids_sha256"] != a.provenance["ids_sha256"]


# --- layouts built here -------------------------------------------------------------------------------------


def test_wnid_folder_layout(tmp_path: Path, make_jpeg) -> None:
    make_jpeg(tmp_path / TOILET_TISSUE / "b.JPEG")
    make_jpeg(tmp_path / TENCH / "a.JPEG")
    listing = list_dataset(DatasetConfig(kind="imagenet_val", root=tmp_path))
    assert listing.provenance["layout"] == "wnid_folders"
    assert [(it.image_id, it.label) for it in listing.items] == [("a", 0), ("b", 999)]


def write_devkit(tmp_path: Path, make_jpeg, truth_ids: list[int]) -> Path:
    """A devkit whose ILSVRC IDs are NOT in sorted-wnid order, plus one non-leaf synset (ID > 1000)."""
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    synsets = np.zeros((4, 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    for row, (ilsvrc_id, wnid) in enumerate([(1, ALP), (2, TENCH), (3, SEA_SNAKE), (1001, "n00001740")]):
        synsets[row, 0] = (np.array([[ilsvrc_id]], dtype=np.uint16), np.array([wnid]))
    savemat(data / "meta.mat", {"synsets": synsets})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in truth_ids))
    for n in range(1, len(truth_ids) + 1):
        make_jpeg(tmp_path / "val" / f"ILSVRC2012_val_{n:08d}.JPEG")
    return tmp_path / "val"


def test_devkit_layout_maps_ids_through_wnids(tmp_path: Path, make_jpeg) -> None:
    root = write_devkit(tmp_path, make_jpeg, [1, 2, 3, 2])
    listing = list_dataset(DatasetConfig(kind="imagenet_val", root=root))
    idx = imagenet_wnid_index()
    assert listing.provenance["layout"] == "devkit"
    assert [it.label for it in listing.items] == [idx[ALP], idx[TENCH], idx[SEA_SNAKE], idx[TENCH]] == [970, 0, 65, 0]


def test_imagenetv2_labels_are_int_folder_names(tmp_path: Path, make_jpeg) -> None:
    for folder in ("2", "10"):
        make_jpeg(tmp_path / folder / f"img{folder}.jpeg")
    listing = list_dataset(DatasetConfig(kind="imagenetv2", root=tmp_path))
    assert {it.image_id: it.label for it in listing.items} == {"img2": 2, "img10": 10}
    (tmp_path / "extra").mkdir()
    with pytest.raises(CamexpError, match="'extra' is not a class index"):
        list_dataset(DatasetConfig(kind="imagenetv2", root=tmp_path))


def test_box_through_resize_and_center_crop_by_hand() -> None:
    """400x300, crop_pct 0.875, 224: resize the short side to floor(224/0.875) = 256, i.e. 341x256 (x scale
    341/400, y scale 256/300), then crop 224 at left round(117/2) = 58 (half to even), top 16."""
    image = Image.new("RGB", (400, 300))
    tensor, boxes = PixelTransform(SPEC)(image, torch.tensor([[100.0, 50.0, 300.0, 250.0]]))
    sx, sy = 341 / 400, 256 / 300
    expected = torch.tensor([[100 * sx - 58, 50 * sy - 16, 300 * sx - 58, 250 * sy - 16]])
    assert tensor.shape == (3, 224, 224)
    torch.testing.assert_close(boxes, expected)


class _Stub(torch.nn.Module):
    """Class 0's logit 10 (mean - 0.5): bright images ~0.99 under softmax and sigmoid, dark ones ~0.0; the other
    two classes' logits are `rest`."""

    def __init__(self, rest: float) -> None:
        super().__init__()
        self.rest = rest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([10 * (x.mean((1, 2, 3)) - 0.5), *[torch.full((len(x),), self.rest)] * 2], 1)


def _min_true_prob(items: list, kind: str, rest: float = 0.0) -> list[int]:
    from camexp.data import ImageDataset
    from camexp.explain.scoring import Scorer
    from camexp.models import PixelModel
    from camexp.models.filters import filter_min_true_prob

    scorer = Scorer(PixelModel(_Stub(rest), SPEC), kind=kind)
    return filter_min_true_prob(ImageDataset(items, PixelTransform(SPEC)), scorer.images, 0.9, "cpu", batch_size=3)


def _shades(tmp_path: Path, make_jpeg, shades: list[tuple[str, int, int]]) -> list:
    from camexp.data import Item

    return [Item(make_jpeg(tmp_path / f"{name}.jpg", color=(v, v, v)), name, label) for name, v, label in shades]


def test_filter_min_true_prob_keeps_confident_labelled_images(tmp_path: Path, make_jpeg) -> None:
    items = _shades(
        tmp_path, make_jpeg, [("bright", 255, 0), ("dark", 0, 0), ("unlabelled", 255, -1), ("bright2", 250, 0)]
    )
    assert _min_true_prob(items, "softmax") == [0, 3]
    with pytest.raises(CamexpError, match="dataset.min_true_prob needs a single true label"):
        _min_true_prob(items[2:3], "softmax")


def test_filter_min_true_prob_follows_the_runs_confidence(tmp_path: Path, make_jpeg) -> None:
    """Issue 22: the filter applied softmax whatever `confidence` said. A mid-grey image (logit 10 * (128/255
    - 0.5) = 0.02 on class 0) beside two classes at logit 5: sigmoid(5) = 0.993 > 0.9 passes under sigmoid,
    while the softmax share e^5 / (2 e^5 + e^0.02) = 0.497 does not."""
    items = _shades(tmp_path, make_jpeg, [("grey", 128, 1), ("grey0", 128, 0)])
    assert _min_true_prob(items, "sigmoid", rest=5.0) == [0]
    assert _min_true_prob(items, "softmax", rest=5.0) == []


# --- strict inputs: high bit depth, broken links, malformed boxes ---------------------------------------------


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    """PIL's own convert('RGB') clips 16-bit values at 255 (mean 254.5 for this ramp); the expected 8-bit
    value is round(v * 255 / 65535), computed here in numpy."""
    from camexp.data.images import BadImageError, load_rgb

    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    expected = np.round(ramp.astype(np.float64) * 255 / 65535)
    for name in ("ramp.png", "ramp.tif"):
        Image.fromarray(ramp).save(tmp_path / name)
        assert Image.open(tmp_path / name).mode == "I;16"
        rgb = np.asarray(load_rgb(tmp_path / name)).astype(np.float64)
        assert np.abs(rgb - expected[..., None]).max() <= 0.5 and abs(rgb.mean() - 127.47) < 0.01
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(BadImageError, match="float.tif: a floating-point image"):
        load_rgb(tmp_path / "float.tif")


def test_broken_and_looping_links_are_listed_then_named_or_skipped(tmp_path: Path, make_jpeg) -> None:
    """They used to vanish from the listing; now they are images that cannot be read, like a corrupt file."""
    make_jpeg(tmp_path / "a.jpg")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    listing = list_dataset(DatasetConfig(root=tmp_path))
    assert [it.image_id for it in listing.items] == ["a", "dangling", "loop"]
    with pytest.raises(CamexpError, match=r"dangling.jpg: cannot read image \(broken symbolic link to .*gone.jpg\)"):
        build_dataset(DatasetConfig(root=tmp_path), SPEC)[1]
    skipping = build_dataset(DatasetConfig(root=tmp_path, skip_bad_images=True), SPEC)
    assert [skipping[i]["bad"] for i in range(3)] == [False, True, True]
    with pytest.raises(CamexpError, match="loop.jpg: cannot read image \\(symbolic link loop\\)"):
        build_dataset(DatasetConfig(root=tmp_path), SPEC)[2]


VOC_OBJECT = (
    "<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>1</ymin>"
    "<xmax>{x1}</xmax><ymax>30</ymax></bndbox></object>"
)


def small_voc(root: Path, make_jpeg, objects: list[tuple[str, int, int]], size: str = "") -> Path:
    """One 40x30 VOC image with the given (class, xmin, xmax) objects; returns its XML file."""
    voc = root / "VOCdevkit" / "VOC2007"
    make_jpeg(voc / "JPEGImages" / "000001.jpg", size=(40, 30))
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "val.txt").write_text("000001\n")
    (voc / "Annotations").mkdir()
    xml = voc / "Annotations" / "000001.xml"
    xml.write_text(
        "<annotation>" + size + "".join(VOC_OBJECT.format(name=n, x0=a, x1=b) for n, a, b in objects) + "</annotation>"
    )
    return xml


def test_inverted_voc_box_is_an_error_naming_file_and_object(tmp_path: Path, make_jpeg) -> None:
    xml = small_voc(tmp_path, make_jpeg, [("dog", 1, 40), ("cat", 30, 10)])
    cfg = DatasetConfig(kind="voc", root=tmp_path, split="val")
    with pytest.raises(CamexpError) as e:
        list_dataset(cfg)
    assert str(e.value) == (
        f"{xml}: object 2 ('cat', xmin=30 ymin=1 xmax=10 ymax=30): xmax < xmin (inverted box); "
        "fix the annotation, or set dataset.bad_boxes: skip to drop such boxes (counted in run.json)"
    )

    listing = list_dataset(cfg.model_copy(update={"bad_boxes": "skip"}))
    cat, dog = VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog")
    (item,) = listing.items
    assert item.labels == (cat, dog)  # the object still says the image shows a cat
    assert item.boxes == ((0, 0, 40, 30),) and item.box_labels == (dog,)
    assert listing.provenance["boxes_skipped"] == 1 and "object 2 ('cat'" in listing.provenance["skipped_boxes"][0]


def test_voc_box_rules_use_the_declared_size_and_the_image_must_match(tmp_path: Path, make_jpeg) -> None:
    """The XML says 80x60: a box to x=60 passes the rules, but the 40x30 JPEG then fails to decode."""
    from camexp.data.base import decode

    small_voc(tmp_path, make_jpeg, [("dog", 1, 60)], size="<size><width>80</width><height>60</height></size>")
    (item,) = list_dataset(DatasetConfig(kind="voc", root=tmp_path, split="val")).items
    assert item.size == (80, 60)
    with pytest.raises(CamexpError, match="000001.jpg: the image is 40x30 but its annotation gives 80x60"):
        decode(item)


def test_a_bad_image_in_a_dataloader_worker_is_still_one_line(tmp_path: Path, make_jpeg) -> None:
    """torch re-raises a worker's exception with the worker's whole traceback as its message."""
    from torch.utils.data import DataLoader

    from camexp.data import collate
    from camexp.data.images import BadImageError

    make_jpeg(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    dataset = build_dataset(DatasetConfig(root=tmp_path), SPEC)
    with pytest.raises(BadImageError) as e:
        list(DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=collate))
    assert str(e.value).startswith(f"{tmp_path / 'b.jpg'}: cannot read image (")
    assert "\n" not in str(e.value) and "worker" not in str(e.value)


def test_a_split_list_that_is_not_utf8_is_one_line_naming_it(tmp_path: Path, make_jpeg) -> None:
    small_voc(tmp_path, make_jpeg, [("dog", 1, 40)])
    ids = next(tmp_path.rglob("val.txt"))
    ids.write_bytes(b"00000\xff\n")
    with pytest.raises(CamexpError, match=rf"^{ids}: not UTF-8 text \(byte 0xff at offset 5\)"):
        list_dataset(DatasetConfig(kind="voc", root=tmp_path, split="val"))
