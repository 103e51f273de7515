"""The human-trust study page in a real browser: Debian's headless Chromium driven by Selenium.

A small study of the shared ILSVRC images with real Lite0 weights is answered by three scripted raters who
read the key (rater 1 always picks method A, rater 2 always B, rater 3 "same" on even items and A on odd
ones), by click and by keyboard, with a reload mid-way and one undo; the answer files come from the page's
own download button, and `camexp study tally` must report exactly the totals that pattern implies.
Selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver, so Selenium Manager never downloads.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import binomtest
from typer.testing import CliRunner

from camexp.cli import app

pytestmark = pytest.mark.slow
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SIZES = {"phone": (390, 844, 1.0, True), "laptop": (1366, 768, 1.0, False), "laptop_zoom200": (683, 384, 2.0, False)}
cli = CliRunner()


@pytest.fixture(scope="module")
def study(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`camexp study make` on the first 30 shared ILSVRC images: the top-6 F1 classes, 2 repeats."""
    tmp = tmp_path_factory.mktemp("study")
    config = tmp / "study.yaml"
    config.write_text(f"""
name: browser_study
dataset: {{kind: imagenet_val, root: {shared_data / "ilsvrc2012-val-subset"}, limit: 30}}
model: {{name: tf_efficientnet_lite0, weights: efficientnet-lite0-package}}
runtime: {{batch_size: 10}}
study: {{methods: [gradcam, gradcam++], select: {{top_f1_classes: 6}}, repeats: 2, seed: 3}}
""")
    result = cli.invoke(app, ["study", "make", str(config), "--out", str(tmp / "out"), "--no-progress"])
    assert result.exit_code == 0, result.output
    return tmp / "out"


@pytest.fixture
def driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            f"{CHROMIUM} or {CHROMEDRIVER} missing (Debian: apt-get install chromium chromium-driver; "
            ".ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager must not fetch anything
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1366,768"):
        opts.add_argument(arg)
    opts.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    d = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    d.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    d.downloads = downloads
    yield d
    d.quit()


def _wait(cond, what: str, timeout: float = 30.0):
    """Poll `cond` until it returns something truthy (a test of page state, not of speed)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _visible(d, section: str) -> bool:
    return d.execute_script(f"return !document.getElementById('{section}').hidden")


def _answered(d) -> int:
    return d.execute_script("return document.getElementById('bar').value")


def _wanted(rater: str, n: int) -> str:
    """The scripted pattern, in un-blinded terms: A, B or same."""
    return {"r1": "A", "r2": "B"}.get(rater, "same" if n % 2 == 0 else "A")


def _answer(d, key: dict, rater: str, n: int, wanted: str, by_keyboard: bool) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    item = key["items"][n]
    side = "same" if wanted == "same" else "left" if item["left"] == wanted else "right"
    before = _answered(d)
    _wait(lambda: d.execute_script("return !document.getElementById('choose-left').disabled"), "the item's images")
    if by_keyboard:
        d.find_element(By.TAG_NAME, "body").send_keys(
            {"left": Keys.ARROW_LEFT, "same": "s", "right": Keys.ARROW_RIGHT}[side]
        )
    else:
        d.find_element(By.ID, f"choose-{side}").click()
    _wait(lambda: _answered(d) == before + 1 or _visible(d, "done"), f"{rater}'s answer to item {n}")


def _shot(d, out: Path, name: str) -> Path:
    """A screenshot at one of SIZES (CSS viewport and device pixel ratio; 200 % zoom = half the CSS width at
    ratio 2); asserts the page needs no sideways scrolling there."""
    w, h, ratio, mobile = SIZES[name]
    d.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": w, "height": h, "deviceScaleFactor": ratio, "mobile": mobile}
    )
    overflow = d.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{name}: the page is {overflow} px wider than the screen"
    path = out / f"study_{name}.png"
    d.save_screenshot(str(path))
    return path


def test_page_answered_by_three_raters_tallies_exactly(driver, study: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    key = json.loads((study / "key.json").read_text())
    page = study / "page"
    n_items = len(key["items"])
    assert n_items >= 6 and sum(it["repeat"] for it in key["items"]) == 2

    # Blind: no method name, no image id and nothing of the key in what the browser loads, names included.
    secrets = {*key["methods"].values(), "gradcam", "grad-cam", "key.json", *(im["image_id"] for im in key["images"])}
    for f in page.rglob("*"):
        assert not any(s.lower() in f.name.lower() for s in secrets), f.name
        if f.suffix in (".html", ".js", ".css"):
            text = f.read_text().lower()
            assert not [s for s in secrets if s.lower() in text], f
    assert sorted(p.name for p in (page / "img").iterdir())[:3] == [
        "item_000_a.png",
        "item_000_b.png",
        "item_000_o.png",
    ]

    d = driver
    d.get((page / "index.html").as_uri())
    assert not [s for s in secrets if s.lower() in d.page_source.lower()]
    shots = []
    for r, rater in enumerate(("r1", "r2", "r3")):
        _wait(lambda: _visible(d, "start"), "the start screen")
        d.find_element(By.ID, "rater").send_keys(rater)
        d.find_element(By.ID, "start-button").click()
        _wait(lambda: _visible(d, "trial"), "the first item")
        if r == 0:
            shots += [_shot(d, tmp_path, name) for name in SIZES]
            d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        for n in range(n_items):
            if r == 0 and n == n_items // 2:  # a reload loses nothing: the page resumes at this item
                d.refresh()
                _wait(lambda: _visible(d, "start"), "the page after the reload")
                assert (
                    f"Continue as participant r1? ({n} of {n_items} answered)"
                    in d.find_element(By.ID, "resume-text").text
                )
                d.find_element(By.ID, "resume-yes").click()
                _wait(lambda: _visible(d, "trial"), "the resumed item")
                assert _answered(d) == n and f"Item {n + 1} of {n_items}" in d.find_element(By.ID, "count").text
            if r == 2 and n == 1:  # a wrong answer, taken back with Backspace, then the scripted one
                _answer(d, key, rater, n, "B", by_keyboard=False)
                d.find_element(By.TAG_NAME, "body").send_keys(Keys.BACKSPACE)
                _wait(
                    lambda n=n: _answered(d) == n and f"Item {n + 1} of" in d.find_element(By.ID, "count").text,
                    "the undo",
                )
            _answer(d, key, rater, n, _wanted(rater, n), by_keyboard=r == 1)
        _wait(lambda: _visible(d, "done"), f"{rater}'s end screen")
        d.find_element(By.ID, "download").click()
        target = d.downloads / f"answers_{rater}.json"
        _wait(lambda target=target: target.exists() and not list(d.downloads.glob("*.crdownload")), target.name)
        d.find_element(By.ID, "next-rater").click()
    for shot in shots:
        assert shot.stat().st_size > 10_000

    files = sorted(str(p) for p in d.downloads.glob("answers_*.json"))
    assert len(files) == 3
    assert all(json.loads(Path(f).read_text())["complete"] for f in files)
    result = cli.invoke(app, ["study", "tally", str(study), *files, "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    rep = pd.read_csv(tmp_path / "report" / "study_report.csv")

    # What the pattern implies, image by image (image k is first shown as item k).
    images = len(key["images"])
    odd = sum(k % 2 for k in range(images))
    expected = {
        f"A: {key['methods']['A']}": (images + odd) / 3,
        f"B: {key['methods']['B']}": images / 3,
        "same": (images - odd) / 3,
    }
    score = rep[rep.quantity == "score"].set_index("subject")["value"]
    assert score.to_dict() == pytest.approx(expected, abs=1e-12)
    assert rep.loc[rep.quantity == "sign_test_p", "value"].item() == pytest.approx(binomtest(odd, odd).pvalue)
    repeats = [it for it in key["items"] if it["repeat"]]
    agree_r3 = sum(it["item"] % 2 == it["image"] % 2 for it in repeats)  # rater 3 answers by the item's parity
    intra = rep[rep.quantity == "intra_rater_agreement"]
    assert intra["n"].item() == 3 * len(repeats)
    assert intra["value"].item() == pytest.approx((2 * len(repeats) + agree_r3) / (3 * len(repeats)))
