"""The sanity checks (mprt, random_logit): block lists, seeds, similarity measures by hand, what randomising a
block above or below the explained layer must do, the class-agnostic control, and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import yaml
from rich.console import Console
from scipy import stats
from skimage.feature import hog
from skimage.metrics import structural_similarity

import camexp.runner as runner_mod
from camexp.analyses.sanity import (
    MPRT_COLUMNS,
    MPRT_CSV,
    RANDOM_LOGIT_COLUMNS,
    RANDOM_LOGIT_CSV,
    Mprt,
    RandomLogit,
    other_class,
    sanity_settings,
)
from camexp.analyses.similarity import hog_similarity, similarities, spearman, ssim
from camexp.analyses.thumbs import from_thumbnail, thumbnails
from camexp.check import check_experiment, render
from camexp.config import ExperimentConfig
from camexp.errors import CamexpError
from camexp.experiment import load_experiment
from camexp.explain.core import Explainer
from camexp.metrics import validate_settings
from camexp.metrics.batch import BatchContext
from camexp.models import LoadedModel, build_model
from camexp.models.blocks import checkpoints, initial_state, randomisation_blocks
from camexp.results import read_records
from camexp.runner import run_experiment

TINY = {"name": "test_efficientnet", "weights": "random"}  # layer bn2, 160 x 160 input
LITE0_BLOCKS = ["classifier", "bn2", "conv_head", *(f"blocks.{i}" for i in range(6, -1, -1)), "bn1", "conv_stem"]


def test_block_lists_of_known_models_partition_their_weights() -> None:
    expected = {
        "tf_efficientnet_lite0": LITE0_BLOCKS,
        "resnet18": ["fc", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"],
        "swin_tiny_patch4_window7_224": ["head", "norm", "layers.3", "layers.2", "layers.1", "layers.0", "patch_embed"],
    }
    for name, blocks in expected.items():
        net = timm.create_model(name, pretrained=False)
        got = randomisation_blocks(net)
        assert [b.name for b in got] == blocks, name
        keys = [k for b in got for k in b.keys]
        assert sorted(keys) == sorted(net.state_dict()), name  # every weight in exactly one block
    vit = [b.name for b in randomisation_blocks(timm.create_model("vit_tiny_patch16_224", pretrained=False))]
    assert vit[:3] == ["head", "norm", "blocks.11"] and vit[-2:] == ["patch_embed", "cls_token+pos_embed"]


def test_checkpoints_are_depths_of_named_blocks_and_an_unknown_name_is_one_line() -> None:
    blocks = randomisation_blocks(timm.create_model("resnet18", pretrained=False))
    assert checkpoints(blocks, None) == [1, 2, 3, 4, 5, 6, 7]
    assert checkpoints(blocks, ["layer1", "fc"]) == [1, 5, 7]  # the fully random model always
    with pytest.raises(CamexpError, match=r"^sanity.mprt_blocks: \['layer9'\] not among .*: fc, layer4, "):
        checkpoints(blocks, ["layer9"])


def test_initial_state_is_the_seeded_constructor_and_leaves_the_global_rng_alone() -> None:
    cfg = ExperimentConfig.model_validate({"name": "s", "dataset": {"root": "."}, "model": TINY}).model
    torch.manual_seed(5)
    want_next = torch.rand(3)
    torch.manual_seed(5)
    a = initial_state(cfg, 1000, 0)
    assert torch.equal(torch.rand(3), want_next)
    b, c = initial_state(cfg, 1000, 0), initial_state(cfg, 1000, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["classifier.weight"], c["classifier.weight"])
    torch.manual_seed(0)  # the constructor under the same seed, as timm draws it
    ref = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    assert all(torch.equal(a[k], ref[k]) for k in ref)


def test_similarity_measures_on_hand_made_maps() -> None:
    ramp = np.tile(np.linspace(0, 1, 32), (32, 1))
    assert spearman(ramp, ramp**3) == pytest.approx(1.0)  # monotone: same ranks
    assert spearman(ramp, 1 - ramp) == pytest.approx(-1.0)
    assert np.isnan(spearman(ramp, np.zeros_like(ramp)))  # undefined against a constant map
    assert ssim(ramp, ramp) == pytest.approx(1.0) and ssim(ramp, 1 - ramp) < 0
    assert hog_similarity(ramp, ramp) == pytest.approx(1.0) and np.isnan(hog_similarity(ramp, np.zeros_like(ramp)))
    rng = np.random.default_rng(0)
    a, b = rng.random((40, 40)), rng.random((40, 40))
    assert ssim(a, b) == pytest.approx(structural_similarity(a, b, data_range=1.0, win_size=7))
    assert hog_similarity(a, b) == pytest.approx(stats.pearsonr(hog(a), hog(b))[0])
    # |raw| differs from raw only where the raw map has negative values
    raw = torch.tensor([[[-3.0, 1.0], [0.0, 2.0]]])
    other = torch.tensor([[[3.0, 1.0], [0.0, 2.0]]])
    norm = (raw - raw.min()) / (raw.max() - raw.min())
    values = similarities(norm, norm, ("spearman", "spearman_abs"), raw, other)
    assert values["spearman"] == [pytest.approx(1.0)] and values["spearman_abs"] == [pytest.approx(1.0)]
    values = similarities(norm, (other - other.min()) / 6, ("spearman", "spearman_abs"), raw, other)
    assert values["spearman"][0] < 0.5 and values["spearman_abs"] == [pytest.approx(1.0)]


def test_thumbnails_round_trip() -> None:
    maps = torch.rand(2, 160, 240)
    ((shape, data), _) = thumbnails(maps)
    back = from_thumbnail(shape, data)
    assert back.shape == (1, 80, 120)
    assert np.allclose(back[0], torch.nn.functional.avg_pool2d(maps[:1], 2)[0].numpy(), atol=1e-3)


def test_other_class_is_seeded_per_image_and_never_the_target() -> None:
    draws = [other_class(0, f"img{i}", 3, 10) for i in range(400)]
    assert 3 not in draws and set(draws) == set(range(10)) - {3}
    assert draws == [other_class(0, f"img{i}", 3, 10) for i in range(400)]
    assert draws != [other_class(1, f"img{i}", 3, 10) for i in range(400)]
    assert other_class(0, "a", 0, 2) == 1 and other_class(0, "a", 1, 2) == 0


def tiny_cfg(tmp_path: Path, methods: list[str], **extra: object) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {"name": "s", "dataset": {"root": str(tmp_path)}, "model": TINY, "methods": methods, "metrics": [], **extra}
    )


def batch_context(cfg: ExperimentConfig, loaded: LoadedModel, x: torch.Tensor, out: Path) -> BatchContext:
    explainer = Explainer(loaded, cfg.method_specs())
    ids = [f"img{i}" for i in range(len(x))]
    ex = explainer.explain(x, None, ids)
    batch = {"index": torch.arange(len(x)), "image_id": ids}
    return BatchContext(cfg, explainer, x, ex, batch, validate_settings(cfg), own=lambda name: out / name)


def test_mprt_on_a_tiny_model_follows_where_the_blocks_sit(tmp_path: Path, tiny: LoadedModel) -> None:
    """test_efficientnet explains bn2: randomising the classifier (depth 1) leaves A alone, so Eigen-CAM's map
    (a function of A only) is unchanged, while Grad-CAM's gradient changes; with every block random A is
    another one. The floors never look at the model. With every block random the model is its constructor's,
    whose maps a second explainer reproduces; the run's model is never written to."""
    cfg = tiny_cfg(tmp_path, ["gradcam", "eigencam", "random", "center"])
    x = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    ctx = batch_context(cfg, tiny, x, tmp_path)
    Mprt(cfg).update(ctx)
    rows = read_records(tmp_path / MPRT_CSV, MPRT_COLUMNS)
    assert all(torch.equal(v, tiny.model.state_dict()[k]) for k, v in before.items())
    assert list(rows.drop_duplicates("depth")["block"]) == [b.name for b in randomisation_blocks(tiny.model.net)]
    values = rows.set_index(["method", "depth", "index"]).sort_index()[["spearman", "spearman_abs", "ssim", "hog"]]
    assert np.allclose(values.loc[["random", "center"]], 1.0, rtol=0, atol=1e-12)
    assert np.allclose(values.loc["eigencam", 1], 1.0, rtol=0, atol=1e-9)  # the same A: the same map
    assert (values.loc["eigencam", len(randomisation_blocks(tiny.model.net))]["ssim"] < 0.99).all()
    assert (values.loc["gradcam", 1, 0]["ssim"] < 0.999) or (values.loc["gradcam", 1, 1]["ssim"] < 0.999)

    fresh = build_model(cfg.model)
    fresh.model.net.load_state_dict(initial_state(cfg.model, tiny.num_classes, sanity_settings(cfg).seed))
    again = Explainer(fresh, cfg.method_specs()).explain(x, ctx.targets, ctx.image_ids)
    last = rows["depth"].max()
    for m in ("gradcam", "eigencam"):
        for i in range(2):
            a, b = ctx.maps[m][i].double().numpy(), again.maps[m][i].double().numpy()
            got = values.loc[m, last, i]
            want_rho = stats.spearmanr(a.ravel(), b.ravel())[0] if np.ptp(b) else np.nan
            assert got["spearman"] == pytest.approx(want_rho, abs=1e-6, nan_ok=True)
            assert got["ssim"] == pytest.approx(structural_similarity(a, b, data_range=1.0), abs=1e-6)


def test_mprt_explains_only_after_the_chosen_blocks(tmp_path: Path, tiny: LoadedModel) -> None:
    cfg = tiny_cfg(tmp_path, ["gradcam"], sanity={"mprt_blocks": ["conv_stem", "bn2"], "seed": 4})
    ctx = batch_context(cfg, tiny, torch.rand(1, 3, 160, 160), tmp_path)
    Mprt(cfg).update(ctx)
    rows = read_records(tmp_path / MPRT_CSV, MPRT_COLUMNS)
    assert list(rows["block"]) == ["bn2", "conv_stem"] and list(rows["depth"]) == [2, 10]


def test_random_logit_class_agnostic_methods_give_one(tmp_path: Path, lite0: LoadedModel, photo_dir: Path) -> None:
    """The control: Eigen-CAM and the floors ignore the class, so the other class's map is the target's."""
    from camexp.data import PixelTransform
    from camexp.data.images import load_rgb

    t = PixelTransform(lite0.spec)
    x = torch.stack([t(load_rgb(photo_dir / n))[0] for n in ("chelsea.png", "coffee.png")])
    cfg = ExperimentConfig.model_validate(
        {
            "name": "s",
            "dataset": {"root": "."},
            "model": {"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"},
            "methods": ["gradcam", "eigencam", "random", "center"],
        }
    )
    RandomLogit(cfg).update(batch_context(cfg, lite0, x, tmp_path))
    rows = read_records(tmp_path / RANDOM_LOGIT_CSV, RANDOM_LOGIT_COLUMNS).set_index("method")
    assert (rows["other_class"] != rows["target"]).all()
    for m in ("eigencam", "random", "center"):
        assert np.allclose(rows.loc[m, ["ssim", "spearman"]].to_numpy(float), 1.0, atol=1e-6), m
    assert (rows.loc["gradcam", "ssim"] < 0.99).all()  # a class-discriminative method is not 1


def test_check_prints_the_block_list_and_refuses_an_unknown_block(tmp_path: Path, make_jpeg) -> None:
    make_jpeg(tmp_path / "img" / "a.jpg")
    base = {"name": "c", "dataset": {"kind": "folder", "root": str(tmp_path / "img")}, "model": TINY}
    ok = check_experiment(ExperimentConfig.model_validate({**base, "analyses": ["mprt"]}))
    assert ok.ok and ok.model_rows[0][0] == "mprt blocks (head first)"
    assert ok.model_rows[0][1].split(", ")[:3] == ["classifier", "bn2", "conv_head"]
    console = Console(record=True, width=200)
    render(ok, console)
    assert "mprt blocks (head first) │ classifier, bn2, conv_head, blocks.4," in console.export_text()
    assert check_experiment(ExperimentConfig.model_validate(base)).model_rows == []
    bad = check_experiment(
        ExperimentConfig.model_validate({**base, "analyses": ["mprt"], "sanity": {"mprt_blocks": ["fc"]}})
    )
    assert any(e.startswith("sanity.mprt_blocks: ['fc'] not among") for e in bad.errors)


def test_a_killed_run_resumes_to_the_same_sanity_rows(tmp_path: Path, photo_dir: Path, monkeypatch) -> None:
    def config(name: str) -> Path:
        cfg = {
            "name": name,
            "dataset": {"kind": "folder", "root": str(photo_dir), "limit": 3},
            "model": TINY,
            "methods": ["gradcam", "eigencam"],
            "analyses": ["mprt", "random_logit"],
            "sanity": {"mprt_blocks": ["classifier", "blocks.2"]},
            "stats": {"bootstrap": 200},
            "runtime": {"device": "cpu", "batch_size": 1},
            "output": {"dir": str(tmp_path / name)},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    run_experiment(load_experiment(config("whole")), fresh=True, progress=False)
    real = runner_mod.append_records
    calls: list[int] = []

    def die_on_second_batch(path, rows):
        calls.append(1)
        if len(calls) == 2:  # the first batch is recorded; the second dies before its records
            raise KeyboardInterrupt
        real(path, rows)

    monkeypatch.setattr(runner_mod, "append_records", die_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(load_experiment(config("killed")), fresh=True, progress=False)
    monkeypatch.setattr(runner_mod, "append_records", real)
    run_experiment(load_experiment(config("killed")), progress=False)
    for name, cols, key in (
        (MPRT_CSV, MPRT_COLUMNS, ["index", "method", "depth"]),
        (RANDOM_LOGIT_CSV, RANDOM_LOGIT_COLUMNS, ["index", "method"]),
    ):
        whole, killed = (
            read_records(tmp_path / d / name, cols)
            .drop_duplicates(key, keep="last")
            .sort_values(key)
            .reset_index(drop=True)
            for d in ("whole", "killed")
        )
        pd.testing.assert_frame_equal(whole, killed)
    for f in ("summary.csv", "mprt_curve.csv"):
        assert (tmp_path / "killed" / f).read_text() == (tmp_path / "whole" / f).read_text()
    # the curve's intervals come from the same engine and draws as the main table's (summary_long.csv)
    curve = pd.read_csv(tmp_path / "whole" / "mprt_curve.csv")
    last = curve[curve["depth"] == curve["depth"].max()].assign(metric=lambda d: "mprt_" + d["measure"])
    long = pd.read_csv(tmp_path / "whole" / "summary_long.csv")
    both = last.merge(long, on=["metric", "method"], suffixes=("", "_main"))
    assert len(both) == len(last) == 8
    for col in ("value", "lo", "hi", "n"):
        assert np.allclose(both[col], both[f"{col}_main"], atol=1e-6, equal_nan=True), col


def test_layer_units_are_quantus_modules_head_first() -> None:
    """`sanity.mprt_units: layers`: every module with reset_parameters, named_modules reversed (Quantus' top_down),
    each with its own state keys; a Sequential of conv, batch norm, ReLU and linear gives linear, bn, conv."""
    from torch import nn

    from camexp.models.blocks import randomisation_units

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    units = randomisation_units(net, "layers")
    assert [u.name for u in units] == ["4", "1", "0"]
    assert units[1].keys == ("1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked")
