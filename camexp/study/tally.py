"""`camexp study tally`: read the raters' answer files, un-blind them with key.json, report the paper's score.

The paper's score (§4.2): each image's votes are normalised to sum to 1 over {A, B, same} (5 for A, 4 for B
and 4 "same" of 13 raters: 0.38 / 0.31 / 0.31), and these fractions are summed over the images (Grad-CAM++
109.69, Grad-CAM 56.08, same 84.23 of 250 images). Beside it: percentile bootstrap intervals over images
(camexp/stats/bootstrap.py) and over raters and images (two-level), the exact sign test of A vs B per image
("same" left out; scipy.stats.binomtest), Fleiss' κ (statsmodels) and Krippendorff's α (krippendorff) over
{A, B, same}, intra-rater consistency on the repeated items, a per-class breakdown and response times.

Only first showings count towards scores and agreement; the repeated items (sides swapped) only measure
whether a rater gives the same answer twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy.stats import binomtest
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from camexp.errors import CamexpError
from camexp.report.markdown import markdown_table, markdown_text
from camexp.report.runs import STUDY_JSON, STUDY_REPORT
from camexp.report.tables import write_files
from camexp.stats.bootstrap import krippendorff_alpha, percentile_interval, resample_means
from camexp.study.make import KEY_JSON
from camexp.study.store import DB, read_rows

FORMAT = "camexp-study-answers/1"
CHOICES = ("left", "same", "right")
A, B, SAME = 0, 1, 2  # vote codes; NaN: no answer
# The paper's published totals (§4.2, 250 images, 13 raters), by camexp method name.
PAPER = {"gradcam++": 109.69, "gradcam": 56.08, "same": 84.23}
PAPER_IMAGES = 250
# Answers faster than this are flagged: under half a second is too little to look at a photograph and two maps
# and decide (simple visual reaction times alone are ~0.2-0.3 s); a held key or a double click gives ~0-50 ms.
FAST_MS = 500.0


@dataclass
class AnswerFile:
    """One rater's answers from one source (an answer file, or the served study's database): item ->
    (choice in the key's layout, milliseconds)."""

    path: Path
    rater: str
    answers: dict[int, tuple[str, float]]
    items: int
    merged_from: tuple[Path, ...] = ()  # the sources of a rater found in several

    @property
    def sources(self) -> tuple[Path, ...]:
        return self.merged_from or (self.path,)

    @property
    def where(self) -> str:
        """The source(s) as the report names them: `a.json + b.json`."""
        return " + ".join(map(str, self.sources))

    @property
    def complete(self) -> bool:
        return len(self.answers) == self.items

    @property
    def shown(self) -> str:
        """The rater id as the report prints it: quoted with its escapes (`repr`) when it holds a newline or
        another unprintable character that would end a Markdown table row or list item."""
        return self.rater if self.rater.isprintable() else repr(self.rater)


class _Answer(BaseModel):
    """One answer as the page writes it: strict types, so `"item": true` or `"ms": NaN` is refused, not cast."""

    model_config = ConfigDict(extra="forbid", strict=True)
    item: int = Field(ge=0)
    choice: Literal["left", "same", "right"]
    ms: float = Field(ge=0, allow_inf_nan=False)


class _AnswerFileSchema(BaseModel):
    """A downloaded answer file (format camexp-study-answers/1)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    format: Literal["camexp-study-answers/1"]
    study_id: str
    rater: str = Field(min_length=1)
    items: int
    complete: bool | None = None
    saved: str | None = None
    answers: list[_Answer]


@dataclass
class StudyReport:
    markdown: str
    frame: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    paths: tuple[Path, Path] = (Path(), Path())


def _json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CamexpError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CamexpError(f"{path}: not a readable {what} ({e})") from None


def read_key(study_dir: Path) -> dict[str, Any]:
    """key.json of a study folder, checked for the fields the tally reads."""
    key = _json(study_dir / KEY_JSON, "study key (key.json, written by `camexp study make`)")
    ok = (
        isinstance(key, dict)
        and isinstance(key.get("study_id"), str)
        and isinstance(key.get("items"), list)
        and isinstance(key.get("images"), list)
        and set(key.get("methods") or {}) == {"A", "B"}
    )
    if not ok:
        raise CamexpError(f"{study_dir / KEY_JSON}: not a camexp study key (study_id, methods A and B, images, items)")
    return key


def schema_error(e: ValidationError) -> str:
    """A pydantic error as one line: the first problem with where it is (`answers.3.item: ...`) and how many."""
    first = e.errors()[0]
    where = ".".join(str(x) for x in first["loc"]) or "the file"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def read_answers(path: Path, key: dict[str, Any]) -> AnswerFile:
    """One answer file, validated against its schema and the key; refused with a one-line reason when it is
    malformed, empty or belongs to another study."""
    data = _json(path, "answer file")
    bad = f"{path}: not a camexp study answer file"
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CamexpError(f'{bad} (no "format": "{FORMAT}")')
    if data.get("study_id") != key["study_id"]:
        raise CamexpError(
            f"{path}: answers to study {data.get('study_id')!r}, not to this study "
            f"{key['study_id']!r}; tally it with its own study folder"
        )
    try:
        parsed = _AnswerFileSchema.model_validate(data)
    except ValidationError as e:
        raise CamexpError(f"{bad}: {schema_error(e)}") from None
    n = len(key["items"])
    if parsed.items != n:
        raise CamexpError(f"{bad}: it counts {parsed.items} items, the study has {n}")
    if not parsed.answers:
        raise CamexpError(f"{path}: holds no answers (an answer file the page saved before the first item?)")
    out: dict[int, tuple[str, float]] = {}
    for j, a in enumerate(parsed.answers):
        if a.item >= n:
            raise CamexpError(f"{bad}: answer {j} is to item {a.item}; the study's items are 0..{n - 1}")
        if a.item in out:
            raise CamexpError(f"{bad}: item {a.item} is answered twice")
        out[a.item] = (a.choice, a.ms)
    rater = parsed.rater.strip()
    if not rater:
        raise CamexpError(f'{bad}: "rater" is blank')
    return AnswerFile(path, rater, out, n)


def read_database(study_dir: Path, key: dict[str, Any]) -> list[AnswerFile]:
    """The served study's answers (camexp/study/store.py), one set per participant, each choice turned back into
    the key's layout where the participant saw the item's sides swapped; [] when the study was never served."""
    n = len(key["items"])
    out: dict[str, AnswerFile] = {}
    for row in read_rows(study_dir, key["study_id"]):
        if not 0 <= row.item < n:
            raise CamexpError(f"{study_dir / DB}: an answer to item {row.item}; the study's items are 0..{n - 1}")
        choice = {"left": "right", "right": "left"}.get(row.choice, row.choice) if row.flipped else row.choice
        out.setdefault(row.participant, AnswerFile(study_dir / DB, row.participant, {}, n)).answers[row.item] = (
            choice,
            row.ms,
        )
    return list(out.values())


def merge_raters(sources: list[AnswerFile]) -> list[AnswerFile]:
    """One answer set per rater id, whatever the order the sources come in: a rater's sources merge when every
    item two of them answer has the same answer (a partial download and a full one, the database and a
    file), and are refused, naming both sources, when they disagree; raters sorted by id."""
    by_rater: dict[str, list[AnswerFile]] = {}
    for f in sorted(sources, key=lambda f: str(f.path)):
        by_rater.setdefault(f.rater, []).append(f)
    out = []
    for rater, files in sorted(by_rater.items()):
        merged: dict[int, tuple[str, float]] = {}
        origin: dict[int, Path] = {}
        for f in files:
            for item, answer in f.answers.items():
                if item in merged and merged[item] != answer:
                    raise CamexpError(
                        f"rater {f.shown}: {origin[item]} and {f.path} give different "
                        f"answers to item {item} ({merged[item][0]}, {merged[item][1]:g} ms vs {answer[0]}, "
                        f"{answer[1]:g} ms); keep the right file, or rename the rater in one of them"
                    )
                merged[item], origin[item] = answer, origin.get(item, f.path)
        merged_from = tuple(f.path for f in files) if len(files) > 1 else ()
        out.append(AnswerFile(files[0].path, rater, dict(sorted(merged.items())), files[0].items, merged_from))
    return out


def vote_matrix(files: list[AnswerFile], key: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Un-blinded votes: (raters × items) codes A/B/SAME of the scored items (NaN: not answered, or a practice
    or catch item), (raters × items) milliseconds (all but practice items), and per item the image it shows
    (-1: a practice image)."""
    items = key["items"]
    votes = np.full((len(files), len(items)), np.nan)
    ms = np.full(votes.shape, np.nan)
    for r, f in enumerate(files):
        for n, (choice, t) in f.answers.items():
            if kind(items[n]) == "trial":
                side = items[n][choice] if choice != "same" else "same"
                votes[r, n] = {"A": A, "B": B, "same": SAME}[side]
            if kind(items[n]) != "practice":
                ms[r, n] = t
    return votes, ms, np.array([-1 if it["image"] is None else it["image"] for it in items])


def kind(item: dict[str, Any]) -> str:
    """trial (scored), practice (never scored) or catch (attention); keys written before issue 31: trial."""
    return str(item.get("kind", "trial"))


def catch_answers(files: list[AnswerFile], key: dict[str, Any]) -> np.ndarray:
    """(raters × 2): per rater, catch items answered and how many of those chose the real map over the foil."""
    out = np.zeros((len(files), 2), dtype=int)
    for r, f in enumerate(files):
        for n, (choice, _) in f.answers.items():
            it = key["items"][n]
            if kind(it) == "catch":
                out[r] += (1, choice != "same" and it[choice] == "map")
    return out


def image_fractions(votes: np.ndarray) -> np.ndarray:
    """(images × 3) the paper's per-image scores: each image's votes for A, B and same over its number of
    votes (votes: raters × images, NaN where a rater gave none; an image without votes is NaN)."""
    counts = np.stack([(votes == c).sum(0) for c in (A, B, SAME)], axis=1).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return counts / counts.sum(1, keepdims=True)


def two_level_means(votes: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, 3) mean per-image scores when both the raters and the images are resampled with replacement:
    each resample draws R raters (their votes weighted by how often each was drawn), recomputes every image's
    fractions from them, then draws N images; an image none of the drawn raters answered drops out."""
    n_raters, n_images = votes.shape
    rng = np.random.default_rng(seed)
    onehot = np.stack([(votes == c) for c in (A, B, SAME)], axis=2).reshape(n_raters, -1).astype(np.float64)
    rater_draws = np.stack(
        [np.bincount(rng.integers(0, n_raters, n_raters), minlength=n_raters) for _ in range(n_boot)]
    )
    image_draws = np.stack(
        [np.bincount(rng.integers(0, n_images, n_images), minlength=n_images) for _ in range(n_boot)]
    )
    counts = (rater_draws @ onehot).reshape(n_boot, n_images, 3)
    total = counts.sum(2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(total > 0, counts / total, 0.0)
        weight = image_draws * (total[..., 0] > 0)
        return np.einsum("bn,bnk->bk", weight, frac) / weight.sum(1, keepdims=True)


def sign_test(fractions: np.ndarray) -> tuple[int, int, int, float]:
    """Images where more raters preferred A than B (wins), fewer (losses), as many (ties), and the exact
    two-sided binomial test of p = 1/2 on the untied images (scipy.stats.binomtest); p = 1 when all tie."""
    ok = ~np.isnan(fractions).any(1)
    d = fractions[ok, A] - fractions[ok, B]
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return wins, losses, int(ok.sum()) - wins - losses, float(p)


def agreement(votes: np.ndarray, categories: int = 3) -> tuple[float, int, float]:
    """Fleiss' κ over the images every rater answered (statsmodels; κ needs the same raters per image), their
    number, and Krippendorff's α (nominal; missing answers allowed), for votes coded 0 .. categories - 1
    (a study's A, B, same). NaN where undefined (one rater, or no variation at all)."""
    full = ~np.isnan(votes).any(0)
    kappa = float("nan")
    if votes.shape[0] >= 2 and full.any():
        table, _ = aggregate_raters(votes[:, full].T.astype(int), n_cat=categories)
        with np.errstate(invalid="ignore", divide="ignore"):
            kappa = float(fleiss_kappa(table, method="fleiss"))
    alpha = krippendorff_alpha("nominal", reliability_data=votes, value_domain=list(range(categories)))
    return kappa, int(full.sum()), alpha


def consistency(votes: np.ndarray, key: dict[str, Any]) -> np.ndarray:
    """(raters × 2): per rater, repeated items answered both times, and how many of those got the same
    un-blinded answer (A, B or same) as the first showing."""
    trials = [it for it in key["items"] if kind(it) == "trial"]
    first = {it["image"]: it["item"] for it in trials if not it["repeat"]}
    pairs = [(first[it["image"]], it["item"]) for it in trials if it["repeat"]]
    out = np.zeros((votes.shape[0], 2), dtype=int)
    for a, b in pairs:
        both = ~np.isnan(votes[:, a]) & ~np.isnan(votes[:, b])
        out[:, 0] += both
        out[:, 1] += both & (votes[:, a] == votes[:, b])
    return out


def _score_rows(
    frac: np.ndarray, votes: np.ndarray, labels: list[str], n_boot: int, level: float, seed: int
) -> list[dict[str, Any]]:
    """Per choice the paper's score over the N rated images (`frac`: N × 3, `votes`: raters × N) as a total and
    a percentage, with percentile bootstrap intervals over images and over raters and images."""
    n = len(frac)
    lo, hi = percentile_interval(resample_means(frac, n_boot, seed), level)
    lo2, hi2 = (
        percentile_interval(two_level_means(votes, n_boot, seed), level) if n_boot and n else (np.full(3, np.nan),) * 2
    )
    rows = []
    for j, label in enumerate(labels):
        for quantity, scale in (("score", n), ("score_percent", 100.0)):
            rows.append(
                {
                    "quantity": quantity,
                    "subject": label,
                    "value": frac[:, j].sum() if quantity == "score" else 100 * frac[:, j].sum() / n if n else np.nan,
                    "lo": scale * lo[j],
                    "hi": scale * hi[j],
                    "lo_two_level": scale * lo2[j],
                    "hi_two_level": scale * hi2[j],
                    "n": n,
                }
            )
    return rows


def tally_study(
    study_dir: Path,
    answer_paths: Sequence[Path],
    *,
    compare_paper: bool = False,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    fast_ms: float = FAST_MS,
    min_catch: float | None = None,
    out: Path | None = None,
) -> StudyReport:
    """Read, check and un-blind every answer file and the served study's database (when there is one);
    write study_report.md and .csv into `out` (default the study folder)."""
    if not 0 < level < 1 or n_boot < 0 or fast_ms < 0 or not 0 <= (min_catch or 0) <= 1:
        raise CamexpError("--level must be in (0, 1), --bootstrap >= 0, --fast-ms >= 0 and --min-catch in [0, 1]")
    if not (study_dir / STUDY_JSON).is_file():
        raise CamexpError(f"{study_dir}: not a study folder (no {STUDY_JSON}; make one with `camexp study make`)")
    key = read_key(study_dir)
    sources = [read_answers(Path(p), key) for p in answer_paths] + read_database(study_dir, key)
    if not sources:
        raise CamexpError(
            f"{study_dir}: no answers to tally: give the answer files the page downloaded, or serve the study "
            "(`camexp study serve`) so that its database collects them"
        )
    files = merge_raters(sources)
    notes = [f"rater {f.shown}: answers of {f.where} merged (they agree)" for f in files if f.merged_from]
    catch = catch_answers(files, key)
    low = [
        r for r in range(len(files)) if min_catch is not None and catch[r, 0] and catch[r, 1] < min_catch * catch[r, 0]
    ]
    excluded = [(files[r], catch[r]) for r in low]
    notes += [
        f"rater {f.shown} excluded: {c[1]} of {c[0]} catch items right, below --min-catch {min_catch:g}"
        for f, c in excluded
    ]
    files, catch = [f for r, f in enumerate(files) if r not in low], np.delete(catch, low, axis=0)
    if not files:
        raise CamexpError(f"every rater's catch accuracy is below --min-catch {min_catch:g}: nothing left to tally")
    votes, ms, image_of = vote_matrix(files, key)
    fast = (ms < fast_ms).sum(1)
    first = np.array([kind(it) == "trial" and not it["repeat"] for it in key["items"]])
    order = np.argsort(image_of[first])
    image_votes = votes[:, first][:, order]  # raters × images, images in key order
    frac = image_fractions(image_votes)
    rated = ~np.isnan(frac).any(1)
    n = int(rated.sum())
    names = {"A": key["methods"]["A"], "B": key["methods"]["B"]}
    labels = [f"A: {names['A']}", f"B: {names['B']}", "same"]
    rows = _score_rows(frac[rated], image_votes[:, rated], labels, n_boot, level, seed)
    warnings = list(notes)
    known = {names["A"], names["B"]} <= set(PAPER)
    paper_col = [PAPER[names["A"]], PAPER[names["B"]], PAPER["same"]] if compare_paper and known else None
    if compare_paper and not known:
        warnings.append(
            f"--compare-paper: the paper compared gradcam and gradcam++, not {names['A']} and "
            f"{names['B']}; no published numbers to show"
        )
    if paper_col:
        rows += [
            {"quantity": "paper_score", "subject": label, "value": v, "n": PAPER_IMAGES}
            for label, v in zip(labels, paper_col, strict=True)
        ]
    wins, losses, ties, p = sign_test(frac)
    rows.append({"quantity": "sign_test_p", "subject": "A vs B", "value": p, "n": wins + losses})
    kappa, kappa_n, alpha = agreement(image_votes[:, rated]) if n else (np.nan, 0, np.nan)
    rows += [
        {"quantity": "fleiss_kappa", "subject": "A/B/same", "value": kappa, "n": kappa_n},
        {"quantity": "krippendorff_alpha", "subject": "A/B/same", "value": alpha, "n": n},
    ]
    cons = consistency(votes, key)
    agree = cons[:, 1].sum() / cons[:, 0].sum() if cons[:, 0].sum() else np.nan
    rows.append(
        {"quantity": "intra_rater_agreement", "subject": "all raters", "value": agree, "n": int(cons[:, 0].sum())}
    )
    median_s = float(np.nanmedian(ms)) / 1000 if np.isfinite(ms).any() else np.nan
    rows.append(
        {"quantity": "median_response_s", "subject": "all answers", "value": median_s, "n": int(np.isfinite(ms).sum())}
    )
    rows += [
        {"quantity": "fast_answers", "subject": f.rater, "value": int(fast[r]), "n": len(f.answers)}
        for r, f in enumerate(files)
    ]
    rows += [
        {"quantity": "catch_accuracy", "subject": f.rater, "value": c[1] / c[0], "n": int(c[0])}
        for f, c in [*zip(files, catch, strict=True), *excluded]
        if c[0]
    ]
    rows += [
        {"quantity": "excluded_rater", "subject": f.rater, "value": c[1] / c[0], "n": int(c[0])} for f, c in excluded
    ]
    classes = [key["images"][k]["class_name"] for k in image_of[first][order]]
    per_class = pd.DataFrame(frac, columns=labels).assign(cls=classes)[rated].groupby("cls", sort=False)
    for cls, part in per_class:
        rows += [
            {"quantity": "class_score", "subject": f"{cls} | {label}", "value": part[label].sum(), "n": len(part)}
            for label in labels
        ]
    frame = pd.DataFrame(
        rows, columns=["quantity", "subject", "value", "lo", "hi", "lo_two_level", "hi_two_level", "n"]
    )
    incomplete = [f for f in files if not f.complete]
    md = _markdown(
        key,
        files,
        notes,
        incomplete,
        frame,
        labels,
        n,
        level,
        (wins, losses, ties, p),
        cons,
        ms,
        paper_col,
        per_class,
        catch,
    )
    if min_catch is not None:
        md += f"\nRaters with catch accuracy below {min_catch:g} excluded: {len(excluded)}.\n"
    md += (
        f"\nAnswers faster than {fast_ms:g} ms (too fast to have looked at both maps; counted, but check the "
        f"rater): {int(fast.sum())} of {int(np.isfinite(ms).sum())}.\n"
    )
    stem = Path(STUDY_REPORT).stem
    md_path, csv_path = write_files(out or study_dir, stem, md, {stem: frame}, float_format=None)
    warnings += [
        f"{f.where}: rater {f.shown} answered {len(f.answers)} of {f.items} items (incomplete; the "
        "answers given are counted)"
        for f in incomplete
    ]
    warnings += [
        f"rater {f.shown}: {fast[r]} of {len(f.answers)} answers faster than {fast_ms:g} ms"
        for r, f in enumerate(files)
        if fast[r]
    ]
    return StudyReport(md, frame, warnings, (md_path, csv_path))


def _markdown(
    key: dict[str, Any],
    files: list[AnswerFile],
    notes: list[str],
    incomplete: list[AnswerFile],
    frame: pd.DataFrame,
    labels: list[str],
    n: int,
    level: float,
    sign: tuple[int, int, int, float],
    cons: np.ndarray,
    ms: np.ndarray,
    paper: list[float] | None,
    per_class: Any,
    catch: np.ndarray,
) -> str:
    """study_report.md: the score table first (as in the paper), then tests, agreement, classes and raters;
    method names, class names and rater ids escaped (camexp/report/markdown.py)."""
    pct = int(round(100 * level))
    score = frame[frame.quantity == "score"].reset_index(drop=True)
    share = frame[frame.quantity == "score_percent"].reset_index(drop=True)
    head = ["choice", f"score (of {n} images)", "%", f"{pct} % CI, images", f"{pct} % CI, images and raters"]
    if paper:
        head += [f"paper (of {PAPER_IMAGES})", "paper %"]
    lines = [
        f"# Human-trust study {markdown_text(key['study_id'])}",
        "",
        markdown_text(
            f"Method A: {key['methods']['A']}; method B: {key['methods']['B']}. {len(files)} rater(s), "
            f"{n} image(s) with answers of {len(key['images'])}; {sum(it['repeat'] for it in key['items'])} "
            "repeated item(s). Score: each image's votes normalised to sum to 1, summed over images (paper §4.2)."
        ),
        "",
    ]
    rows = []
    for j, label in enumerate(labels):
        s, p = score.iloc[j], share.iloc[j]
        cells = [
            label,
            f"{s.value:.2f}",
            f"{p.value:.2f}",
            f"{s.lo:.2f} – {s.hi:.2f}",
            f"{s.lo_two_level:.2f} – {s.hi_two_level:.2f}",
        ]
        if paper:
            cells += [f"{paper[j]:.2f}", f"{100 * paper[j] / PAPER_IMAGES:.2f}"]
        rows.append(cells)
    lines.append(_table(rows, head))
    wins, losses, ties, p = sign
    kappa, alpha = (frame.loc[frame.quantity == q, "value"].iloc[0] for q in ("fleiss_kappa", "krippendorff_alpha"))
    kappa_n = int(frame.loc[frame.quantity == "fleiss_kappa", "n"].iloc[0])
    agree, repeats = cons[:, 1].sum(), cons[:, 0].sum()
    lines += [
        "",
        f'- Sign test, A vs B per image ("same" left out): more raters preferred A on {wins} image(s), B on '
        f"{losses}, equal on {ties}; exact two-sided p = {p:.4g} (scipy.stats.binomtest).",
        f"- Agreement over A / B / same: Fleiss' κ = {kappa:.3f} over the {kappa_n} image(s) every rater answered "
        f"(statsmodels); Krippendorff's α (nominal) = {alpha:.3f} (krippendorff).",
        f"- Intra-rater consistency: {agree} of {repeats} repeated answers (sides swapped) agree with the first "
        f"showing ({100 * agree / repeats:.1f} %)."
        if repeats
        else "- Intra-rater consistency: no repeated item answered twice.",
        f"- Median response time: {np.nanmedian(ms) / 1000:.2f} s per item." if np.isfinite(ms).any() else "",
        "",
        "## Per class",
        "",
        _table(
            [[cls, len(part), *(f"{part[label].sum():.2f}" for label in labels)] for cls, part in per_class],
            ["class", "images", *labels],
        ),
        "",
        "## Raters",
        "",
    ]
    medians = [np.nanmedian(t) / 1000 if np.isfinite(t).any() else np.nan for t in ms]
    raters = [
        [
            f.shown,
            " + ".join(p.name for p in f.sources),
            f"{len(f.answers)} of {f.items}",
            f"{cons[r, 1]} of {cons[r, 0]}",
            f"{medians[r]:.2f}",
            f"{catch[r, 1]} of {catch[r, 0]}",
        ]
        for r, f in enumerate(files)
    ]
    lines.append(_table(raters, ["rater", "answers from", "answered", "repeats agreeing", "median s", "catch right"]))
    if notes or incomplete:
        lines += [
            "",
            f"Raters merged from several sources or excluded: {len(notes)}; incomplete answer sets: {len(incomplete)} "
            "(their answers are counted).",
            "",
        ]
        lines += [f"- {markdown_text(note)}" for note in notes]
        lines += [
            f"- {markdown_text(f'incomplete: {f.where} (rater {f.shown}, {len(f.answers)} of {f.items})')}"
            for f in incomplete
        ]
    return "\n".join(lines) + "\n"


def _table(rows: list[list[Any]], head: list[str]) -> str:
    """Rows under `head` as the project's Markdown table (escaped cells), the cells printed as they are."""
    return markdown_table(pd.DataFrame(rows, columns=head), index=False, disable_numparse=True)
