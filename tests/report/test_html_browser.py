"""`camexp report html` in a real browser (Playwright driving Debian's Chromium, from file://): open the overview,
sort the leaderboard, filter and sort the gallery by a difference of two methods, open an image page, go back;
no console error anywhere; screenshots at desktop and phone width, which the docs show
(CAMEXP_DOCS_SCREENSHOTS=1 writes them into docs/ as well).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from camexp.report.html.site import build_site, slug
from camexp.runner import run_experiment
from tests.report.test_html import NAMES, config
from tests.report.test_table_report import write_run

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
DESKTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, photo_dir: Path) -> tuple[Path, Path]:
    """The site of a results folder with a run with maps (four photographs) and one without."""
    results = tmp_path_factory.mktemp("browser") / "results"
    run_experiment(config(photo_dir, results / "maps-run"), progress=False)
    write_run(results / "no-maps", [[0.5, 0.6, 0.7], [0.2, 0.3, 0.1]])
    build_site(results, results / "html")
    return results, results / "html"


@pytest.fixture
def page(site: tuple[Path, Path]) -> Any:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing (Debian: apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        pg = browser.new_page(viewport=DESKTOP)
        errors: list[str] = []
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.errors = errors
        yield pg
        browser.close()


def shot(pg: Any, tmp: Path, name: str) -> None:
    """A full-page screenshot; the page must not need sideways scrolling at this width."""
    overflow = pg.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{name}: the page is {overflow} px wider than the screen"
    path = tmp / f"report_html_{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    if os.environ.get("CAMEXP_DOCS_SCREENSHOTS"):
        shutil.copyfile(path, DOCS / path.name)


def column(pg: Any, selector: str, col: int) -> list[str]:
    return pg.eval_on_selector_all(f"{selector} tbody tr", f"rows => rows.map(r => r.cells[{col}].dataset.v)")


def test_overview_leaderboard_gallery_image_and_back(page: Any, site: tuple[Path, Path], tmp_path: Path) -> None:
    results, out = site
    pg = page
    pg.goto((out / "index.html").as_uri())
    pg.select_option("#metric", "avg_drop")
    board = 'section.board[data-metric="avg_drop"] table'
    assert pg.is_visible(board) and not pg.is_visible('section.board[data-metric="increase"] table')
    run_col = pg.eval_on_selector_all(f"{board} thead th", "hs => hs.findIndex(h => h.textContent.startsWith('test_'))")
    header = pg.locator(f"{board} thead th").nth(run_col)
    header.click()
    values = [float(v) for v in column(pg, board, run_col) if v]
    assert values == sorted(values) and len(values) == len(NAMES)
    header.click()
    values = [float(v) for v in column(pg, board, run_col) if v]
    assert values == sorted(values, reverse=True)
    shot(pg, tmp_path, "overview_desktop")

    pg.click("table.runs a:text('gallery')")
    pg.wait_for_selector("#grid .card")
    name = slug(results, results / "maps-run")
    data = json.loads(
        (out / "runs" / name / "gallery-data.js").read_text().removeprefix("window.CAMEXP_GALLERY = ").rstrip()[:-1]
    )
    # sort by "avg drop of <b>g++</b> minus gradcam", largest first, then keep those above the median
    drops = data["values"]["avg_drop"]["values"]
    diff = {data["ids"][i]: v[1] - v[0] for i, v in enumerate(drops)}
    pg.select_option("select[name=key]", "avg_drop")
    pg.select_option("select[name=a]", "1")
    pg.select_option("select[name=b]", "0")
    expected = sorted(diff, key=lambda k: -diff[k])
    assert pg.eval_on_selector_all("#grid .card .id", "e => e.map(x => x.textContent)") == expected
    median = sorted(diff.values())[len(diff) // 2]
    pg.fill("input[name=min]", repr(median))
    kept = [k for k in expected if diff[k] >= median]
    assert pg.eval_on_selector_all("#grid .card .id", "e => e.map(x => x.textContent)") == kept
    assert pg.text_content("#count").startswith(f"{len(kept)} of 4 images")
    pg.select_option("select[name=correct]", "no")  # no labels in a folder data set: nothing is wrong
    assert pg.locator("#grid .card").count() == 0
    pg.select_option("select[name=correct]", "")
    shot(pg, tmp_path, "gallery_desktop")

    pg.locator("#grid .card").first.click()
    pg.wait_for_selector("#image h1")
    assert pg.text_content("#image h1") == kept[0]
    captions = pg.eval_on_selector_all("#image figcaption", "e => e.map(x => x.textContent)")
    assert captions == ["image", *NAMES]  # the HTML in a method's name shown as text
    pg.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert pg.locator("#image table.values tbody tr").count() == len(data["values"])
    pg.set_viewport_size(PHONE)
    shot(pg, tmp_path, "image_phone")
    pg.set_viewport_size(DESKTOP)

    pg.click("#back")
    pg.wait_for_selector("#grid .card")
    assert pg.url.split("#")[0].endswith("gallery.html")
    assert pg.input_value("input[name=min]") == repr(median)  # the filter the user left
    assert pg.eval_on_selector_all("#grid .card .id", "e => e.map(x => x.textContent)") == kept
    pg.set_viewport_size(PHONE)
    shot(pg, tmp_path, "gallery_phone")

    pg.goto((out / "runs" / slug(results, results / "no-maps") / "gallery.html").as_uri())
    assert "output: {maps: true}" in pg.text_content("#no-maps")
    assert pg.errors == []
