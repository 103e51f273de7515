"""`camexp report html`: the site's numbers are the run's CSVs, bad folders are shown as they are (no runs, no
maps, partial, foreign, HTML in names), and the gallery's image files are made once and reused.

The run with maps is real (a small random-weights convnet on scikit-image photographs, as tests/core/test_maps.py);
the others are written by hand as tests/report/test_table_report.py does.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from camexp.cli import app
from camexp.config import ExperimentConfig
from camexp.report.html.site import build_site, slug
from camexp.runner import run_experiment
from tests.report.test_table_report import write_run

cli = CliRunner()
HTML_NAME = "<img src=x onerror=alert(1)>"
METHODS: list[Any] = ["gradcam", {"name": "<b>g++</b>", "method": "gradcam++"}, "random"]
NAMES = ["gradcam", "<b>g++</b>", "random"]
FIGURE = Path(__file__).resolve().parents[2] / "docs" / "reliability_tau.png"  # any PNG, standing for a run's figure


def config(photo_dir: Path, out: Path, limit: int | None = None) -> ExperimentConfig:
    dataset: dict[str, Any] = {"kind": "folder", "root": str(photo_dir), "limit": limit}
    return ExperimentConfig.model_validate(
        {
            "name": HTML_NAME,
            "dataset": dataset,
            "model": {"name": "test_convnext", "weights": "random"},
            "methods": METHODS,
            "metrics": ["avg_drop", "increase", "win"],
            "runtime": {"device": "cpu", "batch_size": 3},
            "output": {"dir": str(out), "maps": True},
        }
    )


@pytest.fixture(scope="module")
def two_images(tmp_path_factory: pytest.TempPathFactory, photo_dir: Path) -> Path:
    """A finished run with maps over the first two photographs (the extension test adds the other two)."""
    out = tmp_path_factory.mktemp("kept") / "maps-run"
    run_experiment(config(photo_dir, out, limit=2), progress=False)
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, two_images: Path) -> Path:
    """A results folder: the run with maps, one without, a partial one and a foreign run.json."""
    root = tmp_path_factory.mktemp("results")
    shutil.copytree(two_images, root / "maps-run")
    shutil.copyfile(FIGURE, root / "maps-run" / "perturbation_curves.png")  # as `perturbation.curves: true` draws
    write_run(root / "no-maps", [[0.5, 0.6, 0.7], [0.2, 0.3, 0.1]])
    shutil.copytree(two_images, root / "bad-shard")
    for shard in (root / "bad-shard" / "maps").glob("*.safetensors"):
        shard.write_bytes(b"not a shard")
    write_run(root / "partial", [[0.5, 0.6, 0.7]], status="running", selected=5)
    (root / "foreign").mkdir()
    (root / "foreign" / "run.json").write_text(json.dumps({"something": "else"}))
    (root / "consistency.md").write_text("# camexp consistency\n\n| a | b |\n|---|---|\n| <script>x</script> | 0.5 |\n")
    shutil.copyfile(FIGURE, root / "consistency.png")
    (root / "study").mkdir()
    (root / "study" / "study.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def site(results: Path) -> Path:
    out = results / "html"
    assert any("bad-shard: no gallery: " in w for w in build_site(results, out).warnings)
    return out


class Tables(HTMLParser):
    """Every table of a page: rows of (text, attributes) per cell; and all text outside tags."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, dict[str, str | None]]]]] = []
        self.cell: list[Any] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ["", dict(attrs)]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append((self.cell[0].strip(), self.cell[1]))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell[0] += data


def expected_cell(value: float, lo: float, hi: float) -> str:
    """A cell as the paper-style tables print it, written here: the value to 2 decimals, the interval to 1,
    rounded outward."""
    return f"{value:.2f} [{math.floor(lo * 10 + 1e-9) / 10:.1f}, {math.ceil(hi * 10 - 1e-9) / 10:.1f}]"


def run_folder(site: Path, results: Path, name: str) -> Path:
    return site / "runs" / slug(results, results / name)


def test_run_page_and_leaderboard_show_the_numbers_of_the_runs_csvs(results: Path, site: Path) -> None:
    long = pd.read_csv(results / "maps-run" / "summary_long.csv")
    page = Tables((run_folder(site, results, "maps-run") / "index.html").read_text())
    main = page.tables[0]
    methods = [text for text, _ in main[0][1:]]
    assert methods == NAMES  # the parser unescaped them: shown as text
    labels = {"Average drop % (lower is better)": "avg_drop", "% increase in confidence (higher is better)": "increase"}
    seen = 0
    for row in main[1:]:
        key = labels.get(row[0][0])
        for (text, attrs), method in zip(row[1:], methods):
            if key is None:
                continue
            r = long[(long.metric == key) & (long.method == method)].iloc[0]
            assert float(attrs["data-v"] or "nan") == pytest.approx(r.value, rel=1e-9, abs=1e-12)
            assert text.replace("≈", "").strip() == expected_cell(r.value, r.lo, r.hi)
            seen += 1
    assert seen == 6
    # the run's figures beside the page: the curves it drew
    folder = run_folder(site, results, "maps-run")
    assert 'src="figures/perturbation_curves.png"' in (folder / "index.html").read_text()
    assert (folder / "figures" / "perturbation_curves.png").read_bytes() == FIGURE.read_bytes()
    # the overview's board of avg_drop: the same values, and ranks 1..3 in the order of the values
    overview = Tables((site / "index.html").read_text())
    board = next(t for t in overview.tables[1:] if "mean rank" in [c for c, _ in t[0]])
    header = [c for c, _ in board[0]]
    col = next(i for i, h in enumerate(header) if h.startswith("test_convnext"))
    values = long[long.metric == "avg_drop"].set_index("method").value
    # mean rank over the complete runs: this one, and no-maps, whose avg_drop (y = 0.8) is by hand gradcam 56.25,
    # gradcam++ 43.75, layercam 50 (the partial run is not ranked)
    ranks = values.rank().to_dict()
    by_hand = {"gradcam++": 1.0, "layercam": 2.0, "gradcam": 3.0}
    mean_rank = {m: (ranks.get(m, math.nan) + r) / 2 if m in ranks else r for m, r in by_hand.items()}
    mean_rank |= {m: r for m, r in ranks.items() if m not in by_hand}
    shown = set()
    for row in board[1:]:
        method = row[0][0]
        shown.add(method)
        assert float(row[1][1]["data-v"] or "nan") == pytest.approx(mean_rank[method])
        if method in values:
            assert float(row[col][1]["data-v"] or "nan") == pytest.approx(values[method], rel=1e-9)
        else:
            assert row[col][1]["data-v"] == "" and row[col][0] == "—"
    assert shown == set(mean_rank)


def test_the_site_loads_nothing_from_outside_itself(site: Path) -> None:
    """Self-contained: every src and href is relative and points at a file of the site (or a place on a page)."""
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert "@import" not in text and "url(" not in text
        for link in re.findall(r'(?:src|href)="([^"]*)"', text):
            assert "://" not in link and not link.startswith("//"), (page, link)
            target = link.split("#")[0]
            assert not target or (page.parent / target).resolve().is_file(), (page, link)
    assert "url(" not in (site / "assets" / "site.css").read_text()
    assert not re.search(r"https?:|fetch\(|XMLHttpRequest|import\(", (site / "assets" / "site.js").read_text())


def test_gallery_data_equals_the_records(results: Path, site: Path) -> None:
    text = (run_folder(site, results, "maps-run") / "gallery-data.js").read_text()
    data = json.loads(text.removeprefix("window.CAMEXP_GALLERY = ").rstrip().removesuffix(";"))
    records = pd.read_csv(results / "maps-run" / "per_image.csv", dtype={"image_id": str})
    assert data["methods"] == NAMES and sorted(data["ids"]) == data["ids"]
    assert len(data["ids"]) == 2
    for i, image_id in enumerate(data["ids"]):
        rows = records[records.image_id == image_id].set_index("method")
        y = float(rows.y.iloc[0])
        assert data["y"][i] == pytest.approx(y, rel=1e-12)
        for j, m in enumerate(NAMES):
            o = float(rows.loc[m, "o"])
            assert data["values"]["o"]["values"][i][j] == pytest.approx(o, rel=1e-12)
            drop = 100 * max(0.0, y - o) / y
            assert data["values"]["avg_drop"]["values"][i][j] == pytest.approx(drop, rel=1e-9, abs=1e-9)
        assert data["correct"][i] is None  # a folder data set has no labels
        assert data["target"][i] == int(rows.target.iloc[0])


def test_bad_folders_are_shown_as_they_are(results: Path, site: Path) -> None:
    overview = (site / "index.html").read_text()
    # a foreign run.json: skipped with the reason, as `camexp report table` does
    assert "skipped" in overview and "not a camexp run.json" in overview
    # a partial run: marked partial, with the sentence `camexp report table` prints
    report = cli.invoke(app, ["report", "table", str(results), "--out", str(results / "tbl")])
    assert report.exit_code == 0, report.output
    sentence = next(line for line in (results / "tbl" / "report.md").read_text().splitlines() if "Incomplete" in line)
    assert "partial" in overview and sentence.strip("*") in overview
    assert sentence.strip("*") in (run_folder(site, results, "partial") / "index.html").read_text()
    # a run without maps: its gallery says how to get one
    gallery = (run_folder(site, results, "no-maps") / "gallery.html").read_text()
    assert "output: {maps: true}" in gallery and "CAMEXP_GALLERY" not in gallery
    # a maps shard that cannot be read: that gallery says why, the run page and the others are still there
    bad = run_folder(site, results, "bad-shard")
    assert "not a camexp maps shard" in (bad / "gallery.html").read_text() and (bad / "index.html").is_file()
    # names with HTML: escaped everywhere, never a tag
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert "<img src=x" not in text and "<b>g++" not in text, page
    run_page = (run_folder(site, results, "maps-run") / "index.html").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in run_page and "&lt;b&gt;g++&lt;/b&gt;" in run_page


def test_cli_prints_sizes_and_user_mistakes_are_one_line(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    ok = cli.invoke(app, ["report", "html", str(results), "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "kB per image and method" in ok.output and (out / "index.html").is_file()
    (tmp_path / "empty").mkdir()
    empty = cli.invoke(app, ["report", "html", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "no run folders" in empty.output
    assert len(empty.output.strip().splitlines()) == 1 and "Traceback" not in empty.output


def image_files(site: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(site)): (p.stat().st_mtime_ns, p.stat().st_ino) for p in site.rglob("img/*/*.jpg")}


def test_thumbnails_are_made_once_and_reused(tmp_path: Path, two_images: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(two_images, results / "run")
    out = tmp_path / "site"
    ((_, made),) = build_site(results, out).galleries.values()
    files = image_files(out)
    assert made.made == len(files) == 2 * 2 * (len(NAMES) + 1)  # 2 images x (photo + 3 maps) x 2 sizes
    ((_, reused),) = build_site(results, out).galleries.values()
    assert reused.made == 0 and reused.reused == len(files)
    assert image_files(out) == files  # not rewritten: same mtime and inode


@pytest.mark.slow
def test_an_extension_run_adds_only_its_new_images(tmp_path: Path, two_images: Path, photo_dir: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(two_images, results / "run")
    out = tmp_path / "site"
    build_site(results, out)
    files = image_files(out)
    run_experiment(config(photo_dir, results / "run"), progress=False)  # extension: all four photographs
    ((_, extended),) = build_site(results, out).galleries.values()
    after = image_files(out)
    assert {k: after[k] for k in files} == files
    assert extended.made == len(after) - len(files) == 2 * 2 * (len(NAMES) + 1)
    assert extended.reused == len(files)


def test_the_folders_other_reports_are_linked_and_shown(results: Path, site: Path) -> None:
    assert 'href="reports.html"' in (site / "index.html").read_text()
    reports = (site / "reports.html").read_text()
    assert (
        "camexp consistency" in reports and "&lt;script&gt;x&lt;/script&gt;" in reports and "<script>x" not in reports
    )
    assert (site / "reports" / slug(results, results) / "consistency.png").is_file()
    assert "Human-trust study" in reports and "not a run" in reports  # a study not tallied yet says so


def test_maps_of_images_that_moved_are_drawn_on_grey_and_redrawn_once_they_are_back(
    tmp_path: Path, two_images: Path
) -> None:
    results = tmp_path / "results"
    shutil.copytree(two_images, results / "run")
    meta_path = results / "run" / "run.json"
    meta = json.loads(meta_path.read_text())
    moved = json.loads(json.dumps(meta))
    moved["config"]["dataset"]["root"] = moved["dataset"]["root_resolved"] = str(tmp_path / "gone")
    meta_path.write_text(json.dumps(moved))
    out = tmp_path / "site"
    ((_, grey),) = build_site(results, out).galleries.values()
    assert grey.note is not None and "drawn on grey" in grey.note
    page = (out / "runs" / slug(results, results / "run") / "gallery.html").read_text()
    assert "drawn on grey" in page
    meta_path.write_text(json.dumps(meta))  # the images are back: every file is made again, with them
    ((_, back),) = build_site(results, out).galleries.values()
    assert back.note is None and back.made == grey.made and back.reused == 0
