"""`camexp methods`, `camexp metrics`, `camexp analyses`: compact tables whose names stay whole, and full entries."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

import camexp.cli
from camexp.analyses import ANALYSES
from camexp.cli import app
from camexp.explain.methods import METHODS
from camexp.metrics import METRICS

cli = CliRunner()
COMMANDS = {"methods": METHODS, "metrics": METRICS, "analyses": ANALYSES}


def listed(command: str, width: int, monkeypatch, *args: str) -> str:
    """The command's output as a terminal of `width` columns shows it."""
    console = Console(width=width, record=True)
    monkeypatch.setattr(camexp.cli.common, "console", console)
    res = cli.invoke(app, [command, *args])
    assert res.exit_code == 0, res.output
    return console.export_text()


@pytest.mark.parametrize("width", [120, 80])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_name_is_whole_on_one_line(command: str, width: int, monkeypatch) -> None:
    """Issue 22: the 8-column methods table wrapped every column, names included, into a column of words at 120
    columns. Each registered name is now the whole first cell of a row, and nothing is wider than the terminal."""
    text = listed(command, width, monkeypatch)
    lines = text.splitlines()
    assert max(map(len, lines)) <= width and "…" not in text
    first_cells = [line.split("│")[1].strip() for line in lines if line.count("│") > 2]
    assert set(COMMANDS[command].names()) <= set(first_cells), first_cells
    assert len(lines[1].split("┃")) == 6  # the compact shape: the name and three columns


def test_one_methods_full_entry(monkeypatch) -> None:
    text = " ".join(listed("methods", 100, monkeypatch, "gradcam++").split())
    for field in ("method gradcam++", "needs gradient yes", "source Chattopadhyay et al., WACV 2018, eq. 14"):
        assert field in text
    ablation = " ".join(listed("methods", 100, monkeypatch, "ablationcam").split())
    assert "parameters denominator=score" in ablation and "The paper assumes y^c > 0" in ablation  # the docstring


def test_metric_and_analysis_entries_and_csv(monkeypatch) -> None:
    text = " ".join(listed("metrics", 100, monkeypatch, "pointing_game").split())
    assert "needs boxes" in text and "computed per batch, during the run" in text
    assert "computed from the records, when the run ends" in " ".join(
        listed("analyses", 100, monkeypatch, "drop_dist").split()
    )
    rows = list(csv.reader(io.StringIO(cli.invoke(app, ["metrics", "--format", "csv"]).output)))
    assert rows[0][:2] == ["metric", "needs"] and [r[0] for r in rows[1:]] == [n for n, _ in METRICS.items()]
    # analyses declare no needs (their "needs" column said "-" for every one, mloc's boxes included): their files
    rows = list(csv.reader(io.StringIO(cli.invoke(app, ["analyses", "--format", "csv"]).output)))
    assert "needs" not in rows[0] and {r[0]: r[rows[0].index("files")] for r in rows[1:]}["mloc"] == "mloc.csv"
    assert "files mloc.csv" in " ".join(listed("analyses", 100, monkeypatch, "mloc").split())


@pytest.mark.parametrize("command", ["metrics", "analyses"])
def test_the_compact_table_shows_each_cost(command: str, monkeypatch) -> None:
    """Issue 30: each metric's and analysis's cost per image is in the compact table, and in its full entry."""
    text = listed(command, 120, monkeypatch)
    assert "cost per image" in text.splitlines()[1]
    name, cost = ("road", "2 x len(road.percentiles)") if command == "metrics" else ("area_curve", "11 x M forwards")
    assert f"cost per image {cost}" in " ".join(listed(command, 120, monkeypatch, name).split())


def test_an_unknown_name_is_one_line_naming_the_known_ones() -> None:
    res = cli.invoke(app, ["analyses", "nope"])
    assert res.exit_code == 2 and "unknown analysis 'nope'; known: ['alpha_stats'" in " ".join(res.output.split())
    res = cli.invoke(app, ["methods", "gradcam+++"])
    assert res.exit_code == 2
    assert "'gradcam+++' is neither a method (known: ['ablationcam'" in " ".join(res.output.split())


def test_listings_load_no_torchvision() -> None:
    """`camexp methods`, `metrics` and `analyses` in a fresh process load no torchvision: its package imports the
    detection ops, and with them torch._dynamo and sympy, about 1,500 modules a listing has no use for (they came in
    through camexp.data.transforms and timm.data)."""
    code = (
        "import sys\nfrom camexp.cli import app\n"
        "for command in ('methods', 'metrics', 'analyses'):\n"
        "    app([command], standalone_mode=False)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.splitlines()[-1] == "[]"
