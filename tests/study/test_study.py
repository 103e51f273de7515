"""The human-trust study: its tally on hand-made keys and answer files, its config, and `study make` on a tiny model.

Expected values come from the paper's worked example (§4.2), published agreement examples (Fleiss' κ on
Wikipedia's 10 × 5 table, Krippendorff 2011's nominal α), hand-computed binomial tails, and sklearn as a
peer for the per-class F1.
"""

from __future__ import annotations

import json
import os
import re
from itertools import count
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from typer.testing import CliRunner

import camexp.study.make as make_mod
from camexp.cli import app
from camexp.errors import ConfigError
from camexp.lock import LOCK, hold
from camexp.study.make import Plan
from camexp.study.select import f1_table, top_f1_indices
from camexp.study.tally import SAME, A, B, agreement, image_fractions, sign_test, two_level_means

cli = CliRunner()


def make_study_dir(
    tmp: Path,
    classes: list[str],
    repeats: tuple[int, ...] = (),
    a_left: bool = True,
    methods: tuple[str, str] = ("gradcam", "gradcam++"),
) -> Path:
    """A study folder as `camexp study make` writes it, minus the page: image k first shown as item k with
    A on the left when `a_left`; the images in `repeats` shown again, swapped."""
    folder = tmp / "study"
    folder.mkdir()
    (folder / "study.json").write_text(json.dumps({"study_id": "s1"}))
    first = ("A", "B") if a_left else ("B", "A")
    items = [{"item": k, "image": k, "left": first[0], "right": first[1], "repeat": False} for k in range(len(classes))]
    items += [
        {"item": len(classes) + j, "image": k, "left": first[1], "right": first[0], "repeat": True}
        for j, k in enumerate(repeats)
    ]
    images = [{"image": k, "image_id": f"img{k}", "class_name": c, "a": first[0]} for k, c in enumerate(classes)]
    key = {"study_id": "s1", "methods": dict(zip("AB", methods, strict=True)), "images": images, "items": items}
    (folder / "key.json").write_text(json.dumps(key))
    return folder


_files = count()


def answers(tmp: Path, rater: str, choices: list[str | None], study_id: str = "s1", **extra) -> Path:
    """An answer file as the page downloads it; None leaves an item unanswered."""
    path = tmp / f"answers_{next(_files)}_{rater}.json"
    given = [{"item": n, "choice": c, "ms": 1000 * (n + 1)} for n, c in enumerate(choices) if c is not None]
    path.write_text(
        json.dumps(
            {
                "format": "camexp-study-answers/1",
                "study_id": study_id,
                "rater": rater,
                "items": len(choices),
                "complete": len(given) == len(choices),
                "answers": given,
                **extra,
            }
        )
    )
    return path


def tally(folder: Path, files: list[Path], *args: str):
    return cli.invoke(app, ["study", "tally", str(folder), *map(str, files), "--bootstrap", "200", *args])


def report_frame(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "study_report.csv")


def table_rows(md: str) -> list[list[str]]:
    """The cells of every Markdown table row of `md`, split at unescaped pipes as a renderer does."""
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in md.splitlines() if line.startswith("|")]


def table_row(md: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    rows = [cells for cells in table_rows(md) if cells[0] == first]
    assert len(rows) == 1, md
    return rows[0]


def test_paper_worked_example_5_4_4_of_13(tmp_path: Path) -> None:
    """Paper §4.2: 5 votes for Grad-CAM++, 4 for Grad-CAM, 4 'same' of 13 give 0.38 / 0.31 / 0.31."""
    votes = np.array([[B] * 5 + [A] * 4 + [SAME] * 4], dtype=float).T  # 13 raters × 1 image
    assert image_fractions(votes)[0] == pytest.approx([4 / 13, 5 / 13, 4 / 13])
    assert np.round(image_fractions(votes)[0], 2).tolist() == [0.31, 0.38, 0.31]
    folder = make_study_dir(tmp_path, ["tabby"])
    files = [answers(tmp_path, f"r{i}", [c]) for i, c in enumerate(["right"] * 5 + ["left"] * 4 + ["same"] * 4)]
    result = tally(folder, files, "--compare-paper")
    assert result.exit_code == 0, result.output
    score = report_frame(folder).query("quantity == 'score'").set_index("subject")["value"]
    assert score.to_dict() == pytest.approx({"A: gradcam": 4 / 13, "B: gradcam++": 5 / 13, "same": 4 / 13})
    md = (folder / "study_report.md").read_text()
    b, same = table_row(md, "B: gradcam++"), table_row(md, "same")
    assert b[1:3] == ["0.38", "38.46"] and b[-2:] == ["109.69", "43.88"] and same[-2:] == ["84.23", "33.69"]


def test_scores_sum_over_images_and_respect_sides(tmp_path: Path) -> None:
    """Two images, B on the left: 'left' votes count for B. Image 0: 2 B, 1 same; image 1: 3 A."""
    folder = make_study_dir(tmp_path, ["tabby", "eft"], a_left=False)
    files = [
        answers(tmp_path, "r1", ["left", "right"]),
        answers(tmp_path, "r2", ["left", "right"]),
        answers(tmp_path, "r3", ["same", "right"]),
    ]
    assert tally(folder, files).exit_code == 0
    rep = report_frame(folder)
    score = rep.query("quantity == 'score'").set_index("subject")["value"]
    assert score.to_dict() == pytest.approx({"A: gradcam": 1.0, "B: gradcam++": 2 / 3, "same": 1 / 3})
    pct = rep.query("quantity == 'score_percent'").set_index("subject")["value"]
    assert pct["A: gradcam"] == pytest.approx(50.0)
    per_class = rep.query("quantity == 'class_score'").set_index("subject")["value"]
    assert per_class["tabby | B: gradcam++"] == pytest.approx(2 / 3) and per_class["eft | A: gradcam"] == 1.0
    median = rep.query("quantity == 'median_response_s'")["value"].item()
    assert median == pytest.approx(1.5)  # answers took 1 s and 2 s


def test_fleiss_kappa_wikipedia_example() -> None:
    """Wikipedia's worked example of Fleiss' κ: 10 subjects, 14 raters, 5 categories, κ = 0.210."""
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    votes = np.array([np.repeat(np.arange(5), row) for row in table], dtype=float).T  # 14 raters × 10 subjects
    kappa, n, _ = agreement(votes, categories=5)
    assert n == 10 and kappa == pytest.approx(0.210, abs=5e-4)


def test_krippendorff_alpha_published_example() -> None:
    """Krippendorff (2011), 'Computing Krippendorff's alpha-reliability': 3 coders, 15 units with missing
    values, nominal α = 0.691 (values 1..4 coded 0..3 here)."""
    nan = np.nan
    data = (
        np.array(
            [
                [nan, nan, nan, nan, nan, 3, 4, 1, 2, 1, 1, 3, 3, nan, 3],
                [1, nan, 2, 1, 3, 3, 4, 3, nan, nan, nan, nan, nan, nan, nan],
                [nan, nan, 2, 1, 3, 4, 4, nan, 2, 1, 1, 3, 3, nan, 4],
            ]
        )
        - 1
    )
    _, _, alpha = agreement(data, categories=4)
    assert alpha == pytest.approx(0.691, abs=5e-4)


def test_sign_test_hand_computed_and_scipy() -> None:
    """9 images prefer A, 2 prefer B, 3 tie: p = 2·(C(11,0)+C(11,1)+C(11,2))/2^11 = 134/2048."""
    rows = [[1, 0, 0]] * 9 + [[0, 1, 0]] * 2 + [[0.5, 0.5, 0]] * 2 + [[0, 0, 1]]
    wins, losses, ties, p = sign_test(np.array(rows, dtype=float))
    assert (wins, losses, ties) == (9, 2, 3)
    assert p == pytest.approx(2 * sum(comb(11, i) for i in range(3)) / 2**11)
    assert p == pytest.approx(binomtest(9, 11, 0.5).pvalue)
    assert sign_test(np.array([[0.5, 0.5, 0.0]]))[3] == 1.0


def test_two_level_bootstrap_one_image_two_raters() -> None:
    """One image, rater 1 says A, rater 2 B: a rater resample is {1,1} (A = 1), {2,2} (A = 0) or mixed
    (A = 1/2) with probabilities 1/4, 1/4, 1/2; the image resample cannot change anything."""
    boot = two_level_means(np.array([[A], [B]], dtype=float), 4000, seed=1)
    values, counts = np.unique(boot[:, 0], return_counts=True)
    assert values.tolist() == [0.0, 0.5, 1.0]
    assert counts / 4000 == pytest.approx([0.25, 0.5, 0.25], abs=0.03)
    assert np.allclose(boot.sum(1), 1.0) and np.all(boot[:, SAME] == 0)


def test_other_study_and_malformed_files_refused(tmp_path: Path) -> None:
    folder = make_study_dir(tmp_path, ["tabby"])
    good = answers(tmp_path, "r1", ["left"])
    cases = {
        answers(tmp_path, "r2", ["left"], study_id="other"): "answers to study 'other', not to this study 's1'",
        tmp_path / "broken.json": "not a readable answer file",
        answers(tmp_path, "r3", ["up"]): "not a camexp study answer file: answers.0.choice: Input should be 'left'",
        answers(tmp_path, "r4", ["left"], format="something"): "not a camexp study answer file",
    }
    (tmp_path / "broken.json").write_text("{not json")
    for path, message in cases.items():
        result = tally(folder, [good, path])
        assert result.exit_code == 2, result.output
        assert message in result.output and str(path.name) in result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (folder / "study_report.md").exists()


def test_duplicate_raters_and_incomplete_sets_are_listed(tmp_path: Path) -> None:
    """Rater x in two files that agree (a partial download and the full one: merged, named), rater y
    incomplete."""
    folder = make_study_dir(tmp_path, ["tabby", "eft"])
    x_short, x_full = answers(tmp_path, "x", ["right", None]), answers(tmp_path, "x", ["right", "right"])
    y = answers(tmp_path, "y", [None, "same"])
    result = tally(folder, [x_short, x_full, y])
    assert result.exit_code == 0, result.output
    md = (folder / "study_report.md").read_text()
    assert "Raters merged from several sources or excluded: 1; incomplete answer sets: 1" in md
    assert f"rater x: answers of {x_short} + {x_full} merged" in md and f"incomplete: {y} (rater y, 1 of 2)" in md
    score = report_frame(folder).query("quantity == 'score'").set_index("subject")["value"]
    assert score.to_dict() == pytest.approx({"A: gradcam": 0.0, "B: gradcam++": 1.5, "same": 0.5})
    assert "answered 1 of 2 items (incomplete" in result.output


def test_html_and_pipes_in_names_are_escaped_and_tables_keep_their_columns(tmp_path: Path) -> None:
    """Audit: method names and rater ids landed raw in study_report.md (live HTML where it is rendered), and its
    tables were written without the project's pipe escaping (a `|` started a new column)."""
    evil = "<img src=x onerror=alert(1)>|x"
    folder = make_study_dir(tmp_path, ["a&b"], methods=(evil, "gradcam++"))
    files = [answers(tmp_path, "r1", ["left"]), answers(tmp_path, evil, ["left"])]
    files.append(answers(tmp_path, evil, ["left"]))  # a duplicate rater id: merged, named in the notes
    assert tally(folder, files).exit_code == 0
    md = (folder / "study_report.md").read_text()
    assert "<img" not in md and "&lt;img src=x onerror=alert(1)>" in md
    safe = "&lt;img src=x onerror=alert(1)>\\|x"
    header = {"choice": 5, "class": 5, "rater": 6}  # columns of the score, per-class and rater tables
    for table in ("choice", "class", "rater"):
        lines = md[md.index(f"| {table} ") :].split("\n\n")[0].splitlines()
        assert {len(re.findall(r"(?<!\\)\|", line)) for line in lines} == {header[table] + 1}, lines
    assert table_row(md, f"A: {safe}")[1] == "1.00" and table_row(md, "a&amp;b")[1] == "1"
    assert table_row(md, safe)[2:4] == ["1 of 1", "0 of 0"]
    assert "Method A: &lt;img src=x onerror=alert(1)>|x; method B: gradcam++" in md
    assert "rater &#x27;" not in md and "rater &lt;img src=x onerror=alert(1)>|x: answers of" in md
    score = report_frame(folder).query("quantity == 'score'").set_index("subject")["value"]
    assert score[f"A: {evil}"] == 1.0  # the CSV keeps the name as it is


def test_intra_rater_consistency_unblinds_swapped_repeats(tmp_path: Path) -> None:
    """Image 0 repeated with sides swapped: 'left' then 'right' is the same method (consistent); 'left' twice
    is a side preference, not a method preference (inconsistent)."""
    folder = make_study_dir(tmp_path, ["tabby"], repeats=(0,))
    files = [answers(tmp_path, "steady", ["left", "right"]), answers(tmp_path, "sided", ["left", "left"])]
    assert tally(folder, files).exit_code == 0
    intra = report_frame(folder).query("quantity == 'intra_rater_agreement'")
    assert intra["value"].item() == 0.5 and intra["n"].item() == 2
    score = report_frame(folder).query("quantity == 'score'").set_index("subject")["value"]
    assert score["A: gradcam"] == 1.0  # repeats never count towards the score


def test_f1_table_matches_sklearn_and_picks_best_classes() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 200)
    preds = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 8, 200))
    f1 = f1_table(labels, preds, None)
    peer = f1_score(labels, preds, labels=f1["class"].tolist(), average=None)
    assert f1["f1"].to_numpy() == pytest.approx(peer)
    assert f1["f1"].is_monotonic_decreasing
    # hand case: class 1 perfect (F1 1), class 0 one miss (2·1/(2+0+1)), class 2 a false positive only; the
    # unlabelled last image (-1) predicted as 1 is no false positive of class 1
    f1 = f1_table(np.array([0, 0, 1, 3, -1]), np.array([0, 2, 1, 3, 1]), None)
    assert f1["class"].tolist() == [1, 3, 0] and f1["f1"].tolist() == pytest.approx([1, 1, 2 / 3])
    assert top_f1_indices(np.array([0, 0, 1, 3]), f1, 2, per_class=None) == [2, 3]


def test_plan_is_seeded_balanced_and_repeats_distinct() -> None:
    plan = Plan.draw(11, 4, seed=5)
    assert plan == Plan.draw(11, 4, seed=5) and plan != Plan.draw(11, 4, seed=6)
    assert sorted(plan.order) == list(range(11)) and sum(plan.a_is_A) in (5, 6)
    assert len(set(plan.repeats)) == 4 and [s for _, s in plan.items()] == [False] * 11 + [True] * 4


def test_study_section_is_validated_apart_from_the_core(tmp_path: Path) -> None:
    from camexp.experiment import load_experiment
    from camexp.study.config import load_study

    base = "name: s\ndataset: {kind: folder, root: .}\nmodel: {name: resnet18, weights: random}\n"
    cases = {
        "study: {methods: [gradcam]}": "study.methods: Value error, list exactly two different methods",
        "study: {colour: red}": "study.colour: unknown key",
        "study: {select: {random: 3, top_f1_classes: 2}}": "study.select: Value error, give exactly one of",
        "study: {methods: [gradcam, nosuchcam]}": "study.methods: unknown method(s) ['nosuchcam']",
        "study: {}\nbogus: 1": "bogus: unknown key",
    }
    for n, (extra, message) in enumerate(cases.items()):
        path = tmp_path / f"c{n}.yaml"
        path.write_text(base + extra + "\n")
        with pytest.raises(ConfigError) as err:
            load_study(path)
        assert message in str(err.value) and str(path) in str(err.value)
    path = tmp_path / "ok.yaml"
    path.write_text(base + "study: {select: {random: 3}, stimulus: overlay}\n")
    study, cfg, runs = load_study(path)
    assert study.select.random == 3 and cfg.name == "s" and [r.name for r in runs] == ["gradcam", "gradcam++"]
    with pytest.raises(ConfigError, match="study: unknown key"):  # the core schema knows nothing of studies
        load_experiment(path)


def test_table_lists_a_study_beside_runs(tmp_path: Path) -> None:
    """`camexp table` on a folder holding only a study: says it is a study, then shows its tally."""
    folder = make_study_dir(tmp_path, ["tabby"])
    result = cli.invoke(app, ["table", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "Human-trust study" in said and "not a run: no answers tallied yet" in said
    assert tally(folder, [answers(tmp_path, "r1", ["left"])]).exit_code == 0
    result = cli.invoke(app, ["table", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0 and "A: gradcam" in result.output
    assert "### Per class" in (tmp_path / "out" / "report.md").read_text()


STUDY_CONFIGS = [
    p for p in sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")) if "study:" in p.read_text()
]


def test_shipped_study_configs_validate_and_the_paper_one_is_set_up_as_published() -> None:
    from camexp.study.config import load_study

    loaded = {p.stem: load_study(p) for p in STUDY_CONFIGS}
    assert {"human_trust_ilsvrc_vgg16", "study_smoke_lite0"} <= set(loaded)
    assert all(cfg.name == stem for stem, (_, cfg, _) in loaded.items())
    study, cfg, runs = loaded["human_trust_ilsvrc_vgg16"]
    assert (cfg.dataset.kind, cfg.model.name, cfg.dataset.limit, cfg.dataset.subset) == (
        "imagenet_val",
        "vgg16.tv_in1k",
        None,
        None,
    )
    assert (study.select.top_f1_classes, study.select.per_class, study.stimulus) == (5, 50, "explanation")
    assert sorted(r.method.name for r in runs) == ["gradcam", "gradcam++"]


def test_make_on_unlabelled_photos_with_a_random_model(tmp_path: Path, photo_dir: Path) -> None:
    """`camexp study make` end to end on a tiny model: top-F1 needs labels (one line, exit 2); `random: 3`
    writes 3 images, their overlays, the key and a page that names no method; a second make needs --force."""
    config = tmp_path / "study.yaml"
    base = (
        f"name: tiny\ndataset: {{kind: folder, root: {photo_dir}}}\n"
        "model: {name: resnet18, weights: random}\nruntime: {batch_size: 2}\n"
    )
    config.write_text(base + "study: {methods: [gradcam, gradcam++]}\n")
    out = tmp_path / "out"
    result = cli.invoke(app, ["study", "make", str(config), "--out", str(out), "--no-progress"])
    assert result.exit_code == 2 and "top_f1_classes needs a single true label per image" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    config.write_text(
        base + "study: {methods: [gradcam, gradcam++], select: {random: 3}, stimulus: overlay, repeats: 1}\n"
    )
    result = cli.invoke(app, ["study", "make", str(config), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    key = json.loads((out / "key.json").read_text())
    assert len(key["images"]) == 3 and len(key["items"]) == 4 and key["items"][3]["repeat"]
    repeat = key["items"][3]
    first = key["items"][repeat["image"]]
    assert (repeat["left"], repeat["right"]) == (first["right"], first["left"])
    assert sorted(p.name for p in (out / "page" / "img").iterdir()) == [
        f"item_{k:03d}_{s}.png" for k in range(3) for s in "abo"
    ]
    page_text = " ".join(p.read_text() for p in (out / "page").glob("*.*"))
    assert "gradcam" not in page_text.lower() and key["study_id"] in page_text
    study = json.loads((out / "study.json").read_text())
    assert study["study_id"] == key["study_id"] and study["image_ids"] == sorted(i["image_id"] for i in key["images"])
    result = cli.invoke(app, ["study", "make", str(config), "--out", str(out), "--no-progress"])
    assert result.exit_code == 2 and "already holds a study" in result.output
    assert tally(out, [answers(tmp_path, "r1", ["left"] * 4, study_id=key["study_id"])]).exit_code == 0
    result = cli.invoke(app, ["study", "make", str(config), "--out", str(out), "--no-progress", "--force"])
    assert result.exit_code == 0 and json.loads((out / "key.json").read_text())["study_id"] == key["study_id"]
    # the old study's tally went with it: `camexp table` must not show it under the new page
    assert not (out / "study_report.md").exists() and not (out / "study_report.csv").exists()
    assert not (out / LOCK).exists()


def tiny_study_config(tmp_path: Path, photo_dir: Path, out: Path) -> Path:
    """A `random: 3` study of a random resnet18 over the test photographs, written into `out`."""
    config = tmp_path / "study.yaml"
    config.write_text(
        f"name: tiny\ndataset: {{kind: folder, root: {photo_dir}}}\nmodel: {{name: resnet18, weights: random}}\n"
        f"runtime: {{batch_size: 2}}\noutput: {{dir: {out}}}\n"
        "study: {methods: [gradcam, gradcam++], select: {random: 3}, stimulus: overlay, repeats: 1}\n"
    )
    return config


def make(config: Path, *args: str):
    return cli.invoke(app, ["study", "make", str(config), "--no-progress", *args])


def one_line(result) -> str:
    """The CLI's error, exit 2, on one line: never a traceback."""
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output
    return " ".join(result.output.split())


def test_a_second_make_into_a_folder_being_written_is_refused(tmp_path: Path, photo_dir: Path) -> None:
    """Audit: two `study make` into one folder both succeeded, the second replacing the first's study. The
    first holds the folder's lock while it writes: the second stops with one line and writes nothing."""
    out = tmp_path / "out"
    config = tiny_study_config(tmp_path, photo_dir, out)
    with hold(out):  # a first `study make` (this process) writing the folder
        for extra in ((), ("--force",)):
            said = one_line(make(config, *extra))
            assert f"{out}: another camexp run is writing this folder (pid {os.getpid()}" in said
        assert sorted(p.name for p in out.iterdir()) == [LOCK]
    assert make(config).exit_code == 0 and not (out / LOCK).exists()


def test_a_finished_study_or_a_run_folder_is_not_replaced(tmp_path: Path, photo_dir: Path) -> None:
    """study.json (written last) marks a finished study: kept without --force, even when key.json was moved
    away from the raters; a run folder is never a study folder, --force or not."""
    out = tmp_path / "out"
    config = tiny_study_config(tmp_path, photo_dir, out)
    out.mkdir()
    (out / "study.json").write_text('{"study_id": "old"}')
    said = one_line(make(config))
    assert f"{out} already holds a study (study.json); pass --force to replace it" in said
    assert (out / "study.json").read_text() == '{"study_id": "old"}'
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    for extra in ((), ("--force",)):
        said = one_line(make(config, "--out", str(run), *extra))
        assert f"{run} holds a camexp run (run.json); a study needs a folder of its own" in said
    assert sorted(p.name for p in run.iterdir()) == ["run.json"]


def test_an_unwritable_study_folder_is_one_line(tmp_path: Path, photo_dir: Path) -> None:
    """Audit: a folder that cannot be written gave a traceback. Root writes through permission bits, so the
    folder is put under a regular file (mkdir fails with ENOTDIR)."""
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    out = afile / "study"
    said = one_line(make(tiny_study_config(tmp_path, photo_dir, out)))
    assert f"{out}: the run folder cannot be created (a file is in the way of a folder)" in said
    folder = make_study_dir(tmp_path, ["tabby"])  # the tally's --out under a file, too
    said = one_line(tally(folder, [answers(tmp_path, "r1", ["left"])], "--out", str(afile / "report")))
    assert f"{afile / 'report'}: cannot write study_report.md and study_report.csv" in said


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, whose writes fail with ENOSPC")
def test_a_full_disk_while_writing_stimuli_is_one_line_and_the_same_command_then_works(
    tmp_path: Path, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit: a full disk gave a long traceback. The third image goes to /dev/full through a link (the kernel's
    own ENOSPC);
    no study.json is written, so running the same command once there is space needs no --force and leaves
    no image of the failed attempt behind."""
    out = tmp_path / "out"
    config = tiny_study_config(tmp_path, photo_dir, out)
    real_png, calls = make_mod._png, []

    def third_image_meets_a_full_disk(hwc, path: Path) -> None:
        calls.append(path)
        if len(calls) == 3:
            path.symlink_to("/dev/full")
        real_png(hwc, path)

    monkeypatch.setattr(make_mod, "_png", third_image_meets_a_full_disk)
    said = one_line(make(config))
    assert f"{out}: no space left on the device while writing the study; free space" in said
    assert not (out / "study.json").exists() and not (out / LOCK).exists()
    (out / "page" / "img" / "item_009_o.png").write_bytes(b"left by an earlier, larger attempt")
    monkeypatch.setattr(make_mod, "_png", real_png)
    assert make(config).exit_code == 0
    assert sorted(p.name for p in (out / "page" / "img").iterdir()) == [
        f"item_{k:03d}_{s}.png" for k in range(3) for s in "abo"
    ]
