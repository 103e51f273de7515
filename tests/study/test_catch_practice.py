"""Practice and catch items (issue 31 §1): numbered after the scored items, shown practice first and catch
items among the first showings; practice never scored; each rater's catch accuracy reported, and raters
below --min-catch left out (and named)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from camexp.study.make import Plan
from camexp.study.serve import participant_plan
from tests.study.test_study import answers, make, make_study_dir, report_frame, tally, tiny_study_config


def with_extras(folder: Path, practice: int, catch: list[tuple[int, str]]) -> dict:
    """Add practice items and catch items (image, side of the real map) to make_study_dir's key."""
    key = json.loads((folder / "key.json").read_text())
    items = key["items"]
    for j in range(practice):
        items.append(
            {
                "item": len(items),
                "kind": "practice",
                "image": None,
                "practice_image": j,
                "left": "A",
                "right": "B",
                "repeat": False,
            }
        )
    for k, map_side in catch:
        other = "foil" if map_side == "left" else "map"
        items.append(
            {
                "item": len(items),
                "kind": "catch",
                "image": k,
                "left": "map" if map_side == "left" else "foil",
                "right": other,
                "repeat": False,
                "map_of": "A",
            }
        )
    (folder / "key.json").write_text(json.dumps(key))
    return key


def test_plan_numbers_and_places_practice_and_catch_items() -> None:
    plan = Plan.draw(6, 2, seed=1, practice=2, catch=2)
    assert len(plan.a_is_A) == 8 and sum(plan.a_is_A[6:]) == 1  # practice images get sides too
    assert len(set(plan.catch)) == 2 and set(plan.catch) <= set(range(6))
    # items: 0-5 first showings, 6-7 repeats, 8-9 practice, 10-11 catch; shown: practice, first showings with
    # a catch item after the 2nd and the 4th, repeats
    assert plan.presentation() == [8, 9, 0, 1, 10, 2, 3, 11, 4, 5, 6, 7]
    assert Plan.draw(6, 2, seed=1).presentation() == list(range(8))
    assert Plan.draw(6, 2, seed=1).order == plan.order  # extras draw after the scored layout: it is unchanged


def test_practice_is_never_scored_and_catch_accuracy_excludes_careless_raters(tmp_path: Path) -> None:
    """3 images (A left); item 3 practice; items 4, 5 catch (real map left, then right). good picks A and the
    map; careless picks B, and the foil both times; practice answers differ and must not matter."""
    folder = make_study_dir(tmp_path, ["x", "y", "z"])
    with_extras(folder, 1, [(0, "left"), (2, "right")])
    good = answers(tmp_path, "good", ["left", "left", "left", "right", "left", "right"])
    careless = answers(tmp_path, "careless", ["right", "right", "right", "left", "right", "left"])
    result = tally(folder, [good, careless])
    assert result.exit_code == 0, result.output
    rep = report_frame(folder)
    score = rep.query("quantity == 'score'").set_index("subject")["value"]
    assert score.to_dict() == pytest.approx({"A: gradcam": 1.5, "B: gradcam++": 1.5, "same": 0.0})
    acc = rep.query("quantity == 'catch_accuracy'").set_index("subject")
    assert acc["value"].to_dict() == {"careless": 0.0, "good": 1.0} and set(acc["n"]) == {2}
    assert rep.query("quantity == 'excluded_rater'").empty
    result = tally(folder, [good, careless], "--min-catch", "0.5")
    assert result.exit_code == 0, result.output
    rep = report_frame(folder)
    score = rep.query("quantity == 'score'").set_index("subject")["value"]
    assert score.to_dict() == pytest.approx({"A: gradcam": 3.0, "B: gradcam++": 0.0, "same": 0.0})
    assert rep.query("quantity == 'excluded_rater'")["subject"].tolist() == ["careless"]
    md = (folder / "study_report.md").read_text()
    assert "rater careless excluded: 0 of 2 catch items right, below --min-catch 0.5" in md
    assert "Raters with catch accuracy below 0.5 excluded: 1." in md
    assert tally(folder, [careless], "--min-catch", "0.5").exit_code == 2


def test_a_served_participant_gets_practice_first_and_catch_items_among_the_first_showings(tmp_path: Path) -> None:
    folder = make_study_dir(tmp_path, [f"c{k}" for k in range(8)], repeats=(1,))
    key = with_extras(folder, 2, [(k, "left") for k in range(4)])
    lefts = []
    for who in ("ann", "bob", "cy"):
        plan = participant_plan(key, who)
        assert plan.order[:2] == [9, 10] and plan.order[-1] == 8  # practice first, the repeat last
        assert sorted(plan.order[2:-1]) == [*range(8), *range(11, 15)]
        assert not plan.flipped[9] and not plan.flipped[10]
        lefts.append(sum(not plan.flipped[i] for i in range(11, 15)))  # the map stays left unless flipped
    assert lefts == [2, 2, 2]  # the real map on the left for half of the catch items
    assert len({tuple(participant_plan(key, w).order) for w in ("ann", "bob", "cy")}) == 3


def test_make_writes_practice_and_catch_stimuli(tmp_path: Path, photo_dir: Path) -> None:
    """`random: 3` of the 4 photographs, 1 practice image (the fourth), 2 catch items with a random foil."""
    out = tmp_path / "out"
    config = tiny_study_config(tmp_path, photo_dir, out)
    config.write_text(config.read_text().replace("repeats: 1}", "repeats: 1, practice: 1, catch: 2}"))
    result = make(config)
    assert result.exit_code == 0, result.output
    key = json.loads((out / "key.json").read_text())
    assert [it["kind"] for it in key["items"]] == ["trial"] * 4 + ["practice"] + ["catch"] * 2
    assert len(key["images"]) == 3 and len(key["practice_images"]) == 1
    assert key["practice_images"][0]["image_id"] not in {im["image_id"] for im in key["images"]}
    page = json.loads((out / "page" / "items.js").read_text().split("= ", 1)[1].rstrip(";\n"))
    assert page["order"][0] == 4 and page["items"][4]["practice"] and "practice" not in page["items"][5]
    for it in key["items"][5:]:
        shown = page["items"][it["item"]]
        files = {it["left"]: shown["left"], it["right"]: shown["right"]}
        assert files["foil"].endswith("_c.png") and (out / "page" / files["foil"]).is_file()
        m = files["map"][-5]
        assert it["map_of"] == (
            key["images"][it["image"]]["a"] if m == "a" else {"A": "B", "B": "A"}[key["images"][it["image"]]["a"]]
        )
    text = (out / "page" / "items.js").read_text().lower()  # what the page knows of an item names no kind
    assert not [w for w in ("catch", "foil", "kind", "map_of", "trial") if w in text]
