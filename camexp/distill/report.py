"""A distill results folder as a table: per arm the final metric of each seed, mean ± sd over seeds, the paired
difference from the `ce` arm over the same seeds with a 95 % Student t interval, the cost of a training step
relative to `ce`, and with --compare-paper the poster's value beside ours."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from camexp.distill.train import HISTORY, META
from camexp.errors import CamexpError
from camexp.provenance import mixed_note
from camexp.report.markdown import markdown_table, markdown_text
from camexp.report.paper import PUBLISHED_DISTILL, Setting, setting_mismatch
from camexp.report.tables import Report
from camexp.stats.bootstrap import t_interval

LEVEL = 0.95
SIZE_TOLERANCE = 0.1  # a student within 10 % of the published parameter count is the paper's size


def student_size(paper: str, parameters: int) -> tuple[str, bool]:
    """How the student's parameter count compares with the one `paper` publishes, and whether it is off by more
    than SIZE_TOLERANCE."""
    theirs = PUBLISHED_DISTILL[paper].student_parameters
    ratio = parameters / theirs
    text = f"{parameters / 1e6:.4g} M parameters, {ratio:.2f}× the {paper} student's {theirs / 1e6:.4g} M"
    return text, abs(ratio - 1) > SIZE_TOLERANCE


@dataclass
class DistillSummary:
    """One distill folder: `table` (one row per arm), notes, and what it is compared with."""

    folder: Path
    name: str
    paper: str | None
    metric: str
    split: str
    table: pd.DataFrame
    setting: Setting
    notes: list[str] = field(default_factory=list)
    student_parameters: int | None = None

    def warning(self) -> str | None:
        """Why the paper's numbers are not this run's setting (another student, data set or student size), or None."""
        if not self.paper:
            return None
        why = [w] if (w := setting_mismatch(self.paper, self.setting)) else []
        if self.student_parameters:
            size, off = student_size(self.paper, self.student_parameters)
            why += [f"student {self.setting.backbone} has {size}"] if off else []
        return "; ".join(why) or None


def find_distill_runs(results_dir: Path) -> list[Path]:
    """Every folder below `results_dir` holding a distill.json, sorted."""
    return sorted(p.parent for p in results_dir.rglob(META))


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CamexpError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None


def final_values(folder: Path, arms: list[str], seeds: list[int], epochs: int) -> dict[str, dict[int, dict[str, Any]]]:
    """arm -> seed -> last history row, for the (arm, seed) pairs that finished all `epochs`."""
    out: dict[str, dict[int, dict[str, Any]]] = {a: {} for a in arms}
    for arm in arms:
        for seed in seeds:
            path = folder / arm / f"seed{seed}" / HISTORY
            if path.is_file():
                history = _read(path)["history"]
                if len(history) >= epochs:
                    out[arm][seed] = {
                        **history[epochs - 1],
                        "step_seconds": float(np.mean([h["step_seconds"] for h in history[:epochs]])),
                    }
    return out


def summarize_distill(folder: Path, compare_paper: bool = False) -> DistillSummary:
    """The table of a distill folder from its distill.json and the arms' history.json files."""
    meta = _read(folder / META)
    if not isinstance(meta, dict) or meta.get("format", "").split("/")[0] != "camexp-distill":
        raise CamexpError(f"{folder / META}: not a camexp distill results file")
    cfg = meta["config"]
    arms, seeds, epochs = cfg["arms"], cfg["seeds"], cfg["train"]["epochs"]
    done = final_values(folder, arms, seeds, epochs)
    base = done.get("ce", {})
    base_step = np.mean([r["step_seconds"] for r in base.values()]) if base else float("nan")
    paper = PUBLISHED_DISTILL.get(meta.get("paper") or "") if compare_paper else None
    rows = []
    for arm in arms:
        vals = {s: r["metric"] for s, r in sorted(done[arm].items())}
        v = np.array(list(vals.values()), dtype=float)
        row: dict[str, Any] = {
            "arm": arm,
            "seeds": len(v),
            "values": ", ".join(f"{x:.4g}" for x in v) or "—",
            "mean": v.mean() if len(v) else np.nan,
            "sd": v.std(ddof=1) if len(v) > 1 else np.nan,
        }
        common = sorted(set(vals) & set(base))
        diff = np.array([vals[s] - base[s]["metric"] for s in common])
        mean, lo, hi = t_interval(diff, LEVEL) if arm != "ce" and len(diff) else (np.nan, np.nan, np.nan)
        row.update(diff=mean, lo=lo, hi=hi, paired_seeds=len(diff) if arm != "ce" else 0)
        steps = [r["step_seconds"] for r in done[arm].values()]
        row["step_x_ce"] = float(np.mean(steps) / base_step) if steps else np.nan
        if paper is not None:
            row["paper"] = paper.values.get(arm, np.nan)
        rows.append(row)
    kind = cfg["dataset"]["kind"]
    setting = Setting(
        cfg["student"]["name"].removeprefix("tv:").split(".")[0],
        f"voc{cfg['dataset'].get('year') or ''}" if kind == "voc" else kind,
    )
    summary = DistillSummary(
        folder,
        meta["name"],
        meta.get("paper"),
        meta["metric"],
        cfg["train"].get("val_split", "?"),
        pd.DataFrame(rows),
        setting,
        student_parameters=meta.get("student_parameters"),
    )
    if paper is not None and summary.paper and summary.student_parameters:
        summary.notes.append(f"Student: {student_size(summary.paper, summary.student_parameters)[0]}.")
    missing = [f"{a} seed {s}" for a in arms for s in seeds if s not in done[a]]
    if missing:
        more = " ..." if len(missing) > 6 else ""
        summary.notes.append(
            f"Incomplete: {len(missing)} of {len(arms) * len(seeds)} (arm, seed) runs have not "
            f"finished {epochs} epochs ({', '.join(missing[:6])}{more})."
        )
    if mixed := mixed_note(meta):
        summary.notes.append(mixed)
    tm = meta.get("teacher_maps")
    if tm:
        summary.notes.append(
            f"Teacher maps: {tm['mode']}; teacher map {tm['teacher_map_size']} -> student map "
            f"{tm['student_map_size']}{' (resized bilinearly)' if tm['resized_bilinear'] else ''}."
        )
    return summary


def _num(v: float, digits: int = 4) -> str:
    return "—" if v != v else f"{v:.{digits}g}"


def distill_markdown(s: DistillSummary, compare_paper: bool = False) -> str:
    """The summary as Markdown: one row per arm; with `compare_paper`, the poster's value and any setting warning."""
    lines = [
        f"## {markdown_text(s.name)} (distill)",
        "",
        f"Metric: {s.metric} on split {s.split!r}, after the last epoch.",
    ]
    if compare_paper and s.paper:
        lines.append(f"Compared with {PUBLISHED_DISTILL[s.paper].caption}; column `paper`.")
        if w := s.warning():
            lines.append(f"**Warning: {w}.**")
    rows = []
    for r in s.table.to_dict("records"):
        ci = f" [{_num(r['lo'])}, {_num(r['hi'])}]" if r["lo"] == r["lo"] else ""
        row = {
            "arm": r["arm"],
            "seeds": r["seeds"],
            "per seed": r["values"],
            "mean ± sd": f"{_num(r['mean'])} ± {_num(r['sd'])}",
            f"Δ vs ce ({LEVEL:.0%} CI, paired seeds)": "—" if r["arm"] == "ce" else f"{_num(r['diff'])}{ci}",
            "step time × ce": _num(r["step_x_ce"], 3),
        }
        if "paper" in r:
            row["paper"] = _num(r["paper"])
        rows.append(row)
    lines += ["", markdown_table(pd.DataFrame(rows), index=False), "", *map(markdown_text, s.notes)]
    return "\n".join(lines).rstrip() + "\n"


def distill_frame(s: DistillSummary) -> pd.DataFrame:
    """Long rows as `camexp report table`'s CSV: run, metric, method (the arm), value (the mean over seeds), and the
    paired difference from ce with its interval."""
    t = s.table
    out = pd.DataFrame(
        {
            "run": s.name,
            "metric": s.metric,
            "method": t["arm"],
            "value": t["mean"],
            "diff_vs_ce": t["diff"],
            "diff_lo": t["lo"],
            "diff_hi": t["hi"],
        }
    )
    if "paper" in t:
        out["paper"], out["compared_to"] = t["paper"], s.paper
    return out


def distill_summaries(results_dir: Path, compare_paper: bool = False) -> tuple[list[DistillSummary], list[str]]:
    """Summaries of every distill folder below `results_dir`; one that cannot be read is skipped with a warning."""
    out, warnings = [], []
    for folder in find_distill_runs(results_dir):
        try:
            out.append(summarize_distill(folder, compare_paper))
        except (CamexpError, KeyError, TypeError) as e:
            warnings.append(f"skipped {folder}: {e}")
    return out, warnings


def with_distill(rep: Report, summaries: list[DistillSummary], warnings: list[str], compare_paper: bool) -> Report:
    """`camexp report table`'s report with the distill folders' tables appended (Markdown and CSV rows)."""
    parts = [rep.markdown.rstrip(), ""] + [distill_markdown(s, compare_paper) for s in summaries]
    if compare_paper:
        warnings = warnings + [f"{s.folder}: {w}" for s in summaries if (w := s.warning())]
    frame = pd.concat([rep.frame, *(distill_frame(s) for s in summaries)], ignore_index=True)
    return Report("\n".join(parts), frame, rep.summaries, rep.warnings + warnings, rep.studies)
