"""A plug-in's bugs end in one line naming the plug-in (its import path), the batch and what was wrong, with the
plug-in's own traceback below when it raised -- never torch's internal error alone (tests/plugins/broken_*.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from camexp.config import ModelConfig
from camexp.errors import CamexpError
from camexp.explain.core import Explainer
from camexp.explain.methods import METHODS
from camexp.models import build_model

PLUGIN = Path(__file__).parents[1] / "plugins" / "broken_cams.py"
BROKEN_IMPORT = Path(__file__).parents[1] / "plugins" / "broken_import.py"
# The line of broken_import.py that fails, as its traceback must name it.
FAILING_LINE = 1 + BROKEN_IMPORT.read_text().splitlines().index("SCALE = 2 * undefined_scale  # noqa: F821")


@pytest.fixture(scope="module")
def resnet():
    return build_model(ModelConfig(name="resnet18", weights="random"))


@pytest.mark.parametrize(
    "name, what",
    [
        ("numpy_map", "returned a numpy.ndarray, not a torch.Tensor"),
        ("wrong_shape", "returned shape (4, 224)"),
        ("wrong_grid", "returned shape (4, 4, 49)"),  # 3-D with B rows, but not a map of the layer's 7x7 grid
    ],
)
def test_a_wrong_return_names_the_plugin_the_batch_and_the_shape_expected(resnet, name: str, what: str):
    x = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with pytest.raises(CamexpError) as err:
        Explainer(resnet, ["gradcam", f"plugins.broken_cams:{name}"]).explain(x, image_ids=["a", "b", "c", "d"])
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert msg.startswith(
        f"method 'plugins.broken_cams:{name}' {what} for a batch of 4 (images ['a', 'b', 'c'] ...); "
        "expected (B, h, w): a torch.Tensor (4, h, w) shaped like the layer's 7x7 maps, on cpu"
    )
    assert f"(defined at {PLUGIN}:" in msg


def test_a_method_that_raises_shows_its_own_traceback_below_one_line(tmp_path: Path, photo_dir: Path):
    from typer.testing import CliRunner

    from camexp.cli import app

    cfg = {
        "name": "broken",
        "dataset": {"kind": "folder", "root": str(photo_dir), "limit": 2},
        "model": {"name": "resnet18", "weights": "random"},
        "methods": ["gradcam", {"name": "mine", "method": "plugins.broken_cams:raises"}],
        "runtime": {"device": "cpu", "batch_size": 2},
        "output": {"dir": str(tmp_path / "out")},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert res.exit_code == 2
    first, *rest = res.output.strip().splitlines()
    assert "method 'mine' (plugins.broken_cams:raises) raised RuntimeError on a batch of 2 (images" in first
    assert "einsum()" in first
    tb = "\n".join(rest)
    assert rest[0] == "Traceback (most recent call last):"
    assert f'File "{PLUGIN}", line' in rest[1] and "in raises" in rest[1]  # starts in the plug-in, not in camexp
    assert "in _channel_weights" in tb and "camexp/explain" not in tb and rest[-1].startswith("RuntimeError: einsum()")


def test_a_plugin_module_that_fails_to_import_shows_its_traceback(tmp_path: Path):
    from camexp.experiment import load_experiment

    with pytest.raises(CamexpError) as err:
        METHODS.get("plugins.broken_import:cam")
    first, *rest = str(err.value).splitlines()
    assert first == (
        "method 'plugins.broken_import:cam': cannot import it (NameError: name 'undefined_scale' is not defined)"
    )
    assert (
        rest[0] == "Traceback (most recent call last):"
        and f'broken_import.py", line {FAILING_LINE}, in <module>' in rest[1]
    )
    assert "importlib" not in "\n".join(rest)
    path = tmp_path / "cfg.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "dataset": {"root": str(tmp_path)},
                "model": {"name": "resnet18"},
                "methods": ["gradcam", "plugins.broken_import:cam"],
            }
        )
    )
    with pytest.raises(CamexpError, match=r"cfg.yaml: methods: .*cannot import it \(NameError(.|\n)*broken_import.py"):
        load_experiment(path)
    with pytest.raises(CamexpError, match=r"cannot import it \(ModuleNotFoundError[^\n]*$"):  # no plug-in code ran
        METHODS.get("plugins.no_such_module:x")


def test_an_entry_point_that_fails_to_load_shows_its_traceback(monkeypatch: pytest.MonkeyPatch):
    from importlib import metadata

    from camexp.registry import Registry

    ep = metadata.EntryPoint(name="broken", value="plugins.broken_import:cam", group="camexp.widgets")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [ep] if group == "camexp.widgets" else [])
    with pytest.raises(CamexpError) as err:
        Registry("widget").names()
    first, *rest = str(err.value).splitlines()
    assert first.startswith(
        "entry point 'broken' in group 'camexp.widgets' (plugins.broken_import:cam) failed to load: NameError"
    )
    assert f'broken_import.py", line {FAILING_LINE}, in <module>' in rest[1]


def experiment(tmp_path: Path, root: Path, **kw: Any) -> Path:
    """A tiny run's YAML (random-weights test_convnext, two photographs, two methods) with `kw` on top."""
    cfg = {
        "name": "broken",
        "dataset": {"kind": "folder", "root": str(root), "limit": 2},
        "model": {"name": "test_convnext", "weights": "random"},
        "methods": ["gradcam", "gradcam++"],
        "runtime": {"device": "cpu", "batch_size": 2},
        "output": {"dir": str(tmp_path / "out")},
        **kw,
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


JOBS = "plugins.broken_jobs"


@pytest.mark.parametrize(
    "key, name, why",
    [
        ("analyses", f"{JOBS}:NoFinish", "has no method finish(out_dir)"),
        (
            "analyses",
            f"{JOBS}:UpdateWithoutCtx",
            "UpdateWithoutCtx.update(self) cannot be called as (self, ctx): too many positional arguments",
        ),
        ("analyses", f"{JOBS}:NOT_A_CLASS", "it is of type int, not an analysis factory"),
        (
            "analyses",
            f"{JOBS}:ReadAsAMethod",
            "ReadAsAMethod.read(self, run_dir, records, methods) cannot be called as (run_dir, records, methods)",
        ),
        (
            "metrics",
            f"{JOBS}:two_args_metric",
            "two_args_metric(view) cannot be called as (view, params)",
        ),
        (
            "metrics",
            f"{JOBS}:batch_metric_without_batch",
            "_compute_without_batch() cannot be called as (batch)",
        ),
        ("metrics", f"{JOBS}:NOT_A_CLASS", "a metric must be a function (RecordsView, MetricParams) -> MetricResult"),
        ("methods", "os:sep", "a method must be a function of MethodInputs (or a camexp Method), not str"),
        (
            "methods",
            "nosuchmod:fn",
            "cannot import it (ModuleNotFoundError: No module named 'nosuchmod'); is 'nosuchmod' installed",
        ),
        ("methods", "os:no_such_fn", "cannot import it (AttributeError: module 'os' has no attribute 'no_such_fn')"),
        ("model.layout", "os:sep", "a layout must be a camexp.models.layout.Layout, not str"),
    ],
)
def test_a_plugin_that_breaks_its_contract_is_refused_when_the_config_is_read_with_the_reason(
    tmp_path: Path, key: str, name: str, why: str
) -> None:
    from camexp.experiment import load_experiment

    kind = {"analyses": "analysis", "metrics": "metric", "methods": "method", "model.layout": "layout"}[key]
    extra: dict[str, Any] = {
        "analyses": {"analyses": [name]},
        "metrics": {"metrics": ["avg_drop", name]},
        "methods": {"methods": ["gradcam", name]},
        "model.layout": {"model": {"name": "test_convnext", "weights": "random", "layout": name}},
    }[key]
    with pytest.raises(CamexpError) as err:
        load_experiment(experiment(tmp_path, tmp_path, **extra))
    msg = str(err.value)
    assert "\n" not in msg and "unknown" not in msg
    assert msg.startswith(f"{tmp_path / 'cfg.yaml'}: {key}: ") and f"{kind} {name!r}: {why}" in msg


@pytest.mark.parametrize(
    "kw, first, where",
    [
        (
            {"analyses": [f"{JOBS}:UpdateRaises"]},
            f"analysis plug-in '{JOBS}:UpdateRaises' raised in update: ValueError: cannot count 2 images",
            "in update",
        ),
        (
            {"metrics": ["avg_drop", f"{JOBS}:raising_batch_metric"]},
            f"metric plug-in '{JOBS}:raising_batch_metric' raised in update: RuntimeError: shape '[2, -1]' is invalid",
            "in _compute_raises",
        ),
        (
            {"metrics": ["avg_drop", f"{JOBS}:raising_metric"]},
            f"metric plug-in '{JOBS}:raising_metric' raised in its summary: ValueError: no rows for me",
            "in raising_metric",
        ),
        (
            {"analyses": [f"{JOBS}:builds_nothing"]},
            f"analysis '{JOBS}:builds_nothing': the NoneType its factory built has no method update(ctx)",
            None,
        ),
    ],
)
def test_a_plugin_that_fails_in_a_run_is_one_line_naming_it_with_its_own_traceback_below(
    tmp_path: Path, photo_dir: Path, kw: dict[str, Any], first: str, where: str | None
) -> None:
    from typer.testing import CliRunner

    from camexp.cli import app

    res = CliRunner().invoke(app, ["run", str(experiment(tmp_path, photo_dir, **kw)), "--no-progress"])
    assert res.exit_code == 2
    line, *rest = res.output.strip().splitlines()
    assert line.startswith(f"error: {first}")
    broken = Path(__file__).parents[1] / "plugins" / "broken_jobs.py"
    if where is None:  # refused before the first image: nothing was recorded
        assert rest == [] and not (tmp_path / "out" / "per_image.csv").exists()
    else:  # the traceback starts in the plug-in, not in camexp
        assert rest[0] == "Traceback (most recent call last):"
        assert f'File "{broken}", line' in rest[1] and rest[1].endswith(where)
        assert "camexp/" not in "\n".join(rest)
