"""Every shipped config validates, and each published table has exactly one config set up as the paper was."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torchvision
import yaml

from camexp.config import PAPER_TABLES, ExperimentConfig, read_yaml
from camexp.errors import CamexpError, ConfigError
from camexp.experiment import load_experiment as load_config
from camexp.metrics import settings_of

# Study configs (a `study:` section; camexp/study loads them) are checked in tests/study/test_study.py, distill configs
# (`arms:`; camexp/distill loads them) in tests/distill/test_distill.py.
CONFIGS = sorted(
    p
    for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")
    if not {"study", "arms"} & set(yaml.safe_load(p.read_text()))
)


def load_all() -> dict[str, ExperimentConfig]:
    return {p.stem: load_config(p) for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_and_names_a_real_model(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name == path.stem
    name = cfg.model.name
    assert (
        name.removeprefix("tv:") in torchvision.models.list_models() if name.startswith("tv:") else timm.is_model(name)
    )


def test_each_paper_table_has_one_config() -> None:
    papers = [c.paper for c in load_all().values() if c.paper]
    assert sorted(papers) == sorted(PAPER_TABLES)
    repro = [c for c in load_all().values() if c.name.startswith("repro_")]
    assert len(repro) == 4 and all(c.paper is None for c in repro)


def test_tables_are_set_up_as_published() -> None:
    by_paper = {c.paper: c for c in load_all().values() if c.paper}
    for table in ("table1", "table5", "table7"):
        assert by_paper[table].dataset.kind == "imagenet_val" and by_paper[table].confidence == "softmax"
    for table in ("table2", "table3", "table4", "table6", "table8"):
        cfg = by_paper[table]
        year = 2012 if table == "table3" else 2007
        assert (cfg.dataset.kind, cfg.dataset.year, cfg.dataset.split, cfg.confidence) == (
            "voc",
            year,
            "val",
            "sigmoid",
        )
        assert cfg.model.weights.startswith(f"checkpoints/voc{str(year)[2:]}_")
    assert by_paper["table4"].methods == ["gradcam++all", "gradcam"]
    assert [by_paper[t].model.name for t in ("table1", "table5", "table7")] == [
        "vgg16.tv_in1k",
        "tv:alexnet",
        "resnet50.tv_in1k",
    ]
    for table, score in (("equiv1", "logit"), ("equiv2", "softmax")):
        cfg = by_paper[table]
        assert (cfg.dataset.kind, cfg.score, cfg.metrics) == ("imagenetv2", score, ["relperf"])
        assert sorted(cfg.methods) == ["gradcam", "gradcam+", "gradcam++"] and cfg.relperf_min_true_prob > 0


def test_field_metric_tables_are_set_up_as_published() -> None:
    by_paper = {c.paper: c for c in load_all().values() if c.paper}
    sc = by_paper["scorecam"]
    assert (sc.dataset.kind, sc.dataset.subset.random, sc.model.name) == ("imagenet_val", 2000, "vgg16.tv_in1k")
    assert sc.metrics == ["avg_drop@keep", "increase@keep", "insertion", "deletion", "energy_pointing"]
    p, keep = settings_of(sc, "perturbation"), settings_of(sc, "keep")
    assert (p.steps, p.deletion_substrate, p.insertion_substrate, keep.fraction) == (100, "zero", "blur", 0.5)
    for arch, model in (("vgg16", "vgg16.tv_in1k"), ("resnet50", "resnet50.tv_in1k")):
        cfg = by_paper[f"torchray_{arch}"]
        assert (cfg.dataset.kind, cfg.dataset.year, cfg.dataset.split, cfg.model.name) == ("voc", 2007, "test", model)
        assert cfg.metrics == ["pointing_game"] and settings_of(cfg, "pointing").tolerance == 15
        assert cfg.model.weights == f"checkpoints/voc07_{arch}.pt" and "gradcam" in cfg.method_names
        coco = by_paper[f"torchray_coco14_{arch}"]
        assert (coco.dataset.kind, coco.dataset.split, coco.model.name) == ("coco", "val2014", model)
        assert coco.metrics == ["pointing_game"] and settings_of(coco, "pointing").tolerance == 15
        assert coco.model.weights == f"checkpoints/coco14_{arch}.pt"
        for c in (cfg, coco):  # TorchRay's rows camexp implements
            assert {"gradcam", "center", "rise", "excitation_backprop", "contrastive_excitation_backprop"} <= set(
                c.method_names
            )


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text("name: exp\ndataset: {kind: folder, root: .}\nmodel: {name: resnet18, weights: random}\n" + body)
    return path


def test_target_true_as_the_readme_writes_it_is_the_true_class(tmp_path: Path) -> None:
    """Issue 22: YAML reads `target: true` as a boolean, which was refused with a confusing message."""
    assert load_config(_write(tmp_path, "target: true\n")).target == "true"
    assert load_config(_write(tmp_path, "target: 'true'\n")).target == "true"
    with pytest.raises(ConfigError, match="target"):
        load_config(_write(tmp_path, "target: false\n"))


def test_a_method_spec_may_not_take_another_methods_name(tmp_path: Path) -> None:
    """Issue 22: `{name: gradcam++, method: gradcam}` printed Grad-CAM numbers under the name Grad-CAM++ (and
    beside the paper's Grad-CAM++ value). Its own name, or a registered name for the same method, is fine."""
    with pytest.raises(ConfigError, match=r"exp.yaml: methods: .*'gradcam\+\+' is a registered method"):
        load_config(_write(tmp_path, "methods: [gradcam, {name: gradcam++, method: gradcam}]\n"))
    ok = "methods: [gradcam++, {name: gradcam, method: gradcam}, {name: gc-soft, method: gradcam}]\n"
    assert load_config(_write(tmp_path, ok)).method_names == ["gradcam++", "gradcam", "gc-soft"]


def test_a_key_given_twice_is_refused_naming_it_and_both_lines(tmp_path: Path) -> None:
    """YAML's last-one-wins would silently run other methods or another target (audit, issue 27)."""
    with pytest.raises(ConfigError, match=r"the key 'methods' is given twice \(lines 4 and 6\)") as e:
        load_config(_write(tmp_path, "methods: [gradcam]\ntarget: true\nmethods: [cam]\n"))
    assert str(e.value).startswith(f"{tmp_path / 'exp.yaml'}: ")
    with pytest.raises(ConfigError, match=r"the key 'dir' is given twice \(lines 5 and 6\)"):
        load_config(_write(tmp_path, "output:\n  dir: out\n  dir: out2\n"))
    with pytest.raises(ConfigError, match=r"the key 'name' is given twice \(lines 4 and 4\)"):
        load_config(_write(tmp_path, "teacher: {name: a, name: b}\n"))


def test_a_merge_key_may_still_be_overridden(tmp_path: Path) -> None:
    """`<<: *anchor` then a key of its own is YAML's documented override, not a duplicate."""
    raw = read_yaml(_write(tmp_path, "base: &b {batch_size: 4, seed: 1}\nruntime: {<<: *b, batch_size: 8}\n"))
    assert raw["runtime"] == {"batch_size": 8, "seed": 1}


def test_a_config_that_is_not_utf8_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\nmodel: {name: resnet18}\ndataset: {root: .}\n".encode("latin-1"))
    with pytest.raises(CamexpError, match=rf"{path}: not UTF-8 text \(byte 0xe9 at offset 9\); save the file as UTF-8"):
        load_config(path)
