"""run.json's status after a run that ends early (issue 22): never left at 'running'."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from camexp.config import ExperimentConfig
from camexp.errors import CamexpError
from camexp.report.runs import open_run
from camexp.runner import Run, run_experiment


def config(tmp_path: Path, make_jpeg, **kw) -> ExperimentConfig:
    for name in ("a", "b"):
        make_jpeg(tmp_path / "images" / f"{name}.jpg")
    return ExperimentConfig(
        name="s",
        dataset={"kind": "folder", "root": str(tmp_path / "images")},
        model={"name": "resnet18", "weights": "random"},
        runtime={"device": "cpu"},
        output={"dir": str(tmp_path / "out")},
        **kw,
    )


@pytest.mark.parametrize(
    ("error", "status", "line"),
    [
        (RuntimeError("boom\nsecond line"), "failed", "RuntimeError: boom"),
        (CamexpError("x.jpg: cannot read image"), "failed", "x.jpg: cannot read image"),
        (KeyboardInterrupt(), "stopped", "interrupted (Ctrl-C)"),
    ],
)
def test_an_error_exit_records_a_stopped_or_failed_status(
    tmp_path: Path, make_jpeg, monkeypatch, error: BaseException, status: str, line: str
) -> None:
    """The run started (run.json written), then the loop raised: run.json says what happened, not 'running', and
    the report says so too."""

    def stop(self, *args) -> None:
        raise error

    monkeypatch.setattr(Run, "_loop", stop)
    cfg = config(tmp_path, make_jpeg)
    with pytest.raises(type(error)):
        run_experiment(cfg, progress=False)
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert (meta["status"], meta["error"]) == (status, line)
    assert f"run.json says {status!r}: {line}" in open_run(tmp_path / "out").status


def test_a_refused_invocation_leaves_the_folders_run_json_alone(tmp_path: Path, make_jpeg, monkeypatch) -> None:
    """Refused before it starts (another configuration in the folder): the recorded run's status is the
    recorded run's, not this refusal's."""
    monkeypatch.setattr(Run, "_loop", lambda self, *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config(tmp_path, make_jpeg), progress=False)
    before = (tmp_path / "out" / "run.json").read_text()
    with pytest.raises(CamexpError, match="different configuration"):
        run_experiment(config(tmp_path, make_jpeg, score="softmax"), progress=False)
    assert (tmp_path / "out" / "run.json").read_text() == before
