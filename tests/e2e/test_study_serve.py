"""`camexp study serve` as a real uvicorn process on loopback: 30 raters answering 250 items at once, a
`kill -9` in the middle, and participants on the served page in a real Chromium (Playwright).

The raters keep their own logs of what the server acknowledged; the database and the tally must agree with
those logs, computed here a second way (each answer un-blinded with the rater's plan and key.json)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from camexp.cli import app
from camexp.study.serve import participant_plan
from camexp.study.store import DB
from tests.study.test_serve import served_study

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
cli = CliRunner()


class Server:
    """`python -m camexp study serve FOLDER` on a free loopback port, started and waited for."""

    def __init__(self, folder: Path):
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "camexp", "study", "serve", str(folder), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + 120
        while time.monotonic() < end:  # a guard against a server that never starts, not a speed bound
            try:
                if httpx.get(self.url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("the study server did not start")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


@pytest.fixture
def big_study(tmp_path: Path) -> Path:
    """245 images + 5 repeats = 250 items."""
    return served_study(tmp_path, [f"class{k % 5}" for k in range(245)], repeats=(0, 50, 100, 150, 200))


def rater(url: str, key: dict, who: str, log: list[dict], stop: threading.Event | None = None) -> None:
    """One simulated participant: fetches its plan, answers every item in its order (seeded choices,
    every 7th answer sent twice as a retry would), logging each answer the server acknowledged."""
    rng = random.Random(who)
    with httpx.Client(base_url=url, timeout=60) as c:
        order = c.get("api/plan", params={"participant": who}).json()["order"]
        for item in order:
            if stop is not None and stop.is_set():
                return
            body = {
                "participant": who,
                "item": item,
                "choice": rng.choice(["left", "same", "right"]),
                "ms": rng.randint(400, 5000),
            }
            for _ in range(2 if item % 7 == 0 else 1):
                try:
                    r = c.post("api/answer", json=body)
                except httpx.TransportError:
                    return  # the server is gone
                if r.status_code == 200:
                    log.append(body)


def rows(folder: Path) -> list[tuple]:
    db = sqlite3.connect(folder / DB)
    try:
        return db.execute("SELECT participant, item, flipped, choice, ms FROM answers").fetchall()
    finally:
        db.close()


def wait_rows(folder: Path, n: int) -> None:
    """Until the page's last answers (sent as they are given) are in the database."""
    end = time.monotonic() + 60
    while len(rows(folder)) < n and time.monotonic() < end:
        time.sleep(0.1)


def expected_scores(key: dict, logs: dict[str, list[dict]]) -> dict[str, float]:
    """The paper's score from the raters' logs, un-blinded here with their plans: per image (first showings
    only) the votes for A, B and same over its votes, summed over images."""
    votes: dict[int, list[str]] = {}
    for who, log in logs.items():
        plan = participant_plan(key, who)
        for a in log:
            it = key["items"][a["item"]]
            if it["repeat"]:
                continue
            left, right = (it["right"], it["left"]) if plan.flipped[a["item"]] else (it["left"], it["right"])
            votes.setdefault(it["image"], []).append({"left": left, "right": right, "same": "same"}[a["choice"]])
    totals = {"A": 0.0, "B": 0.0, "same": 0.0}
    for v in votes.values():
        for c in totals:
            totals[c] += v.count(c) / len(v)
    return {"A: gradcam": totals["A"], "B: gradcam++": totals["B"], "same": totals["same"]}


def tally_scores(folder: Path) -> dict[str, float]:
    result = cli.invoke(app, ["study", "tally", str(folder), "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    rep = pd.read_csv(folder / "study_report.csv")
    return rep[rep.quantity == "score"].set_index("subject")["value"].to_dict()


def run_raters(url: str, key: dict, n: int, stop: threading.Event | None = None) -> dict[str, list[dict]]:
    logs: dict[str, list[dict]] = {f"rater{r:02d}": [] for r in range(n)}
    threads = [threading.Thread(target=rater, args=(url, key, who, log, stop)) for who, log in logs.items()]
    for t in threads:
        t.start()
    return logs, threads  # type: ignore[return-value]


def test_30_raters_answering_250_items_at_once(big_study: Path) -> None:
    key = json.loads((big_study / "key.json").read_text())
    server = Server(big_study)
    try:
        logs, threads = run_raters(server.url, key, 30)
        for t in threads:
            t.join()
    finally:
        server.stop()
    assert all(len({a["item"] for a in log}) == 250 for log in logs.values())
    got = rows(big_study)
    assert len(got) == 30 * 250  # every answer once, the retries included
    mine = {(who, a["item"], a["choice"], float(a["ms"])) for who, log in logs.items() for a in log}
    assert {(p, i, c, ms) for p, i, _, c, ms in got} == mine
    flips = {(p, i): f for p, i, f, _, _ in got}
    assert all(flips[who, i] == participant_plan(key, who).flipped[i] for who in logs for i in range(250))
    assert tally_scores(big_study) == pytest.approx(expected_scores(key, logs), abs=1e-9)


def test_kill_9_mid_study_loses_no_acknowledged_answer(big_study: Path) -> None:
    key = json.loads((big_study / "key.json").read_text())
    server = Server(big_study)
    stop = threading.Event()
    try:
        logs, threads = run_raters(server.url, key, 8, stop)
        while sum(map(len, logs.values())) < 300:  # well into the study
            time.sleep(0.05)
        server.kill9()
        stop.set()
        for t in threads:
            t.join()
    finally:
        server.stop()
    acknowledged = {(who, a["item"], a["choice"], float(a["ms"])) for who, log in logs.items() for a in log}
    assert 250 <= len({k[:2] for k in acknowledged}) < 8 * 250  # answers were being given when it died
    server = Server(big_study)  # restarted on the same database
    try:
        stored = {(p, i, c, ms) for p, i, _, c, ms in rows(big_study)}
        assert acknowledged <= stored
        # the participants go on where they were: the plan lists what the server holds
        for who, log in logs.items():
            held = httpx.get(server.url + "api/plan", params={"participant": who}).json()["answers"]
            assert {a["item"] for a in log} <= {int(k) for k in held}
    finally:
        server.stop()
    assert sum(tally_scores(big_study).values()) == pytest.approx(
        len({key["items"][i]["image"] for _, i, _, _ in stored if not key["items"][i]["repeat"]})
    )


@pytest.fixture
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing (Debian: apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


def test_two_participants_on_the_served_page_and_a_reload_loses_nothing(browser, tmp_path: Path) -> None:
    """Two participants in their own browser contexts answer a 7-image study (2 repeats) by click and key;
    ann reloads mid-way and resumes when asked. The database holds exactly what each gave, in each one's
    own order and sides, and the tally un-blinds it: ann always picks the map made from image's `_a` file."""
    folder = served_study(tmp_path, [f"c{k}$&" for k in range(7)], repeats=(1, 4))
    key = json.loads((folder / "key.json").read_text())
    server = Server(folder)
    try:
        pages = {who: browser.new_context().new_page() for who in ("ann", "bob")}  # type: ignore[attr-defined]
        for who, page in pages.items():
            page.goto(server.url)
            page.fill("#rater", who)
            page.click("#start-button")
            page.wait_for_selector("#trial:not([hidden])")
            assert page.text_content("#who") == f"Participant: {who}"
            assert page.is_disabled("#back")  # nothing to go back to on the first item, and it looks it
            assert page.eval_on_selector("#back", "e => getComputedStyle(e).opacity") == "0.35"
        plans = {who: participant_plan(key, who) for who in pages}
        for n in range(9):
            for who, page in pages.items():
                if who == "ann" and n == 4:
                    page.reload()
                    page.wait_for_selector("#resume:not([hidden])")
                    assert "Continue as participant ann? (4 of 9 answered)" in page.text_content("#resume-text")
                    page.click("#resume-yes")
                    page.wait_for_selector("#trial:not([hidden])")
                assert f"Item {n + 1} of 9" in page.text_content("#count")
                item = plans[who].order[n]
                cls = key["images"][key["items"][item]["image"]]["class_name"]
                assert page.text_content("#question") == f"Which shows the {cls}? Look for the {cls}."
                page.wait_for_selector("#choose-left:not([disabled])")
                if who == "ann":  # by click: the side showing the item's `_a` picture
                    src = page.get_attribute("#img-left", "src")
                    page.click("#choose-left" if src.endswith("_a.png") else "#choose-right")
                else:
                    page.keyboard.press("s")
        for page in pages.values():
            page.wait_for_selector("#done:not([hidden])")
        wait_rows(folder, 18)
        with pages["ann"].expect_download() as download:  # her file, in the key's layout: it merges with the db
            pages["ann"].click("#download")
        download.value.save_as(tmp_path / "answers_ann.json")
    finally:
        server.stop()
    got = {(p, i): c for p, i, _, c, _ in rows(folder)}
    assert len(got) == 18 and {c for (p, _), c in got.items() if p == "bob"} == {"same"}
    # `_a` is method A's on first showings (key: A left) and B's on the swapped repeats
    ann = {i: c for (p, i), c in got.items() if p == "ann"}
    for i, c in ann.items():
        left_file_a = (not plans["ann"].flipped[i]) != key["items"][i]["repeat"]
        assert c == ("left" if left_file_a else "right")
    score = tally_scores(folder)
    assert score == pytest.approx({"A: gradcam": 3.5, "B: gradcam++": 0.0, "same": 3.5})
    result = cli.invoke(app, ["study", "tally", str(folder), str(tmp_path / "answers_ann.json"), "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    assert f"rater ann: answers of {tmp_path / 'answers_ann.json'} + {folder / DB} merged" in " ".join(
        (folder / "study_report.md").read_text().split()
    )


def test_the_page_takes_no_input_until_the_images_have_loaded(browser, tmp_path: Path) -> None:
    """Issue 31 §2: a double click recorded two answers and a held key three, and the clock started before the
    images had loaded. The second item's pictures are held back by the test: a double click and a held key on
    the first item give one answer each, keys pressed while the next pictures load are ignored, and the time
    recorded for an item is at most the time since its pictures were let through."""
    folder = served_study(tmp_path, [f"c{k}" for k in range(5)], consent="I agree to take part in study 7.")
    key = json.loads((folder / "key.json").read_text())
    order = participant_plan(key, "p1").order
    server = Server(folder)
    try:
        page = browser.new_context().new_page()  # type: ignore[attr-defined]
        held: list = []
        page.route(f"**/img/item_{order[1]:03d}_*", lambda route: held.append(route))
        page.goto(server.url)
        assert page.text_content("#consent") == "I agree to take part in study 7."
        page.fill("#rater", "p1")
        page.click("#start-button")  # consent not given: no start
        assert "Please tick" in page.text_content("#start-error") and not page.is_visible("#trial")
        page.check("#agree")
        page.click("#start-button")
        page.wait_for_selector("#choose-left:not([disabled])")
        page.dblclick("#choose-left")
        page.keyboard.press("ArrowRight")  # while the second item's pictures are still held back
        page.keyboard.press("s")
        page.wait_for_timeout(300)
        assert "1 answered" in page.text_content("#count") and page.is_disabled("#choose-left")
        released = time.monotonic()
        for route in held:
            route.continue_()
        page.wait_for_selector("#choose-left:not([disabled])")
        page.click("#choose-right")
        elapsed_ms = 1000 * (time.monotonic() - released)
        page.wait_for_selector("#choose-left:not([disabled])")
        page.keyboard.down("ArrowLeft")  # held: the browser repeats the key
        page.keyboard.down("ArrowLeft")
        page.keyboard.down("ArrowLeft")
        page.keyboard.up("ArrowLeft")
        page.wait_for_function("document.getElementById('count').textContent.includes('3 answered')")
        page.wait_for_timeout(300)
        assert "3 answered" in page.text_content("#count")
        wait_rows(folder, 3)
    finally:
        server.stop()
    got = {i: (c, ms) for _, i, _, c, ms in rows(folder)}
    assert {i: c for i, (c, _) in got.items()} == {order[0]: "left", order[1]: "right", order[2]: "left"}
    assert got[order[1]][1] <= elapsed_ms
