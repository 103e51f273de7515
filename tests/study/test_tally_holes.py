"""Issue 31 §2: the holes the tally had, each reproduced first (these failed before the fixes).

Expected values are hand-computed from the answers written here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from camexp.study.make import Plan, balanced_sides
from tests.study.test_study import answers, make_study_dir, one_line, report_frame, table_row, table_rows, tally


def scores(folder: Path) -> dict[str, float]:
    return report_frame(folder).query("quantity == 'score'").set_index("subject")["value"].to_dict()


def raw_answers(tmp: Path, name: str, entries: str, items: int = 10, rater: str = "r1") -> Path:
    """An answer file written as text, so that JSON's NaN / Infinity tokens and odd types can be put in."""
    path = tmp / name
    path.write_text(
        f'{{"format": "camexp-study-answers/1", "study_id": "s1", "rater": {json.dumps(rater)}, '
        f'"items": {items}, "answers": [{entries}]}}'
    )
    return path


def test_a_non_integer_item_is_refused_not_broadcast(tmp_path: Path) -> None:
    """`"item": true` was taken by numpy as a mask over every item: B 10.00 of 10 images where the right
    tally of the other answers is A 1, B 8 of 9. Now the file is refused in one line naming the field."""
    folder = make_study_dir(tmp_path, [f"c{k}" for k in range(10)])
    good = [{"item": k, "choice": "left" if k == 0 else "right", "ms": 900} for k in range(1, 10)]
    for bad_item in ("true", "1.0", '"3"', "-1"):
        entries = ", ".join([json.dumps(a) for a in good] + [f'{{"item": {bad_item}, "choice": "right", "ms": 900}}'])
        path = raw_answers(tmp_path, "bad.json", entries)
        said = one_line(tally(folder, [path]))
        assert f"{path}: not a camexp study answer file: answers.9.item:" in said, said
    assert not (folder / "study_report.md").exists()
    good[0]["choice"] = "left"
    path = raw_answers(tmp_path, "ok.json", ", ".join(json.dumps(a) for a in good))
    assert tally(folder, [path]).exit_code == 0
    assert scores(folder) == pytest.approx({"A: gradcam": 1.0, "B: gradcam++": 8.0, "same": 0.0})


@pytest.mark.parametrize("ms", ["NaN", "Infinity", "-Infinity", "-5", "true"])
def test_non_finite_or_negative_response_times_are_refused(tmp_path: Path, ms: str) -> None:
    folder = make_study_dir(tmp_path, ["tabby"])
    path = raw_answers(tmp_path, "a.json", f'{{"item": 0, "choice": "left", "ms": {ms}}}', items=1)
    said = one_line(tally(folder, [path]))
    assert f"{path}: not a camexp study answer file: answers.0.ms:" in said, said


def test_an_empty_answer_file_is_refused_and_the_report_kept(tmp_path: Path) -> None:
    """An answer file without answers exited 0 and overwrote study_report.md with a NaN report."""
    folder = make_study_dir(tmp_path, ["tabby", "eft"])
    assert tally(folder, [answers(tmp_path, "r1", ["left", "right"])]).exit_code == 0
    before = (folder / "study_report.md").read_text()
    empty = answers(tmp_path, "r2", [None, None])
    said = one_line(tally(folder, [empty]))
    assert f"{empty}: holds no answers" in said
    said = one_line(tally(folder, []))  # no file and no database: nothing to tally either
    assert f"{folder}: no answers to tally" in said
    assert (folder / "study_report.md").read_text() == before


def test_one_rater_in_two_files_never_depends_on_their_order(tmp_path: Path) -> None:
    """Two files of rater x with as many answers: the first on the command line won. Now files that agree
    merge (identical ones, or a partial download and the full one) and files that disagree are refused,
    naming both, in either order."""
    folder = make_study_dir(tmp_path, ["tabby", "eft"])
    x1, x2 = answers(tmp_path, "x", ["left", "left"]), answers(tmp_path, "x", ["right", "right"])
    for order in ([x1, x2], [x2, x1]):
        said = one_line(tally(folder, order))
        assert f"rater x: {x1} and {x2} give different answers to item 0" in said, said
    assert not (folder / "study_report.md").exists()
    same, partial, y = answers(tmp_path, "x", ["left", "left"]), answers(tmp_path, "x", ["left", None]), None
    y = answers(tmp_path, "y", [None, "same"])
    results = []
    for order in ([x1, same, partial, y], [y, partial, same, x1]):
        assert tally(folder, order).exit_code == 0
        results.append(scores(folder))
        md = (folder / "study_report.md").read_text()
        sources = " + ".join(p.name for p in sorted([x1, same, partial], key=str))  # by path, not by argument
        assert table_row(md, "x")[1:3] == [sources, "2 of 2"]
    assert results[0] == results[1] == pytest.approx({"A: gradcam": 1.5, "B: gradcam++": 0.0, "same": 0.5})


def test_rater_ids_with_newlines_pipes_or_html_keep_the_report_intact(tmp_path: Path) -> None:
    folder = make_study_dir(tmp_path, ["tabby"])
    evil = "a|b\n| injected | row |\n<b>x</b>"
    files = [
        answers(tmp_path, "ok", ["left"]),
        raw_answers(tmp_path, "e.json", '{"item": 0, "choice": "right", "ms": 700}', items=1, rater=evil),
    ]
    assert tally(folder, files).exit_code == 0
    md = (folder / "study_report.md").read_text()
    rater_table = md[md.index("| rater ") :].split("\n\n")[0].splitlines()
    assert len(rater_table) == 4  # header, rule, two raters
    assert {len(re.findall(r"(?<!\\)\|", line)) for line in rater_table} == {7}
    assert "<b>" not in md and "injected | row" not in md
    assert any(r[0] == repr(evil).replace("|", "\\|").replace("<", "&lt;") for r in table_rows(md))


def test_answers_faster_than_the_threshold_are_flagged(tmp_path: Path) -> None:
    """A held key answers items in a few ms: the tally counts, per rater, answers under --fast-ms (500 ms by
    default) and warns."""
    folder = make_study_dir(tmp_path, ["a", "b", "c"])
    path = raw_answers(
        tmp_path,
        "quick.json",
        '{"item": 0, "choice": "left", "ms": 30}, {"item": 1, "choice": "left", "ms": 499.9}, '
        '{"item": 2, "choice": "left", "ms": 500}',
        items=3,
        rater="quick",
    )
    result = tally(folder, [path, answers(tmp_path, "slow", ["left"] * 3)])
    assert result.exit_code == 0
    fast = report_frame(folder).query("quantity == 'fast_answers'").set_index("subject")["value"]
    assert fast.to_dict() == {"quick": 2, "slow": 0}
    assert "rater quick: 2 of 3 answers faster than 500 ms" in " ".join(result.output.split())
    assert "Answers faster than 500 ms" in (folder / "study_report.md").read_text()
    assert tally(folder, [path], "--fast-ms", "20").exit_code == 0
    assert report_frame(folder).query("quantity == 'fast_answers'")["value"].tolist() == [0]


def test_an_odd_number_of_images_does_not_always_favour_method_a() -> None:
    """With 7 images A was left 4 times for every seed; now the extra left slot goes to A or B by the seed."""
    counts = {sum(Plan.draw(7, 0, seed).a_is_A) for seed in range(40)}
    assert counts == {3, 4}
    lefts = [sum(balanced_sides(np.random.default_rng(s), 7)) for s in range(400)]
    assert abs(np.mean(lefts) - 3.5) < 0.1  # balanced on average
    assert all(sum(balanced_sides(np.random.default_rng(s), 8)) == 4 for s in range(20))
