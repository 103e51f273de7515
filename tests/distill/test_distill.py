"""`camexp distill`: the explanation loss (gradcheck, equality with the explainer's maps, hand-checked distances and
KD), the CIFAR-10 data set kind, the WRN models, the configs, and a tiny end-to-end training with a paired design
and a resume after a kill."""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import camexp.distill  # noqa: F401  (registers the WRNs)
from camexp.cli import app
from camexp.config import DatasetConfig, ModelConfig
from camexp.data import list_dataset
from camexp.distill.config import load_distill_config, parse_arm
from camexp.distill.loss import class_maps, explanation_loss, forward_with_maps, kd_loss, map_distance
from camexp.distill.report import distill_markdown, summarize_distill
from camexp.distill.train import ArmTrainer, distill
from camexp.errors import CamexpError
from camexp.explain.core import Explainer
from camexp.explain.methods import METHODS
from camexp.models import build_model
from camexp.models.layout import FeatureLayout
from camexp.report.paper import PUBLISHED_DISTILL

REPO = Path(__file__).resolve().parents[2]
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class TinyCNN(nn.Module):
    """conv-softplus-conv (the explained layer) then a non-linear head, so G depends on A and on the weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.mix, self.fc = nn.Conv2d(3, 4, 1), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv2(nn.functional.softplus(self.conv1(x)))
        return self.fc(nn.functional.softplus(self.mix(a)).mean((2, 3)))


@pytest.mark.parametrize("method", ["gradcam++", "gradcam"])
def test_student_map_gradcheck_in_the_parameters(method: str) -> None:
    """d map / d theta by autograd (through the exact alpha and create_graph) against finite differences."""
    torch.manual_seed(0)
    net = TinyCNN().double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    classes = torch.tensor([[0, 2], [1, -1]])
    names = [n for n, _ in net.named_parameters()]

    def maps(*params: torch.Tensor) -> torch.Tensor:
        with torch.nn.utils.stateless._reparametrize_module(net, dict(zip(names, params, strict=True))):
            logits, A = forward_with_maps(net, net.conv2, FeatureLayout(), x)
            return class_maps(METHODS.get(method), A, logits, classes)

    params = tuple(p.detach().clone().requires_grad_(True) for p in net.parameters())
    out = maps(*params)
    assert out[1, 1].abs().sum() == 0 and out.abs().sum() > 0  # the padded slot is a zero map
    assert torch.autograd.gradcheck(maps, params, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("model", ["wrn_16_1", "test_resnet"])
@pytest.mark.parametrize("method", ["gradcam++", "gradcam"])
def test_student_map_equals_the_explainer_map(model: str, method: str) -> None:
    """On the same weights, the differentiable student map is camexp's explainer map (before upsampling)."""
    torch.manual_seed(0)
    loaded = build_model(ModelConfig(name=model, weights="random"))
    x = torch.rand(3, 3, *loaded.spec.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        top = loaded.model(x).topk(2, 1).indices
    explainer = Explainer(loaded, [method])
    theirs = []
    for j in range(2):
        _, inputs = explainer.activations(x, top[:, j])
        theirs.append(explainer.runs[0].method(inputs))
    loaded.model.requires_grad_(True)
    logits, A = forward_with_maps(loaded.model, loaded.layer, loaded.layout, x)
    ours = class_maps(METHODS.get(method), A, logits, top)
    assert ours.requires_grad
    expected = torch.stack(theirs, 1)
    assert expected.abs().max() > 0
    torch.testing.assert_close(ours.detach(), expected, rtol=0, atol=1e-6)


def test_map_distance_is_a_sum_over_positions_hand_checked() -> None:
    s = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
    t = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    assert float(map_distance(s, t)) == pytest.approx(1 + 0 + 1 + 4)  # not a mean (6 / 4)
    ns, nt = math.sqrt(14), math.sqrt(6)
    l2 = (1 / ns) ** 2 + (2 / ns - 2 / nt) ** 2 + (1 / nt) ** 2 + (3 / ns - 1 / nt) ** 2
    assert float(map_distance(s, t, "l2")) == pytest.approx(l2)
    assert float(map_distance(s, t, "cosine")) == pytest.approx(1 - (0 + 4 + 0 + 3) / (ns * nt))
    # two images; the second has one class (the padded slot is ignored): sum over classes, mean over images
    maps_s = torch.stack([torch.stack([s, t]), torch.stack([t, torch.full((2, 2), 9.0)])])
    maps_t = torch.stack([torch.stack([t, t]), torch.stack([s, torch.zeros(2, 2)])])
    classes = torch.tensor([[3, 5], [1, -1]])
    assert float(explanation_loss(maps_s, maps_t, classes)) == pytest.approx((6 + 0 + 6) / 2)


def test_kd_loss_against_hintons_formula() -> None:
    s = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.0, -1.0]])
    t = torch.tensor([[0.5, 1.5, -2.0], [2.0, 0.1, 0.4]])
    T = 4.0

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v / T) for v in row]
        return [v / sum(e) for v in e]

    direct = (
        sum(
            pt * math.log(pt / ps)
            for rs, rt in zip(s.tolist(), t.tolist(), strict=True)
            for ps, pt in zip(softmax(rs), softmax(rt), strict=True)
        )
        / 2
        * T
        * T
    )
    assert float(kd_loss(s, t, T, multilabel=False)) == pytest.approx(direct, rel=1e-6)

    def sig(v: float) -> float:
        return 1 / (1 + math.exp(-v / T))

    binary = (
        sum(
            sig(b) * math.log(sig(b) / sig(a)) + (1 - sig(b)) * math.log((1 - sig(b)) / (1 - sig(a)))
            for rs, rt in zip(s.tolist(), t.tolist(), strict=True)
            for a, b in zip(rs, rt, strict=True)
        )
        / 2
        * T
        * T
    )
    assert float(kd_loss(s, t, T, multilabel=True)) == pytest.approx(binary, rel=1e-6)


def _batch(path: Path, images: np.ndarray, labels: list[int]) -> None:
    """One batch file as the CIFAR-10 python version writes it (bytes keys, data N x 3072 R, G, B planes)."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    with open(path, "wb") as f:
        pickle.dump(
            {
                b"batch_label": b"x",
                b"labels": labels,
                b"data": data,
                b"filenames": [f"{i}.png".encode() for i in range(len(labels))],
            },
            f,
        )


def write_cifar(root: Path, per_batch: int = 2, test: int = 3, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """A tiny CIFAR-10 in the standard layout; returns the train images (N,32,32,3) and labels in order."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    all_images, all_labels = [], []
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        _batch(folder / name, images, labels)
        if name != "test_batch":
            all_images.append(images)
            all_labels += labels
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in NAMES], b"num_vis": 3072}, f)
    return np.concatenate(all_images), all_labels


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMEXP_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: these tiny convolutions run many times slower when threads compete on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_cifar10_kind_reads_the_python_layout(tmp_path: Path) -> None:
    images, labels = write_cifar(tmp_path / "data")
    listing = list_dataset(DatasetConfig(kind="cifar10", root=tmp_path / "data", split="train"))
    assert listing.class_names == NAMES and not listing.multilabel
    assert [it.label for it in listing.items] == labels and len(listing.items) == 10
    assert listing.items[3].image_id == "train_00003"
    for k in (0, 3, 9):  # pixel (r, c) of channel ch is data[k, ch * 1024 + r * 32 + c]
        assert np.array_equal(np.asarray(Image.open(listing.items[k].path)), images[k])
    test = list_dataset(DatasetConfig(kind="cifar10", root=tmp_path / "data" / "cifar-10-batches-py"))
    assert len(test.items) == 3 and test.provenance["split"] == "test"


def test_cifar10_missing_folder_names_the_layout(tmp_path: Path) -> None:
    with pytest.raises(CamexpError, match=r"cifar-10-batches-py/\{data_batch_1\.\.5, test_batch, batches\.meta\}"):
        list_dataset(DatasetConfig(kind="cifar10", root=tmp_path / "nowhere"))
    write_cifar(tmp_path / "d")
    with pytest.raises(CamexpError, match="splits"):
        list_dataset(DatasetConfig(kind="cifar10", root=tmp_path / "d", split="val"))


def _wrn_params(depth: int, k: int, classes: int = 10) -> int:
    """Parameters of WRN-depth-k from the architecture: stem, 3 groups of (depth-4)/6 pre-activation blocks
    (BN scale+shift, two 3x3 convs, a 1x1 shortcut conv where the width or stride changes), final BN, FC."""
    n, w = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
    total = 3 * 16 * 9
    for g in range(3):
        for i in range(n):
            cin, cout = (w[g] if i == 0 else w[g + 1]), w[g + 1]
            total += 2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout
            total += cin * cout if (cin != cout or (i == 0 and g > 0)) else 0
    return total + 2 * w[3] + w[3] * classes + classes


@pytest.mark.parametrize(("name", "depth", "k", "published"), [("wrn_16_2", 16, 2, 0.7e6), ("wrn_40_2", 40, 2, 2.2e6)])
def test_wrn_builds_by_name_with_the_published_size(name: str, depth: int, k: int, published: float) -> None:
    loaded = build_model(ModelConfig(name=name, weights="random"))
    count = sum(p.numel() for p in loaded.model.parameters())
    assert count == _wrn_params(depth, k)
    assert abs(count - published) / published < 0.03
    assert loaded.layer_name == "act" and loaded.maps_shape == (64 * k, 8, 8) and loaded.spec.size == (32, 32)
    assert loaded.cam_weight is not None  # GAP + linear: CAM applies too


@pytest.mark.parametrize(
    "path", sorted(p for p in (REPO / "configs").glob("*.yaml") if "arms:" in p.read_text()), ids=lambda p: p.stem
)
def test_every_distill_config_validates_and_names_real_models(path: Path) -> None:
    import timm

    cfg = load_distill_config(path)
    assert cfg.name == path.stem
    assert all(timm.is_model(m.name) for m in (cfg.student, cfg.teacher) if m is not None)


def test_paper_configs_validate_and_name_the_posters_arms() -> None:
    p3 = load_distill_config(REPO / "configs" / "poster3_voc07_distill.yaml")
    p4 = load_distill_config(REPO / "configs" / "poster4_cifar10_wrn.yaml")
    assert set(p3.arms) == set(PUBLISHED_DISTILL["poster3"].values) and p3.paper == "poster3"
    assert p4.arms == list(PUBLISHED_DISTILL["poster4"].values) and p4.paper == "poster4"
    assert p4.student.name == "wrn_16_2" and p4.teacher is not None and p4.loss.alpha == 0.01
    assert (
        p4.train.lr,
        p4.train.momentum,
        p4.train.weight_decay,
        p4.train.batch_size,
        p4.train.epochs,
        p4.train.milestones,
        p4.train.gamma,
    ) == (0.1, 0.9, 5e-4, 128, 200, [60, 120, 160], 0.2)
    assert parse_arm("ce+kd+exp_gradcampp").method == "gradcam++"


def test_config_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    base = {
        "name": "x",
        "student": {"name": "wrn_16_1", "weights": "random"},
        "dataset": {"kind": "cifar10", "root": "data"},
    }
    cases = [
        ({"arms": ["ce", "ce+exp_gradcampp"]}, "need a teacher"),
        ({"arms": ["ce+exp_scorecam"], "teacher": {"name": "wrn_16_1"}}, "not a class map"),
        ({"train": {"teacher_maps": "cache"}}, "cache needs augment: none"),
        ({"loss": {"alfa": 0.1}}, "loss.alfa: unknown key"),
        ({"loss": {"kd_weighting": "hinton", "kd_weight": 2}}, "loss: .*1 - kd_weight: keep kd_weight <= 1"),
    ]
    for extra, message in cases:
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({**base, **extra}))
        with pytest.raises(CamexpError, match=message):
            load_distill_config(path)


def _tiny_config(tmp: Path, out: str, augment: str = "crop_flip", **extra: object) -> Path:
    """wrn_16_1 student and a saved wrn_16_1 teacher on a tiny CIFAR-10 written by the test."""
    if not (tmp / "data").exists():
        write_cifar(tmp / "data", per_batch=4, test=6)
        torch.manual_seed(5)
        teacher = build_model(ModelConfig(name="wrn_16_1", weights="random")).model.net
        torch.save(
            {"model_name": "wrn_16_1", "num_classes": 10, "class_names": NAMES, "state_dict": teacher.state_dict()},
            tmp / "teacher.pt",
        )
    cfg = {
        "name": "tiny",
        "teacher": {"name": "wrn_16_1", "weights": str(tmp / "teacher.pt")},
        "student": {"name": "wrn_16_1", "weights": "random"},
        "dataset": {"kind": "cifar10", "root": str(tmp / "data")},
        "arms": ["ce", "ce+exp_gradcampp", "ce+kd+exp_gradcam"],
        "seeds": [0],
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.05, "augment": augment, "device": "cpu"},
        "output": {"dir": str(tmp / out)},
        **extra,
    }
    path = tmp / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _histories(folder: Path) -> dict[str, list[dict]]:
    return {p.parent.parent.name: json.loads(p.read_text())["history"] for p in folder.rglob("history.json")}


def test_paired_arms_and_resume_after_a_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every arm sees the same images in the same order with the same augmentation; a run killed in the second
    epoch of the second arm resumes there and ends exactly where an uninterrupted run ends."""
    whole = distill(load_distill_config(_tiny_config(tmp_path, "whole")), progress=False)
    hist = _histories(whole)
    assert set(hist) == {"ce", "ce+exp_gradcampp", "ce+kd+exp_gradcam"}
    assert json.loads((whole / "distill.json").read_text())["student_parameters"] == _wrn_params(16, 1)
    assert not (whole / "camexp.lock").exists()  # the run lock is released at the end
    for epoch in range(2):
        assert len({h[epoch]["order_sha"] for h in hist.values()}) == 1
    assert hist["ce"][0]["exp_loss"] == 0 and hist["ce+exp_gradcampp"][0]["exp_loss"] > 0
    assert hist["ce+kd+exp_gradcam"][0]["kd_loss"] > 0
    assert all(h[1]["task_loss"] != hist["ce"][1]["task_loss"] for a, h in hist.items() if a != "ce")

    cfg = load_distill_config(_tiny_config(tmp_path, "killed"))
    real, calls = ArmTrainer.evaluate, []

    def evaluate_then_crash(self: ArmTrainer) -> float:
        calls.append(self.arm.name)
        if calls.count("ce+exp_gradcampp") == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(self)

    monkeypatch.setattr(ArmTrainer, "evaluate", evaluate_then_crash)
    with pytest.raises(KeyboardInterrupt):
        distill(cfg, progress=False)
    monkeypatch.setattr(ArmTrainer, "evaluate", real)
    ce_ckpt = cfg.output_dir / "ce" / "seed0" / "checkpoint.pt"
    stamp = ce_ckpt.stat().st_mtime_ns
    assert len(_histories(cfg.output_dir)["ce+exp_gradcampp"]) == 1
    distill(cfg, progress=False)
    assert ce_ckpt.stat().st_mtime_ns == stamp  # a finished arm is not retrained
    resumed = _histories(cfg.output_dir)
    for arm, h in hist.items():
        keys = ["task_loss", "exp_loss", "kd_loss", "metric", "order_sha"]
        assert [[r[k] for k in keys] for r in resumed[arm]] == [[r[k] for k in keys] for r in h], arm
    summary = summarize_distill(cfg.output_dir)
    assert list(summary.table["arm"]) == cfg.arms and summary.metric == "top-1 error %"

    other = load_distill_config(_tiny_config(tmp_path, "killed", loss={"alpha": 0.5}))
    with pytest.raises(CamexpError, match="another distill configuration; pass --fresh"):
        distill(other, progress=False)


def test_cached_teacher_maps_equal_recomputed_ones(tmp_path: Path) -> None:
    """Without augmentation the teacher's maps are cached once per image; training on them is training on maps
    recomputed every batch."""
    cached = distill(load_distill_config(_tiny_config(tmp_path, "cached", augment="none")), progress=False)
    recomputed = distill(
        load_distill_config(
            _tiny_config(
                tmp_path,
                "recomputed",
                augment="none",
                train={
                    "epochs": 2,
                    "batch_size": 8,
                    "lr": 0.05,
                    "augment": "none",
                    "device": "cpu",
                    "teacher_maps": "recompute",
                },
            )
        ),
        progress=False,
    )
    meta = json.loads((cached / "distill.json").read_text())
    assert meta["teacher_maps"]["mode"] == "cache"
    assert json.loads((recomputed / "distill.json").read_text())["teacher_maps"]["mode"] == "recompute"
    a, b = _histories(cached), _histories(recomputed)
    for arm in a:
        for ra, rb in zip(a[arm], b[arm], strict=True):
            assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5) and ra["order_sha"] == rb["order_sha"]


def _fake_results(
    folder: Path,
    values: dict[str, list[float]],
    paper: str | None = "poster4",
    student: str = "wrn_16_2",
    dataset: dict[str, object] | None = None,
    parameters: int | None = None,
) -> None:
    """A distill folder as `camexp distill` writes it, with known final values per arm and seed."""
    cfg = {
        "arms": list(values),
        "seeds": [0, 1, 2],
        "train": {"epochs": 1},
        "student": {"name": student},
        "dataset": dataset or {"kind": "cifar10"},
    }
    folder.mkdir(parents=True)
    meta = {"format": "camexp-distill/2", "name": "fake", "paper": paper, "metric": "top-1 error %", "config": cfg}
    if parameters is not None:
        meta["student_parameters"] = parameters
    (folder / "distill.json").write_text(json.dumps(meta))
    for arm, vals in values.items():
        for seed, v in enumerate(vals):
            d = folder / arm / f"seed{seed}"
            d.mkdir(parents=True)
            row = {"metric": v, "step_seconds": 2.0 if arm == "ce" else 5.0}
            (d / "history.json").write_text(json.dumps({"history": [row]}))


def test_summary_mean_sd_and_paired_interval_by_hand(tmp_path: Path) -> None:
    _fake_results(tmp_path / "r", {"ce": [7.0, 6.0, 8.0], "ce+kd": [6.0, 5.5, 6.5]})
    t = summarize_distill(tmp_path / "r", compare_paper=True).table.set_index("arm")
    assert t.at["ce", "mean"] == pytest.approx(7.0) and t.at["ce", "sd"] == pytest.approx(1.0)
    d = np.array([-1.0, -0.5, -1.5])  # paired differences seed by seed
    half = 4.302652729911275 * d.std(ddof=1) / math.sqrt(3)  # t_{0.975, 2}
    assert t.at["ce+kd", "diff"] == pytest.approx(-1.0)
    assert (t.at["ce+kd", "lo"], t.at["ce+kd", "hi"]) == pytest.approx((-1.0 - half, -1.0 + half))
    assert t.at["ce+kd", "step_x_ce"] == pytest.approx(2.5) and t.at["ce+kd", "paper"] == 5.68


def test_table_compare_paper_shows_the_poster_beside_ours(tmp_path: Path) -> None:
    _fake_results(tmp_path / "res" / "fake", {"ce": [7.0, 6.0, 8.0], "ce+exp_gradcampp": [6.5, 6.0, 7.0]})
    result = CliRunner().invoke(app, ["table", str(tmp_path / "res"), "--compare-paper"])
    assert result.exit_code == 0, result.output
    assert "6.78" in result.output and "6.74" in result.output and "Grad-CAM++ poster Table 4" in result.output
    csv = (tmp_path / "res" / "report.csv").read_text()
    assert "ce+exp_gradcampp" in csv and "poster4" in csv


def test_cli_distill_mistakes_are_one_line_exit_2(tmp_path: Path) -> None:
    """A bad key, and a teacher trained on other classes: one line naming the key or file, exit 2."""
    bad = _tiny_config(tmp_path, "bad", loss={"alpha": 0.01, "mapnorm": "l2"})
    result = CliRunner().invoke(app, ["distill", str(bad), "--no-progress"])
    assert result.exit_code == 2 and "loss.mapnorm: unknown key" in result.output and "Traceback" not in result.output
    torch.save(
        {
            "model_name": "wrn_16_1",
            "num_classes": 5,
            "class_names": NAMES[:5],
            "state_dict": build_model(ModelConfig(name="wrn_16_1", weights="random")).model.net.state_dict()
            | {"fc.weight": torch.zeros(5, 64), "fc.bias": torch.zeros(5)},
        },
        tmp_path / "five.pt",
    )
    other = _tiny_config(tmp_path, "other", teacher={"name": "wrn_16_1", "weights": str(tmp_path / "five.pt")})
    result = CliRunner().invoke(app, ["distill", str(other), "--no-progress"])
    assert result.exit_code == 2 and "classes are not the data set's 10" in result.output, result.output


def test_image_classes_label_positives_and_teacher_top1() -> None:
    from camexp.distill.teacher import image_classes

    logits = torch.tensor([[0.1, 2.0, 0.3], [1.0, 0.0, -1.0]])
    multi = {"labels": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])}
    assert image_classes(multi, logits, "label", True).tolist() == [[0, 2], [1, -1]]
    assert image_classes(multi, logits, "teacher_top1", True).tolist() == [[1], [0]]
    assert image_classes({"label": torch.tensor([2, 0])}, logits, "label", False).tolist() == [[2], [0]]


def test_class_index_folders_train_a_single_label_student(tmp_path: Path) -> None:
    """ILSVRC-style folders (no class names): classes are indices, a ce-only config needs no teacher."""
    rng = np.random.default_rng(0)
    for c in range(3):
        folder = tmp_path / "d" / str(c)
        folder.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    path = tmp_path / "f.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "folders",
                "student": {"name": "wrn_16_1", "weights": "random"},
                "dataset": {"kind": "folder", "root": str(tmp_path / "d")},
                "arms": ["ce"],
                "train": {
                    "epochs": 1,
                    "batch_size": 4,
                    "augment": "none",
                    "device": "cpu",
                    "train_split": "all",
                    "val_split": "all",
                },
                "output": {"dir": str(tmp_path / "out")},
            }
        )
    )
    out = distill(load_distill_config(path), progress=False)
    ckpt = torch.load(out / "ce" / "seed0" / "checkpoint.pt", weights_only=True)
    assert ckpt["class_names"] == ["0", "1", "2"] and ckpt["num_classes"] == 3
    assert 0 <= summarize_distill(out).table.at[0, "mean"] <= 100


@pytest.mark.parametrize("target", ["label", "teacher_top1"])
def test_teacher_targets_are_the_explainers_maps(target: str) -> None:
    """Teacher logits, classes and maps (Grad-CAM++, resized 8x8 -> 4x4) recomputed independently."""
    from camexp.distill.teacher import Teacher

    torch.manual_seed(0)
    loaded = build_model(ModelConfig(name="wrn_16_1", weights="random"))
    teacher = Teacher(loaded, ["gradcam++"], target, False, (8, 8), (4, 4))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([4, 0, 9])
    got = teacher.targets(x, {"label": labels})
    with torch.no_grad():
        logits = loaded.model(x)
    classes = logits.argmax(1) if target == "teacher_top1" else labels
    explainer = Explainer(loaded, ["gradcam++"])
    raw = explainer.runs[0].method(explainer.activations(x, classes)[1])
    expected = nn.functional.avg_pool2d(raw[:, None], 2)[:, 0]  # bilinear 8 -> 4 (no corner alignment) = 2x2 mean
    torch.testing.assert_close(got.logits, logits)
    assert got.classes[:, 0].tolist() == classes.tolist()
    torch.testing.assert_close(got.maps["gradcam++"][:, 0], expected, rtol=1e-5, atol=1e-6)


def test_voc_teachers_are_checkpoints_of_shipped_finetune_configs() -> None:
    from camexp.finetune.config import load_finetune_config

    shipped = (REPO / "configs" / "finetune").glob("*.yaml")
    finetunes = {str(c.checkpoint_path): c for c in map(load_finetune_config, shipped)}
    for name in ("poster3_voc07_distill", "distill_smoke_voc12"):
        cfg = load_distill_config(REPO / "configs" / f"{name}.yaml")
        assert cfg.teacher is not None
        ft = finetunes[cfg.teacher.weights]
        assert (ft.model.name, ft.dataset.year) == (cfg.teacher.name, cfg.dataset.year)


def test_descending_the_explanation_loss_brings_the_student_map_to_the_teachers() -> None:
    """Gradient steps on ||L_s - L_t||^2 alone (Grad-CAM++ maps of the label class) shrink it: the gradient
    through the student's map points the right way."""
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(name="wrn_16_1", weights="random"))
    student = build_model(ModelConfig(name="wrn_16_1", weights="random"))
    student.model.requires_grad_(True).train()
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    classes = torch.arange(8)[:, None] % 10
    explainer = Explainer(teacher, ["gradcam++"])
    target = explainer.runs[0].method(explainer.activations(x, classes[:, 0])[1])[:, None]
    opt = torch.optim.SGD(student.model.parameters(), lr=0.02)
    losses = []
    for _ in range(15):
        logits, A = forward_with_maps(student.model, student.layer, student.layout, x)
        loss = explanation_loss(class_maps(METHODS.get("gradcam++"), A, logits, classes), target, classes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_a_distill_into_a_run_folder_is_refused_before_it_writes(tmp_path: Path) -> None:
    path = _tiny_config(tmp_path, "a-run")
    out = load_distill_config(path).output_dir
    out.mkdir(parents=True)
    (out / "run.json").write_text("{}")
    result = CliRunner().invoke(app, ["distill", str(path), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert f"{out} holds a camexp run (run.json); a distillation needs a folder of its own" in " ".join(
        result.output.split()
    )
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


def test_a_second_distill_into_a_held_folder_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """Two `camexp distill` on one config would train at once and overwrite each other's checkpoints: while the
    folder's run lock is held (here by this process, as a live run holds it), a second distill stops at once."""
    from camexp.lock import hold

    path = _tiny_config(tmp_path, "held")
    out = load_distill_config(path).output_dir
    with hold(out):
        result = CliRunner().invoke(app, ["distill", str(path), "--no-progress"])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert "another camexp run is writing this folder" in result.output
        assert sorted(p.name for p in out.iterdir()) == ["camexp.lock"]  # no distill.json, no checkpoint
    assert not (out / "camexp.lock").exists()


def _teacher_state(path: Path) -> dict[str, torch.Tensor]:
    from camexp.distill.train import open_session

    s = open_session(load_distill_config(path), progress=False, cache=False)
    assert s.teacher is not None
    return s.teacher.loaded.model.net.state_dict()


def test_a_random_teacher_is_drawn_from_the_config(tmp_path: Path) -> None:
    """`teacher: {weights: random}` is drawn from `teacher_seed` whatever the global RNG holds, so two runs of one
    config (and a resume) train against the same teacher; the seed is in the fingerprint and in distill.json."""
    random_teacher = {"name": "wrn_16_1", "weights": "random"}
    path = _tiny_config(tmp_path, "rt", teacher=random_teacher, arms=["ce", "ce+kd"])
    torch.manual_seed(1)
    first = _teacher_state(path)
    torch.manual_seed(2)
    second = _teacher_state(path)
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = _tiny_config(tmp_path, "rt1", teacher=random_teacher, arms=["ce", "ce+kd"], teacher_seed=1)
    assert not torch.equal(first["fc.weight"], _teacher_state(other)["fc.weight"])
    cfg, cfg1 = load_distill_config(path), load_distill_config(other)
    assert cfg.teacher_seed == 0 and cfg.fingerprint("ce+kd", 0) != cfg1.fingerprint("ce+kd", 0)


def test_augmentation_draws_do_not_depend_on_the_worker_count(tmp_path: Path) -> None:
    """`train.workers` is not in the fingerprint (a resume or an added arm may use another count), so each image's
    crop and flip must not depend on which process loads it: one epoch with 0 and with 2 loader workers trains
    the same weights; without augmentation the weights differ (the draws matter)."""

    def trained(out: str, workers: int, augment: str = "crop_flip") -> dict[str, torch.Tensor]:
        train = {"epochs": 1, "batch_size": 8, "lr": 0.05, "augment": augment, "device": "cpu", "workers": workers}
        path = _tiny_config(tmp_path, out, augment, arms=["ce"], train=train)
        folder = distill(load_distill_config(path), progress=False)
        return torch.load(folder / "ce" / "seed0" / "checkpoint.pt", weights_only=True)["state_dict"]

    main, workers, plain = trained("w0", 0), trained("w2", 2), trained("plain", 0, "none")
    assert all(torch.equal(main[k], workers[k]) for k in main)
    assert not torch.equal(main["fc.weight"], plain["fc.weight"])
    old = tmp_path / "w0" / "ce" / "seed0" / "checkpoint.pt"  # a checkpoint of the earlier draws is not resumed
    torch.save({**torch.load(old, weights_only=True), "format": "camexp-distill/1"}, old)
    with pytest.raises(CamexpError, match="format 'camexp-distill/1'.*pass --fresh"):
        distill(load_distill_config(tmp_path / "w0.yaml"), progress=False)


@pytest.mark.parametrize(
    ("multilabel", "expected"),
    [
        (False, {"camexp": (1.0, 0.9), "hinton": (0.1, 0.9), "attention_transfer": (0.1, 0.18)}),
        (True, {"camexp": (1.0, 0.9), "hinton": (0.1, 0.09), "attention_transfer": (0.1, 0.18)}),
    ],
)
def test_kd_weightings_by_hand(multilabel: bool, expected: dict[str, tuple[float, float]]) -> None:
    """(task, KD) weights of a +kd arm at lambda 0.9 and 10 classes: camexp 1 and 0.9; Hinton 1 - 0.9 and 0.9 (the
    multi-label KD, a sum over classes, averaged over them as BCE is: 0.9 / 10); attention transfer's
    kl_div (a mean over the B x 10 elements) * 2 * 0.9 = 0.18 * the per-image KL."""
    from camexp.distill.loss import loss_weights

    for weighting, (task, kd) in expected.items():
        assert loss_weights(weighting, 0.9, 10, multilabel) == pytest.approx((task, kd)), weighting  # type: ignore[arg-type]


def test_the_step_loss_follows_the_chosen_kd_weighting(tmp_path: Path) -> None:
    """One training step of ce+kd+exp_gradcam (and of ce+exp_gradcam, which has no KD term) on the same batch
    from the same initial weights: the components are the same under every weighting and the total is the
    hand-written formula of each; the weighting is part of the fingerprint."""
    from dataclasses import replace

    from camexp.distill.config import LossConfig
    from camexp.distill.train import open_session, train_loader

    path = _tiny_config(tmp_path, "kdw", arms=["ce+exp_gradcam", "ce+kd+exp_gradcam"])
    s = open_session(load_distill_config(path), progress=False, cache=False)
    batch = next(iter(train_loader(s, 0, 0)))
    x, y = batch["image"], batch["label"]
    formulas = {  # (task, exp, kd) -> loss; alpha 0.01, lambda 0.9, 10 classes
        "camexp": lambda t, e, k: t + 0.01 * e + 0.9 * k,
        "hinton": lambda t, e, k: 0.1 * t + 0.01 * e + 0.9 * k,
        "attention_transfer": lambda t, e, k: 0.1 * t + 0.01 * e + 0.18 * k,
    }
    parts, prints = [], set()
    for weighting, formula in formulas.items():
        cfg = s.cfg.model_copy(update={"loss": LossConfig(kd_weighting=weighting)})  # type: ignore[arg-type]
        assert cfg.model_dump()["loss"]["kd_weighting"] == weighting  # recorded with the config
        prints.add(cfg.fingerprint("ce+kd+exp_gradcam", 0))
        for arm in cfg.parsed_arms:
            trainer = ArmTrainer(replace(s, cfg=cfg), arm, 0, fresh=True)
            got = trainer.step(x, y, s.teacher_targets(batch, x))
            task, exp, kd = got["task_loss"], got["exp_loss"], got["kd_loss"]
            want = formulas["camexp"](task, exp, kd) if not arm.kd else formula(task, exp, kd)
            assert got["loss"] == pytest.approx(want, rel=1e-6), (weighting, arm.name)
            if arm.kd:
                parts.append((task, exp, kd))
    assert len(set(parts)) == 1 and min(parts[0]) > 0 and len(prints) == 3
    assert load_distill_config(path).loss.kd_weighting == "camexp"  # the default: today's loss


def test_profile_alternates_the_arms_step_by_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--profile` timed each arm's steps in one block, so a machine slowing down (other jobs) charged the last
    arms: the arms now take turns on every batch, the first place rotating, and each steps on the same batches."""
    from camexp.distill.train import profile

    calls: list[tuple[str, int]] = []

    def step(self: ArmTrainer, x: torch.Tensor, y: torch.Tensor, target: object) -> dict[str, float]:
        calls.append((self.arm.name, int(y.sum())))
        return {"task_loss": 1.0, "exp_loss": 2.0, "kd_loss": 0.0, "loss": 1.02}

    monkeypatch.setattr(ArmTrainer, "step", step)
    cfg = load_distill_config(_tiny_config(tmp_path, "prof"))
    rows = profile(cfg, steps=2, progress=False)
    a, b, c = cfg.arms
    assert [name for name, _ in calls] == [a, b, c, b, c, a, c, a, b]
    assert all(calls[3 * i][1] == calls[3 * i + 1][1] == calls[3 * i + 2][1] for i in range(3))  # same batch
    assert [r["arm"] for r in rows] == cfg.arms and all(r["steps"] == 2 for r in rows)
    assert [r["first_alpha_exp_loss"] for r in rows] == [0.02] * 3 and rows[0]["x_ce"] == 1.0


def test_compare_paper_says_how_far_the_students_size_is_from_the_posters(tmp_path: Path) -> None:
    """Table 3's student is an 11-layer CNN of 27 M parameters; VGG-11 with a 20-class head has 128.8 M (the same
    name-level setting, so only the counts tell): a warning with the ratio. WRN-16-2's 0.69 M is within 10 % of
    the 0.7 M published: the ratio is said, no warning."""
    vgg11 = 128_848_276  # vgg11's 132,863,336 with the 1000-class head (torchvision), 4097 x 980 fewer for 20 classes
    voc = {"kind": "voc", "year": 2007}
    _fake_results(tmp_path / "res" / "p3", {"ce": [0.3] * 3}, "poster3", "vgg11.tv_in1k", voc, vgg11)
    p3 = summarize_distill(tmp_path / "res" / "p3", compare_paper=True)
    assert p3.warning() == "student vgg11 has 128.8 M parameters, 4.77× the poster3 student's 27 M"
    _fake_results(tmp_path / "res" / "p4", {"ce": [7.0] * 3}, parameters=_wrn_params(16, 2))
    p4 = summarize_distill(tmp_path / "res" / "p4", compare_paper=True)
    assert p4.warning() is None
    assert "Student: 0.6917 M parameters, 0.99× the poster4 student's 0.7 M." in distill_markdown(p4, True)
    result = CliRunner().invoke(app, ["table", str(tmp_path / "res"), "--compare-paper"])
    assert result.exit_code == 0 and "4.77× the poster3 student's 27 M" in result.output, result.output


def test_arms_are_not_added_beside_checkpoints_that_other_software_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit's resume finding, for distill folders: the table would compare arms trained by two programs."""
    from camexp import provenance

    folder = distill(load_distill_config(_tiny_config(tmp_path, "out", augment="none", arms=["ce"])), progress=False)
    first = json.loads((folder / "distill.json").read_text())
    assert first["software"]["camexp_source_sha256"] == provenance.source_hash() and first["mixed_software"] == []
    real = provenance.software()
    monkeypatch.setattr(provenance, "software", lambda: {**real, "timm": "0.0-other"})
    more = load_distill_config(_tiny_config(tmp_path, "out", augment="none", arms=["ce", "ce+kd"]))
    with pytest.raises(CamexpError, match=rf"this distillation was written by other software \(timm: {real['timm']} "):
        distill(more, progress=False)
    assert not (folder / "ce+kd").exists()
    distill(more, progress=False, allow_software_change=True)
    meta = json.loads((folder / "distill.json").read_text())
    assert meta["mixed_software"] == [{"changed": {"timm": [real["timm"], "0.0-other"]}}]
    assert len(meta["invocations"]) == 2
    assert any("Mixed software" in n for n in summarize_distill(folder).notes)
