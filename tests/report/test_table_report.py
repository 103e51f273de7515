"""`camexp table` on run folders built here by hand: half-written, foreign, mixed and paper-mismatched runs.

No model runs: the records hold chosen Y and O, so every expected number is computed in the test.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from camexp.cli import app
from camexp.config import ExperimentConfig
from camexp.report.tables import RunSummary, cells, report, summarize_run_dir
from camexp.report.terminal import print_summary
from camexp.results import COLUMNS

METHODS = ["gradcam", "gradcam++", "layercam"]
cli = CliRunner()


def write_run(
    folder: Path,
    o: list[list[float]],
    *,
    y: list[float] | None = None,
    status: str = "complete",
    selected: int | None = None,
    methods: list[str] = METHODS,
    p_true: float = float("nan"),
    **config,
) -> Path:
    """A run folder as camexp writes it: run.json and per_image.csv with o[i][j] = O of image i, method j."""
    folder.mkdir(parents=True)
    cfg = ExperimentConfig(
        name=folder.name,
        dataset={"kind": "folder", "root": str(folder)},
        methods=methods,
        model={"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"},
        **config,
    )
    y = y or [0.8] * len(o)
    meta = {
        "config": cfg.model_dump(mode="json"),
        "fingerprint": cfg.fingerprint(),
        "status": status,
        "dataset": {"kind": "folder", "selected": selected or len(o)},
    }
    (folder / "run.json").write_text(json.dumps(meta))
    rows = [
        {
            "index": i,
            "image_id": f"img{i}",
            "method": m,
            "target": 1,
            "label": -1,
            "pred": 1,
            "y": y[i],
            "o": v,
            "p_true": p_true,
            "constant_map": 0,
        }
        for i, per in enumerate(o)
        for m, v in zip(methods, per)
    ]
    pd.DataFrame(rows, columns=COLUMNS).to_csv(folder / "per_image.csv", index=False)
    return folder


def avg_drop(y: list[float], o: list[float]) -> float:
    return 100 * sum(max(0.0, a - b) / a for a, b in zip(y, o)) / len(y)


def folder_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).digest(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_half_written_run_is_reported_as_incomplete_over_its_complete_images_and_left_untouched(tmp_path: Path):
    """Images 0 and 1 have all three methods; image 2 only two (its batch was killed mid-way: a torn last line),
    with O = 0 for gradcam, which over all rows would make R infinite and add the 'underflowed' note."""
    run = write_run(
        tmp_path / "res" / "half",
        [[0.4, 0.6, 0.8], [0.2, 0.9, 0.1], [0.0, 0.5, 0.5]],
        status="running",
        selected=10,
        p_true=0.9,
        metrics=["avg_drop", "increase", "win", "relperf"],
    )
    rec = run / "per_image.csv"
    rec.write_text("\n".join(rec.read_text().splitlines()[:-1]) + "\n2,img2,layercam,1,-1,1,0.8,0.0")  # torn
    before = folder_state(run)

    summary = summarize_run_dir(run)
    assert summary.images == 2
    assert summary.status.startswith(
        "Incomplete run (stopped before the end; the same `camexp run` command resumes it): 2 of 10 images"
    )
    drop = summary.main.loc["Average drop % (lower is better)"]
    assert drop["gradcam"] == pytest.approx(avg_drop([0.8, 0.8], [0.4, 0.2]))
    assert drop["layercam"] == pytest.approx(avg_drop([0.8, 0.8], [0.8, 0.1]))
    win = summary.result.tables["Win % (row method vs column method, ties counted half)"]
    assert win.loc["gradcam", "gradcam++"] + win.loc["gradcam++", "gradcam"] == pytest.approx(100)
    assert win.loc["gradcam++", "gradcam"] == pytest.approx(100)  # 0.6 > 0.4 and 0.9 > 0.2
    relperf = summary.result.tables["Relative performance R = exp(mean log(O_A / O_B))"]
    expected_r = math.exp((math.log(0.4 / 0.6) + math.log(0.2 / 0.9)) / 2)
    assert relperf.loc["gradcam vs gradcam++", ["R", "images"]].tolist() == pytest.approx([expected_r, 2])
    assert not any("underflowed" in n for n in summary.result.notes)

    res = cli.invoke(app, ["table", str(tmp_path / "res"), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert "Incomplete run" in res.output and "2 of 10 images" in res.output
    assert "**Incomplete run" in (tmp_path / "rep" / "report.md").read_text()
    assert folder_state(run) == before  # not a byte nor a timestamp changed


def test_a_complete_run_shows_no_incomplete_mark(tmp_path: Path):
    summary = summarize_run_dir(write_run(tmp_path / "done", [[0.4, 0.6, 0.8]]))
    assert summary.status is None and summary.images == 1


def test_foreign_and_mixed_folders_are_skipped_with_a_warning_and_the_rest_reported(tmp_path: Path):
    res_dir = tmp_path / "res"
    write_run(res_dir / "good", [[0.4, 0.6, 0.8]])
    (res_dir / "foreign").mkdir()
    (res_dir / "foreign" / "run.json").write_text('{"epochs": 3, "loss": 0.1}')  # another tool's run.json
    (res_dir / "garbled").mkdir()
    (res_dir / "garbled" / "run.json").write_text("{not json")
    mixed = write_run(res_dir / "mixed", [[0.4, 0.6, 0.8], [0.3, 0.3, 0.3]])
    with open(mixed / "per_image.csv", "a") as f:  # a second run's value for image 0, gradcam
        f.write("0,img0,gradcam,1,-1,1,0.8,0.75,,0\n")
    copied = write_run(res_dir / "copied", [[0.4, 0.6, 0.8]])
    text = (copied / "per_image.csv").read_text()
    (copied / "per_image.csv").write_text(text + text.split("\n", 1)[1])  # the same rows twice: same numbers

    res = cli.invoke(app, ["table", str(res_dir)])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    rep = report(res_dir)
    assert sorted(s.name for s in rep.summaries) == ["copied", "good"]
    assert len(rep.warnings) == 3
    by_folder = {w.split(":")[0]: w for w in rep.warnings}
    assert "not a camexp run.json" in by_folder[f"skipped {res_dir / 'foreign'}"]
    assert "cannot read run metadata" in by_folder[f"skipped {res_dir / 'garbled'}"]
    assert (
        "image img0 (index 0), method gradcam: 2 rows with different values"
        in by_folder[f"skipped {res_dir / 'mixed'}"]
    )
    for w in rep.warnings:
        assert f"warning: {w}" in " ".join(res.output.split())
    copied_drop = rep.frame[(rep.frame.run == "copied") & rep.frame.metric.str.startswith("Average drop")]
    assert copied_drop.set_index("method")["value"]["gradcam"] == pytest.approx(50.0)


def test_compare_paper_names_the_setting_and_warns_on_another_backbone_or_no_paper(tmp_path: Path):
    res_dir = tmp_path / "res"
    write_run(res_dir / "lite0_vs_resnet", [[0.4, 0.6, 0.8]], paper="table7")
    write_run(res_dir / "nopaper", [[0.4, 0.6, 0.8]])
    rep = report(res_dir, compare_paper=True)
    md = rep.markdown
    assert "Compared with Grad-CAM++ paper Table 7: ILSVRC2012 val, ResNet-50 (resnet50 on ILSVRC2012 val)" in md
    mismatch = (
        "not comparable with table7: this run's backbone tf_efficientnet_lite0, the paper's resnet50 and "
        "data set folder, the paper's ILSVRC2012 val"
    )
    assert f"**Warning: {mismatch}.**" in md
    assert "No `paper:` in this run's config" in md
    assert rep.warnings == [
        f"{res_dir / 'lite0_vs_resnet'}: {mismatch}",
        f"{res_dir / 'nopaper'}: no `paper:` in its config",
    ]
    assert set(rep.frame.dropna(subset=["paper"])["compared_to"]) == {"table7"}


def test_matching_setting_gets_no_warning(tmp_path: Path):
    run = write_run(tmp_path / "res" / "r50", [[0.4, 0.6, 0.8]], paper="table7")
    meta = json.loads((run / "run.json").read_text())
    meta["config"]["model"]["name"] = "tv:resnet50"
    meta["config"]["dataset"]["kind"] = "imagenet_val"
    (run / "run.json").write_text(json.dumps(meta))
    assert report(tmp_path / "res", compare_paper=True).warnings == []


def test_terminal_table_keeps_every_method_name_whole_on_80_columns(tmp_path: Path):
    methods = ["gradcam", "gradcam+", "gradcam++", "gradcam++all", "gradcam++orig", "layercam"]
    run = write_run(tmp_path / "many", [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]] * 2, methods=methods)
    console = Console(width=80, record=True)
    print_summary(summarize_run_dir(run), console)
    text = console.export_text()
    summary = summarize_run_dir(run)
    assert_visible(text, 80, methods, [c.replace("**", "") for c in cells(summary).to_numpy().ravel()])
    assert any(line.split()[:2] == ["5", "gradcam++orig"] for line in text.splitlines())  # numbered win matrix


def assert_visible(text: str, width: int, names: list[str], values: list[str]) -> None:
    """Within `width` columns, nothing cut (…), every name a whole word and every value whole on one line."""
    assert max(len(line) for line in text.splitlines()) <= width and "…" not in text
    words = {w for line in text.splitlines() for w in line.replace("│", " ").split()}
    assert set(names) <= words, names
    missing = [v for v in values if v not in text]
    assert not missing, (missing, text)


def test_report_into_an_unwritable_place_is_one_line(tmp_path: Path):
    write_run(tmp_path / "res" / "r", [[0.4, 0.6, 0.8]])
    (tmp_path / "afile").write_text("")
    res = cli.invoke(app, ["table", str(tmp_path / "res"), "--out", str(tmp_path / "afile")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"{tmp_path / 'afile'}: cannot write report.md and report.csv" in " ".join(res.output.split())


def test_plain_flags_are_shown_as_flags():
    res = cli.invoke(app, ["table", "--help"])
    assert "--compare-paper" in res.output and "<bool>" not in res.output


def test_docs_publish_the_numbers_compare_paper_uses():
    """The Definitions page's D6 table (docs/definitions.md) is what users read; it must be the numbers of
    report/paper.py."""
    from camexp.report.paper import PUBLISHED

    readme = (Path(__file__).resolve().parents[2] / "docs" / "definitions.md").read_text().split("## D6")[1]
    for table, (_, rows) in PUBLISHED.items():
        line = next(line for line in readme.splitlines() if line.startswith(f"| {table} |"))
        if not table.startswith("table"):  # the later papers: every published number is on the table's line
            assert all(f"{v:g}" in line for per in rows.values() for v in per.values()), table
            continue
        pp, gc = line.strip("|").split("|")[2:4]
        for cell, method in ((pp, "gradcam++" if table != "table4" else "gradcam++all"), (gc, "gradcam")):
            assert [float(v) for v in cell.split("/")] == [per[method] for per in rows.values()], table


def test_a_run_holding_its_lock_is_reported_as_running_now(tmp_path: Path):
    from camexp.lock import hold

    run = write_run(tmp_path / "live", [[0.4, 0.6, 0.8]], status="running", selected=3)
    with hold(run):
        status = summarize_run_dir(run).status
    assert status.startswith(f"Incomplete run (running now: pid {os.getpid()} on host ")
    assert "1 of 3 images recorded for every method" in status


def test_every_published_table_names_its_setting():
    """--compare-paper reads a run against SETTINGS[paper]: a published table without one would crash it."""
    from camexp.config import PAPER_TABLES
    from camexp.report.paper import PUBLISHED, PUBLISHED_RELPERF, SETTINGS

    assert set(PUBLISHED) | set(PUBLISHED_RELPERF) == set(SETTINGS) == set(PAPER_TABLES)


# --- issue 22: text reaches the terminal and Markdown as text -------------------------------------------------


def _table_lines(md: str) -> list[list[str]]:
    """The Markdown tables of `md`, each as its lines."""
    tables: list[list[str]] = []
    previous = ""
    for line in md.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    return tables


def test_a_pipe_in_a_method_name_does_not_break_the_markdown_tables(tmp_path: Path):
    """Issue 22: a `|` in a method name started a new column in summary.md's tables. Every row of a table has
    as many unescaped pipes as its header, and the name reads back whole (as GitHub renders `\\|`)."""
    import re

    from camexp.report.tables import to_markdown

    methods = ["grad|cam", "gradcam++", "layercam"]
    run = write_run(
        tmp_path / "res" / "piped",
        [[0.4, 0.6, 0.7], [0.2, 0.5, 0.6]],
        methods=methods,
        metrics=["avg_drop", "increase", "win"],
    )
    for md in (to_markdown(summarize_run_dir(run)), report(tmp_path / "res").markdown):
        tables = _table_lines(md)
        assert len(tables) >= 3  # main, win matrix, paired comparisons
        for lines in tables:
            pipes = [len(re.findall(r"(?<!\\)\|", line)) for line in lines]
            assert len(set(pipes)) == 1, lines
        assert "grad\\|cam" in tables[0][0] and "grad\\|cam vs gradcam++" in tables[-1][2]


def test_html_in_run_and_method_names_is_escaped_in_summary_and_report(tmp_path: Path):
    """Audit: run and method names with HTML landed raw in summary.md and report.md (live where the Markdown is
    rendered). They appear HTML-escaped, tables keep their columns, and the CSV keeps the name as it is."""
    import re

    from camexp.report.tables import to_markdown

    evil = "<img src=x onerror=alert(1)>|x"
    run = write_run(tmp_path / "res" / "<i>run", [[0.4, 0.6], [0.2, 0.5]], methods=[evil, "gradcam++"])
    rep = report(tmp_path / "res")
    for md in (to_markdown(summarize_run_dir(run)), rep.markdown):
        assert "<img" not in md and "<i>" not in md, md
        assert "## &lt;i>run" in md
        tables = _table_lines(md)
        for lines in tables:
            assert len({len(re.findall(r"(?<!\\)\|", line)) for line in lines}) == 1, lines
        assert "&lt;img src=x onerror=alert(1)>\\|x" in tables[0][0]
    assert evil in set(rep.frame["method"])


def test_error_text_is_printed_as_it_is_not_as_rich_markup(tmp_path: Path):
    """Issue 22: "[r, g, b]" disappeared from a config error (rich read it as a markup tag)."""
    from camexp.check import CheckReport, render

    path = tmp_path / "exp.yaml"
    path.write_text(
        "name: exp\ndataset: {kind: folder, root: .}\nmodel: {name: resnet18, weights: random}\n"
        "perturbation: {deletion_substrate: [2, 0, 0]}\n"
    )
    res = cli.invoke(app, ["run", str(path)])
    assert res.exit_code == 2
    assert "a constant colour is [r, g, b] in [0,1] pixel space" in " ".join(res.output.split())
    console = Console(record=True, width=200)
    render(
        CheckReport("t", "folder", errors=["[bold]x[/bold] stays"], warnings=["[r, g, b] stays"], layer="blocks[0]"),
        console,
    )
    text = console.export_text()
    assert "error: [bold]x[/bold] stays" in text and "warning: [r, g, b] stays" in text and "blocks[0]" in text


def test_the_best_value_is_bold_on_the_terminal_not_markdown_stars(tmp_path: Path):
    """Issue 22: terminal tables printed `**19.55**`. Average drop (y = 0.8): gradcam (50 + 75) / 2 = 62.5,
    gradcam++ (25 + 37.5) / 2 = 31.25, layercam (12.5 + 25) / 2 = 18.75, the best, in the terminal's bold."""
    run = write_run(tmp_path / "bold", [[0.4, 0.6, 0.7], [0.2, 0.5, 0.6]])
    summary = summarize_run_dir(run)
    assert summary.main.loc["Average drop % (lower is better)"].tolist() == pytest.approx([62.5, 31.25, 18.75])
    console = Console(record=True, width=200, force_terminal=True, color_system="standard")
    print_summary(summary, console)
    plain = console.export_text(clear=False)
    assert "**" not in plain and "18.75 [" in plain
    assert "\x1b[1m18.75\x1b[0m" in console.export_text(styles=True)


def _wide_summary(metrics: int) -> tuple[RunSummary, list[str], list[str]]:
    """A summary of 3 methods x `metrics` metrics with interval cells (the best in Markdown bold) and a win
    matrix; its method names and every value as the terminal must show it."""
    from camexp.metrics.base import MetricResult

    methods = ["gradcam", "gradcam++", "scorecam-softmax"]
    labels = [f"Metric number {i} with a long label (higher is better)" for i in range(metrics)]
    values = [
        [f"{10 * i + j + 0.25:.2f} [{10 * i + j:.1f}, {10 * i + j + 0.5:.1f}]" for j in range(3)]
        for i in range(metrics)
    ]
    main = pd.DataFrame(
        [[f"**{row[0].replace(' [', '** [')}", *row[1:]] for row in values], index=labels, columns=methods
    ).rename_axis("metric")
    win = pd.DataFrame(
        [[float("nan"), 61.5, 70.25], [38.5, float("nan"), 55.0], [29.75, 45.0, float("nan")]],
        index=methods,
        columns=methods,
    )
    shown = [v for row in values for v in row] + ["61.500", "70.250", "38.500", "55.000", "29.750", "45.000"]
    return RunSummary("wide", None, main, MetricResult(tables={"Win matrix (% of images)": win}), 2), methods, shown


@pytest.mark.parametrize("metrics", [3, 12])
def test_every_method_name_and_value_is_visible_at_60_columns(metrics: int):
    """Issue 22: at 60 columns the last column was cut off, and with 12 metrics the transposed table squeezed
    the method column to nothing. Now every name and value string is printed whole within 60 columns."""
    summary, methods, shown = _wide_summary(metrics)
    console = Console(width=60, record=True)
    print_summary(summary, console)
    assert_visible(console.export_text(), 60, methods, shown)


def test_a_run_of_a_broken_or_gone_plugin_is_skipped_with_why_and_the_rest_reported(tmp_path: Path):
    res_dir = tmp_path / "res"
    write_run(res_dir / "good", [[0.4, 0.6, 0.8]])
    write_run(res_dir / "broken", [[0.4, 0.6, 0.8]], metrics=["avg_drop", "plugins.broken_jobs:raising_metric"])
    write_run(res_dir / "gone", [[0.4, 0.6, 0.8]], metrics=["avg_drop", "plugins.no_such_module:metric"])
    expected = [
        f"skipped {res_dir / 'broken'}: metric plug-in 'plugins.broken_jobs:raising_metric' raised in its summary: "
        "ValueError: no rows for me",
        f"skipped {res_dir / 'gone'}: {res_dir / 'gone' / 'run.json'}: metric 'plugins.no_such_module:metric': cannot "
        "import it (ModuleNotFoundError: No module named 'plugins.no_such_module'); is 'plugins.no_such_module' "
        "installed in this environment, or its folder on PYTHONPATH?",
    ]
    for args in ([], ["--leaderboard"]):
        res = cli.invoke(app, ["table", str(res_dir), *args, "--out", str(tmp_path / "rep")])
        assert res.exit_code == 0, res.output
        assert "Traceback" not in res.output
        printed = " ".join(res.output.split())  # the terminal wraps long lines
        assert [w for w in expected if f"warning: {w}" in printed] == expected
        assert printed.count("warning: ") == 2
    assert [s.name for s in report(res_dir).summaries] == ["good"]


def test_any_error_reading_a_folder_skips_it_with_its_type(tmp_path: Path):
    from camexp.report.runs import read_runs

    def read(folder: Path) -> str:
        if folder.name == "bad":
            raise KeyError("images_in_dataset")
        return folder.name

    read, skipped = read_runs([tmp_path / "bad", tmp_path / "good"], read)
    assert read == [(tmp_path / "good", "good")]
    assert skipped == [f"skipped {tmp_path / 'bad'}: KeyError: 'images_in_dataset'"]
