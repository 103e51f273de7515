"""`camexp study serve` through its app (httpx's TestClient, no socket): what is reachable, the participant's
plan, validation of answers, the store, and the tally reading the database (alone and with answer files)."""

from __future__ import annotations

import json
import logging
import sqlite3
from importlib import resources
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from camexp.cli import app
from camexp.study.make import PAGE_FILES
from camexp.study.serve import MAX_BODY, create_app, participant_plan
from camexp.study.store import DB
from tests.study.test_study import answers, cli, make_study_dir, one_line, report_frame, tally

TOKEN = "s3cret-token-0123456789"


def served_study(
    tmp: Path, classes: list[str], repeats: tuple[int, ...] = (), consent: str | None = None, **key_args
) -> Path:
    """A study folder with a working page: make_study_dir's key plus page/ (the packaged index.html, script and
    style, items.js, and a small distinct PNG per picture)."""
    folder = make_study_dir(tmp, classes, repeats, **key_args)
    key = json.loads((folder / "key.json").read_text())
    page = folder / "page"
    (page / "img").mkdir(parents=True)
    for name in PAGE_FILES:
        (page / name).write_bytes(resources.files("camexp.study").joinpath("page", name).read_bytes())
    shown = []
    for it in key["items"]:
        k = it["image"]
        for side, shade in (("o", 40), ("a", 120), ("b", 200)):
            Image.new("RGB", (16, 16), (shade, (37 * k) % 256, 90)).save(page / "img" / f"item_{k:03d}_{side}.png")
        a, b = f"img/item_{k:03d}_a.png", f"img/item_{k:03d}_b.png"
        swapped = it["repeat"]
        shown.append(
            {
                "class_name": classes[k],
                "original": f"img/item_{k:03d}_o.png",
                "left": b if swapped else a,
                "right": a if swapped else b,
            }
        )
    question = "Which shows the {class_name}? Look for the {class_name}."  # every one replaced, as text
    data = {"id": "s1", "title": "t", "question": question, "consent": consent, "items": shown}
    (page / "items.js").write_text(f"window.CAMEXP_STUDY = {json.dumps(data)};\n")
    return folder


def stored(folder: Path) -> list[tuple]:
    db = sqlite3.connect(folder / DB)
    try:
        return db.execute("SELECT participant, item, position, flipped, choice, ms, revisions FROM answers").fetchall()
    finally:
        db.close()


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return served_study(tmp_path, [f"class{k}" for k in range(7)], repeats=(2, 5))


def test_only_the_page_is_served(study: Path) -> None:
    with TestClient(create_app(study)) as c:
        assert c.get("/").status_code == 200 and "study.js" in c.get("/").text
        assert c.get("/items.js").status_code == 200 and c.get("/img/item_000_a.png").status_code == 200
        for path in (
            "/key.json",
            "/study.json",
            "/answers.sqlite",
            "/img",
            "/img/",
            "/../key.json",
            "/%2e%2e/key.json",
            "/img/..%2f..%2fkey.json",
            "/page/index.html",
            "/api/answer",
        ):
            assert c.get(path).status_code in (404, 405), path
        assert "key.json" not in c.get("/").text
    with TestClient(create_app(study, TOKEN)) as c:
        assert c.get("/").status_code == 404 and c.get("/index.html").status_code == 404
        assert c.get(f"/{TOKEN}/").status_code == 200 and c.get(f"/{TOKEN}/items.js").status_code == 200
        assert c.get(f"/{TOKEN}/../key.json").status_code == 404
        assert c.post("/api/answer", json={"participant": "p", "item": 0, "choice": "left", "ms": 1}).status_code == 404
    assert not (study / "key.json").read_text().startswith("<")


def test_the_plan_is_per_participant_seeded_balanced_and_keeps_repeats_swapped(study: Path) -> None:
    key = json.loads((study / "key.json").read_text())
    plans = {p: participant_plan(key, p) for p in ("ann", "bob", "cy", "dee")}
    assert participant_plan(key, "ann") == plans["ann"]
    assert len({tuple(p.order) for p in plans.values()}) == 4  # every participant their own order
    for p in plans.values():
        assert sorted(p.order[:7]) == list(range(7)) and sorted(p.order[7:]) == [7, 8]  # repeats last
        a_left = [(key["items"][i]["left"] == "A") != p.flipped[i] for i in range(7)]
        assert sum(a_left) in (3, 4)  # method A on the left for half of the 7 images
        assert p.flipped[7] == p.flipped[2] and p.flipped[8] == p.flipped[5]  # one coin per image
    with TestClient(create_app(study)) as c:
        got = c.get("/api/plan", params={"participant": "ann"}).json()
        assert got["order"] == plans["ann"].order and got["flipped"] == [plans["ann"].flipped[i] for i in range(9)]
        assert got["answers"] == {}


def post(c: TestClient, body: object, prefix: str = "") -> int:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return c.post(f"{prefix}/api/answer", content=data, headers={"Content-Type": "application/json"}).status_code


def test_answers_are_stored_once_and_bad_requests_touch_nothing(study: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = json.loads((study / "key.json").read_text())
    plan = participant_plan(key, "ann")
    with TestClient(create_app(study)) as c:
        ok = {"participant": "ann", "item": 3, "choice": "left", "ms": 1234.5}
        assert post(c, ok) == 200 and post(c, ok) == 200  # sent twice (a retry): stored once
        assert stored(study) == [("ann", 3, plan.order.index(3), int(plan.flipped[3]), "left", 1234.5, 0)]
        before = stored(study)
        bad = {
            "participant id": {**ok, "participant": "a b"},
            "participant too long": {**ok, "participant": "x" * 41},
            "item true": {**ok, "item": True},
            "item as text": {**ok, "item": "3"},
            "item past the end": {**ok, "item": 9},
            "choice": {**ok, "choice": "up"},
            "negative ms": {**ok, "ms": -1},
            "extra key": {**ok, "rater": "x"},
            "NaN ms": '{"participant": "ann", "item": 3, "choice": "right", "ms": NaN}',
            "not JSON": "{oops",
            "too big": json.dumps({**ok, "participant": "a" * (MAX_BODY + 10)}),
        }
        for what, body in bad.items():
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="camexp.study.serve"):
                status = post(c, body)
            assert status in (413, 422), what
            assert len(caplog.records) == 1 and f"POST /api/answer: {status}" in caplog.records[0].getMessage(), what
        assert c.get("/api/plan", params={"participant": "../x"}).status_code == 422
        assert stored(study) == before
        # a new answer to the item (the participant went Back) replaces it and counts a revision
        assert post(c, {**ok, "choice": "same", "ms": 900}) == 200
        assert stored(study)[0][4:] == ("same", 900.0, 1)
        assert c.get("/api/plan", params={"participant": "ann"}).json()["answers"] == {"3": ["same", 900.0]}


def test_tally_reads_the_database_unblinding_each_participants_sides(study: Path, tmp_path: Path) -> None:
    """ann picks method A on every item, bob method B, each on their own sides: un-blinded with the stored
    flips, every image has one vote for A and one for B (3.5 each of 7), and both agree on their repeats."""
    key = json.loads((study / "key.json").read_text())
    with TestClient(create_app(study)) as c:
        for who, method in (("ann", "A"), ("bob", "B")):
            plan = participant_plan(key, who)
            for item in plan.order:
                it = key["items"][item]
                left = it["right"] if plan.flipped[item] else it["left"]
                assert (
                    post(
                        c,
                        {"participant": who, "item": item, "choice": "left" if left == method else "right", "ms": 800},
                    )
                    == 200
                )
    assert len(stored(study)) == 18
    assert tally(study, []).exit_code == 0
    score = report_frame(study).query("quantity == 'score'").set_index("subject")["value"]
    assert score.to_dict() == pytest.approx({"A: gradcam": 3.5, "B: gradcam++": 3.5, "same": 0.0})
    intra = report_frame(study).query("quantity == 'intra_rater_agreement'")
    assert intra["value"].item() == 1.0 and intra["n"].item() == 4  # the swapped repeats agree
    # a downloaded file of ann in the key's layout merges with the database; one that disagrees is refused
    agree = answers(tmp_path, "ann", ["left"] * 7 + ["right"] * 2)
    data = json.loads(agree.read_text())
    data["answers"] = [{**a, "ms": 800} for a in data["answers"]]
    agree.write_text(json.dumps(data))
    assert tally(study, [agree]).exit_code == 0
    assert report_frame(study).query("quantity == 'score'")["value"].tolist() == pytest.approx([3.5, 3.5, 0])
    cy = answers(tmp_path, "cy", ["same"] * 9)
    assert tally(study, [cy]).exit_code == 0
    score = report_frame(study).query("quantity == 'score'").set_index("subject")["value"]
    assert score.to_dict() == pytest.approx({"A: gradcam": 7 / 3, "B: gradcam++": 7 / 3, "same": 7 / 3})
    said = one_line(tally(study, [answers(tmp_path, "bob", ["same"] + [None] * 8)]))
    assert "rater bob: " in said and str(study / DB) in said and "give different answers to item 0" in said


def test_the_database_of_another_study_is_refused(study: Path) -> None:
    with TestClient(create_app(study)):
        pass
    key = json.loads((study / "key.json").read_text())
    (study / "key.json").write_text(json.dumps({**key, "study_id": "s2"}))
    said = one_line(cli.invoke(app, ["study", "tally", str(study)]))
    assert f"{study / DB}: answers to another study than 's2'" in said


def test_serve_refuses_a_public_host_without_a_token(study: Path) -> None:
    said = one_line(cli.invoke(app, ["study", "serve", str(study), "--host", "0.0.0.0"]))
    assert "--host 0.0.0.0 is reachable from other machines: give a secret with --token" in said
    said = one_line(cli.invoke(app, ["study", "serve", str(study), "--host", "0.0.0.0", "--token", "short"]))
    assert "--token: at least 16 letters" in said
    said = one_line(cli.invoke(app, ["study", "serve", str(study.parent)]))
    assert "not a study folder" in said
