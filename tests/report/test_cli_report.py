"""`camexp report table|leaderboard|reliability` write what `camexp table` (now an alias that says so) wrote."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.report.test_uncertainty import invoke, synthetic, write_run


@pytest.fixture
def results(tmp_path: Path) -> Path:
    y, o = synthetic(6)
    write_run(tmp_path / "res", "a", "resnet18", y, o)
    write_run(tmp_path / "res", "b", "vgg16", y, o[:, [1, 0, 2]])
    return tmp_path / "res"


@pytest.mark.parametrize(
    "report, legacy, stem",
    [
        ("table", [], "report"),
        ("leaderboard", ["--leaderboard"], "leaderboard"),
        ("reliability", ["--reliability"], "reliability"),
    ],
)
def test_each_report_equals_the_alias_and_the_alias_says_its_new_name(
    results: Path, tmp_path: Path, report: str, legacy: list[str], stem: str
) -> None:
    other = tmp_path / "copy"
    shutil.copytree(results, other)
    new = invoke("report", report, results, "--bootstrap", 100, "--format", "csv")
    assert new.exit_code == 0, new.output
    old = invoke("table", other, *legacy, "--bootstrap", 100, "--format", "csv")
    assert old.exit_code == 0, old.output
    assert f"note: `camexp table{' ' + legacy[0] if legacy else ''}` is now `camexp report {report}`" in old.stderr
    assert "note:" not in new.stderr and new.stdout == old.stdout.replace(str(other), str(results))
    for suffix in (".md", ".csv"):  # the same files, but for the folder they name
        written = (other / f"{stem}{suffix}").read_text().replace(str(other), str(results))
        assert (results / f"{stem}{suffix}").read_text() == written


def test_user_mistakes_are_one_line_with_exit_2(results: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for args, said in [
        (["report", "table", tmp_path / "none"], "none: not a folder"),
        (["report", "leaderboard", results, "--format", "html"], "--format must be 'md' or 'csv', not 'html'"),
        (["report", "reliability", results, "--level", "2"], "level"),
        (["table", results, "--leaderboard", "--reliability"], "three reports: ask for one at a time"),
        (["report", "leaderboard", tmp_path / "empty"], "no run folders (holding run.json) found below it"),
    ]:
        res = invoke(*args)
        assert res.exit_code == 2 and said in res.output and "Traceback" not in res.output, (args, res.output)
