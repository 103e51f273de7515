"""The open core: one registry, plug-ins by import path and entry point, an acyclic import graph, and the
small helpers the runner relies on."""

from __future__ import annotations

import importlib.util
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from camexp.accel import HOST_ALLOCATOR, forward_chunk, resolve_device
from camexp.errors import CamexpError
from camexp.explain.methods import METHODS, Method, MethodInputs, method
from camexp.registry import Registry

REPO = Path(__file__).resolve().parents[2]


def test_import_graph_has_no_cycle_and_runs_with_the_data_flow():
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
    graph = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graph)
    edges = graph.graph()  # type-only imports included: a cycle through type hints is a cycle too
    assert "camexp.runner" in edges and edges["camexp.cli.run"]  # the scan really read the package
    assert graph.cycles(edges) == []
    assert graph.backward(edges) == []
    assert graph.unplaced(edges) == []
    assert graph.runner_users(edges) == []
    assert graph.leaf_imports(edges) == [] and "camexp.stats.bootstrap" in edges  # the statistics room is a leaf
    assert [a for a, bs in edges.items() if "camexp.runner" in bs] == ["camexp.cli.run"]
    # the checker itself finds a cycle, a backward import, an unplaced package and a runner import when there is one
    assert graph.cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    assert graph.backward({"camexp.config": {"camexp.runner"}, "camexp.runner": set()}) == [
        ("camexp.config", "camexp.runner")
    ]
    assert graph.unplaced({"camexp.newroom.thing": set(), "camexp.config": set(), "camexp": set()}) == [
        "camexp.newroom.thing"
    ]
    assert graph.leaf_imports({"camexp.stats.x": {"camexp.errors", "camexp.stats.y"}}) == [
        ("camexp.stats.x", "camexp.errors")
    ]
    assert graph.runner_users({"camexp.report.x": {"camexp.runner"}, "camexp.cli.run": {"camexp.runner"}}) == [
        "camexp.report.x"
    ]


def test_registry_refuses_duplicates_and_names_what_is_known():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(CamexpError, match="'a' is registered twice"):
        reg.register("a", 2)
    assert reg.get("a") == 1 and "a" in reg and "b" not in reg
    with pytest.raises(CamexpError, match=r"unknown widget 'b'; known: \['a'\]"):
        reg.get("b")
    with pytest.raises(CamexpError, match="registered twice"):
        method("gradcam", "again")(lambda x: x.A.sum(1))


def test_plugins_by_import_path_share_the_contract():
    m = METHODS.get("plugins.my_cams:abs_gradcam")
    assert isinstance(m, Method) and m.needs_grad and m.summary.startswith("Grad-CAM with |G|")
    a = torch.rand(1, 2, 3, 3)
    g = torch.tensor([-1.0, 2.0])[None, :, None, None].expand(1, 2, 3, 3)
    expected = (1.0 * a[0, 0] + 2.0 * a[0, 1]).relu()
    assert torch.allclose(m(MethodInputs(A=a, G=g, targets=torch.tensor([0])))[0], expected)
    with pytest.raises(CamexpError, match="cannot import"):
        METHODS.get("plugins.no_such_module:x")
    with pytest.raises(CamexpError, match="must be a function"):
        METHODS.get("plugins.my_cams:__name__")


def test_entry_points_register_into_the_same_registry(monkeypatch: pytest.MonkeyPatch):
    ep = metadata.EntryPoint(name="abs-cam", value="plugins.my_cams:abs_gradcam", group="camexp.widgets")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [ep] if group == "camexp.widgets" else [])
    reg: Registry[object] = Registry("widget")
    assert reg.names() == ["abs-cam"] and reg.get("abs-cam").__name__ == "abs_gradcam"


def test_plugin_method_metric_and_analysis_run_through_camexp_run(tmp_path: Path, photo_dir: Path):
    from typer.testing import CliRunner

    from camexp.cli import app

    cfg = {
        "name": "plugin",
        "dataset": {"kind": "folder", "root": str(photo_dir), "limit": 2},
        "model": {"name": "resnet18", "weights": "random"},
        "methods": ["gradcam", "plugins.my_cams:abs_gradcam"],
        "metrics": ["avg_drop", "plugins.my_cams:mean_o"],
        "analyses": ["plugins.my_cams:CountImages"],
        "runtime": {"device": "cpu", "batch_size": 2},
        "output": {"dir": str(tmp_path / "out")},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert res.exit_code == 0, res.output
    rec = pd.read_csv(tmp_path / "out" / "per_image.csv")
    assert list(rec["method"].unique()) == ["gradcam", "plugins.my_cams:abs_gradcam"] and len(rec) == 4
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", index_col=0)
    mean_o = rec.groupby("method", sort=False)["o"].mean()
    assert summary.loc["Mean O (plug-in)", "plugins.my_cams:abs_gradcam"] == pytest.approx(mean_o.iloc[1], abs=1e-4)
    assert pd.read_csv(tmp_path / "out" / "plugin_count.csv")["images"].tolist() == [2]
    res = CliRunner().invoke(app, ["check", str(path)])  # the plug-in analysis' own model check
    assert res.exit_code == 0 and re.search(r"plug-in classes\s+│ 1000", res.output), res.output
    path.write_text(yaml.safe_dump(dict(cfg, model={"name": "resnet18", "weights": "random", "layer": "layer3"})))
    res = CliRunner().invoke(app, ["check", str(path)])
    assert res.exit_code == 1 and "CountImages takes layer4's maps, not layer3's" in res.output, res.output
    path.write_text(yaml.safe_dump(dict(cfg, settings={"count": {"colum": "seen"}})))  # its own settings model
    res = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert res.exit_code == 2 and "settings.count.colum: unknown key" in res.output, res.output
    path.write_text(
        yaml.safe_dump(dict(cfg, settings={"count": {"column": "seen"}}, output={"dir": str(tmp_path / "o2")}))
    )
    assert CliRunner().invoke(app, ["run", str(path), "--no-progress"]).exit_code == 0
    assert pd.read_csv(tmp_path / "o2" / "plugin_count.csv")["seen"].tolist() == [2]
    bad = dict(cfg, methods=["gradcam", "plugins.my_cams:nope"])
    path.write_text(yaml.safe_dump(bad))
    res = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert res.exit_code == 2 and "cfg.yaml: methods" in res.output and "plugins.my_cams:nope" in res.output


def test_resolve_device_errors_are_one_line():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CamexpError, match="not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(CamexpError, match="no CUDA device"):
            resolve_device("cuda:1")


def test_forward_chunk_defaults():
    assert forward_chunk(torch.device("cpu"), None) == 8
    assert forward_chunk(torch.device("cpu"), 3) == 3
    assert forward_chunk(torch.device("cuda"), None) is None
    assert forward_chunk(torch.device("cuda"), 5) == 5


def test_one_chunked_forward_policy():
    """Every batched forward (scorer, tail, per-batch metrics) splits by accel.chunks: the chunk, else MAX_FORWARD."""
    from camexp.accel import MAX_FORWARD, chunks

    assert list(chunks(5, 2)) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert list(chunks(MAX_FORWARD + 3, None)) == [slice(0, MAX_FORWARD), slice(MAX_FORWARD, MAX_FORWARD + 3)]
    assert list(chunks(0, 4)) == []


def test_target_scores_are_the_targets_confidences():
    from camexp.explain.scoring import target_scores

    logits = torch.tensor([[0.0, float(np.log(3.0))], [2.0, -1.0]])
    assert target_scores(logits, torch.tensor([1, 1]), "softmax").tolist() == pytest.approx([0.75, 1 / (1 + np.exp(3))])
    assert target_scores(logits, torch.tensor([0, 0]), "logit").tolist() == [0.0, 2.0]
    assert target_scores(logits, torch.tensor([0, 1]), "sigmoid").tolist() == pytest.approx([0.5, 1 / (1 + np.e)])


def test_replace_atomically_leaves_the_old_file_when_writing_fails(tmp_path: Path):
    from camexp.io import replace_atomically, write_text_atomically

    path = tmp_path / "run.json"
    write_text_atomically(path, "old")

    def half_written(tmp: Path) -> None:
        tmp.write_text("ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(path, half_written)
    assert path.read_text() == "old"
    replace_atomically(path, lambda tmp: tmp.write_bytes(b"new"), sync=True)
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_non_finite_maps_stop_the_run_naming_method_and_image():
    from camexp.results import batch_records

    b, methods = 2, ["gradcam", "gradcam++"]
    vec = torch.ones(b)
    finite = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    with pytest.raises(CamexpError, match=r"'gradcam\+\+' produced non-finite values for image\(s\) \['img1'\]"):
        batch_records(
            torch.arange(b).numpy(),
            ["img0", "img1"],
            methods,
            y=vec,
            p_true=vec,
            targets=vec,
            pred=vec,
            labels=vec,
            o=torch.ones(2, b),
            constant=torch.zeros(2, b),
            finite=finite,
        )
    rows = batch_records(
        torch.arange(b).numpy(),
        ["img0", "img1"],
        methods,
        y=vec,
        p_true=vec,
        targets=vec * 3,
        pred=vec,
        labels=-vec,
        o=torch.tensor([[0.5, 0.25], [0.125, 1.0]]),
        constant=torch.tensor([[0.0, 1.0], [0.0, 0.0]]),
        finite=torch.ones(2, b),
    )
    assert rows["method"].tolist() == ["gradcam", "gradcam", "gradcam++", "gradcam++"]
    assert rows["o"].tolist() == [0.5, 0.25, 0.125, 1.0] and rows["constant_map"].tolist() == [0, 1, 0, 0]
    assert rows["target"].tolist() == [3] * 4 and rows["label"].tolist() == [-1] * 4


def test_a_constant_map_is_zeros_and_noted_in_the_summary(tmp_path: Path, photo_dir: Path):
    """A registered method whose map is constant: records flag it and the summary says how many."""
    from camexp.experiment import load_experiment
    from camexp.runner import run_experiment

    flat = "tests_flat_map"
    if flat not in METHODS:
        method(flat, "constant map (test)", needs_grad=False)(lambda x: torch.ones_like(x.A[:, 0]))
    cfg = {
        "name": "flat",
        "dataset": {"kind": "folder", "root": str(photo_dir), "limit": 2},
        "model": {"name": "resnet18", "weights": "random"},
        "methods": ["gradcam", flat],
        "runtime": {"device": "cpu"},
        "output": {"dir": str(tmp_path / "out")},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    summary = run_experiment(load_experiment(path), progress=False)
    rec = pd.read_csv(tmp_path / "out" / "per_image.csv")
    assert rec.loc[rec["method"] == flat, "constant_map"].tolist() == [1, 1]
    assert f"{flat} 2" in " ".join(summary.extra_notes)


def test_alpha_stats_asks_the_registry_which_methods_use_alpha():
    from camexp.analyses.alpha_stats import AlphaStats
    from camexp.config import DatasetConfig, ExperimentConfig, MethodSpec, ModelConfig

    def cfg(methods: list) -> ExperimentConfig:
        return ExperimentConfig(
            name="a",
            dataset=DatasetConfig(root="."),
            model=ModelConfig(name="resnet18"),
            methods=methods,
            metrics=["avg_drop"],
        )

    with pytest.raises(CamexpError, match=r"add one of \[.*'gradcam\+\+orig'"):
        AlphaStats(cfg(["gradcam", "layercam"]))
    AlphaStats(cfg(["gradcam", MethodSpec(name="pp", method="gradcam++")]))  # a renamed Grad-CAM++ counts


def test_tf32_is_off_on_cuda_and_untouched_elsewhere():
    from camexp.accel import disable_tf32

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        disable_tf32(torch.device("cpu"))
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        disable_tf32(torch.device("cuda"))
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


RETAINED = """
import sys, torch
from camexp.accel import keep_host_memory
settings = keep_host_memory() if sys.argv[1] == "keep" else None
def rss() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * 4096
before = rss()
x = torch.ones(1 << 24)  # 64 MiB, touched
del x
print(settings, (rss() - before) >> 20)
"""


@pytest.mark.skipif(
    not Path("/proc/self/statm").exists() or platform.libc_ver()[0] != "glibc",
    reason="needs Linux with glibc (the allocator setting is a no-op elsewhere)",
)
def test_keep_host_memory_makes_glibc_keep_a_freed_64_mib_block():
    """In a fresh process: by default glibc hands a freed 64 MiB block back to the OS (it was mmapped); after
    keep_host_memory it stays in the process for the next forward to reuse."""

    def retained(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", RETAINED, mode], check=True, capture_output=True, text=True).stdout
        settings, mib = out.rsplit(" ", 1)
        return settings, int(mib)

    _, default_mib = retained("default")
    kept_settings, kept_mib = retained("keep")
    assert default_mib < 8 and kept_mib >= 60
    assert kept_settings == str(HOST_ALLOCATOR)
