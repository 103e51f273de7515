"""`camexp report html`: the whole site of a results folder, recomputed from the records like every report.

OUT/index.html       every run and the leaderboard of every rankable metric (values, intervals as plots, ranks)
OUT/reports.html     the study, distillation, consistency and reliability reports the folder holds
OUT/runs/<run>/      index.html (the run's tables, figures, provenance), gallery.html + image.html (runs with
                     kept maps) with gallery-data.js and img/ (thumbnails and full-size overlays, reused)
OUT/assets/          site.css and site.js (camexp's own; nothing is loaded from the network)
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from camexp.config import ExperimentConfig
from camexp.distill.report import distill_markdown, distill_summaries
from camexp.errors import CamexpError
from camexp.io import write_text_atomically
from camexp.provenance import mixed_note
from camexp.report.html.gallery import (
    NO_MAPS,
    GalleryFiles,
    gallery_data,
    has_maps,
    photographs,
    write_data,
    write_images,
)
from camexp.report.html.page import copy_assets, document, esc, interval_svg, markdown_html, num, table
from camexp.report.leaderboard import SummarizedRuns, leaderboard, summarized_runs
from camexp.report.runs import find_studies, open_run, study_section
from camexp.report.tables import RunSummary, cells, fmt_cell, summary_tables
from camexp.report.uncertainty import label_of, lower_is_better, marked_cell, marks, pairwise_markdown

RUNS = "runs"
REPORT_FILES = ("consistency.md", "reliability.md")  # written by `camexp report consistency|reliability`


@dataclass
class Site:
    """What a build wrote: the top page, each run's gallery files, and warnings (folders skipped)."""

    index: Path
    galleries: dict[str, tuple[str, GalleryFiles]] = field(default_factory=dict)  # site folder -> (run, files)
    warnings: list[str] = field(default_factory=list)

    def size_lines(self) -> list[str]:
        """Per run with a gallery: images made and reused, and the bytes per image and method."""
        lines = []
        for label, g in self.galleries.values():
            per = g.bytes / max(1, g.images * (g.methods + 1))
            lines.append(
                f"{label}: gallery of {g.images} images x {g.methods} methods: {g.made} image files made, "
                f"{g.reused} reused; {g.bytes / 1e6:.2f} MB, {per / 1e3:.1f} kB per image and method "
                "(thumbnail + full size; the photograph counts as one more method)"
            )
        return lines


def slug(results_dir: Path, run_dir: Path) -> str:
    """A run's folder name in the site: its path below the results folder, made safe, and a short hash of
    that path (two paths that read alike stay apart; the same run gets the same folder on every build)."""
    rel = run_dir.relative_to(results_dir).as_posix() if run_dir != results_dir else run_dir.name
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", rel).strip("._")[:60] or "run"
    return f"{safe}-{hashlib.sha256(rel.encode()).hexdigest()[:6]}"


def _strong(text: str) -> str:
    """An escaped table cell with the Markdown bold of the best value (`**36.84**`) as <strong>."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", esc(text))


def _status(meta: dict[str, Any], s: RunSummary) -> str | None:
    """What a partial run lacks (as `camexp report table` words it: its state, the images recorded, how to
    resume), with a mixed-software note; None for a whole run."""
    notes = [s.status] if s.status else []
    if note := mixed_note(meta):
        notes.append(note)
    return " ".join(notes) or None


def _board_cell(r: pd.Series, h: str, mark: str, scale: tuple[float, float]) -> str:
    """One leaderboard cell: the value and interval as `camexp report leaderboard` prints them, with every
    digit in data-v (for sorting), and the interval plot."""
    value, lo, hi = (float(r[c]) for c in (h, f"{h} lo", f"{h} hi"))
    text = marked_cell(value, lo, hi, mark) if pd.notna(value) else "—"
    return (
        f'<td data-v="{num(value)}"><span class="txt">{_strong(text)}</span>{interval_svg(value, lo, hi, scale)}</td>'
    )


def _scale(frame: pd.DataFrame, h: str) -> tuple[float, float]:
    """The axis of one run's column of interval plots: from its lowest lower bound to its highest upper bound."""
    lo = pd.concat([frame[h], frame[f"{h} lo"]]).astype(float)
    hi = pd.concat([frame[h], frame[f"{h} hi"]]).astype(float)
    return float(lo.min()), float(hi.max())


def _leaderboards(results_dir: Path, runs: SummarizedRuns) -> str:
    """One sortable table per rankable metric (methods x runs, each cell its value, interval and an interval
    plot; mean rank), and the choice of metric. Its headers sort (the runs table above links the run pages)."""
    keys = list(
        dict.fromkeys(
            k
            for _, s in runs.read
            if s.stats is not None
            for k in s.stats.per_method.metric
            if lower_is_better(k) is not None
        )
    )
    if not keys:
        return "<p>No metric with a known direction to rank by.</p>"
    options = "".join(f'<option value="{esc(k)}">{esc(label_of(k))} ({esc(k)})</option>' for k in keys)
    parts = [f'<p><label>metric <select id="metric">{options}</select></label></p>']
    for key in keys:
        _, frame, _ = leaderboard(results_dir, key, runs=runs)
        headers = [c for c in frame.columns if f"{c} lo" in frame.columns and f"{c} hi" in frame.columns]
        run_marks = [marks(s.stats, key) if s.stats is not None else {} for _, s in runs.read]
        scales = [_scale(frame, h) for h in headers]
        head = "<th>method</th><th>mean rank</th><th>runs ranked</th>" + "".join(f"<th>{esc(h)}</th>" for h in headers)
        rows = []
        for _, r in frame.iterrows():
            tds = [
                f"<th>{esc(r['method'])}</th>",
                f'<td data-v="{num(r["mean_rank"])}">{esc(fmt_cell(float(r["mean_rank"])))}</td>',
                f'<td data-v="{num(r["runs_ranked"])}">{int(r["runs_ranked"])}</td>',
            ]
            tds += [_board_cell(r, h, mk.get(r["method"], ""), sc) for h, mk, sc in zip(headers, run_marks, scales)]
            rows.append(f"<tr>{''.join(tds)}</tr>")
        parts.append(
            f'<section class="board" data-metric="{esc(key)}"><h3>{esc(label_of(key))}</h3>'
            f'<div class="scroll"><table class="sortable leaderboard"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div></section>"
        )
    legends = dict.fromkeys(s.stats.legend() for _, s in runs.read if s.stats is not None)
    parts += [markdown_html(legend) for legend in legends]
    parts.append(
        "<p>Mean rank: over the complete runs that list the method (1 = best, ties share their mean rank); "
        "incomplete runs are shown over their recorded images but not ranked. Click a header to sort. The plots "
        "show each value (dot) and its interval (line) on one axis per run.</p>"
    )
    return "\n".join(parts)


def _overview(results_dir: Path, runs: SummarizedRuns, slugs: list[str], galleries: set[str], reports: bool) -> str:
    """The top page: every run (backbone x data set), its state and pages, the folders skipped, the boards."""
    rows = []
    for (_, s), meta, label, name in zip(runs.read, runs.metas, runs.labels, slugs):
        status = _status(meta, s)
        state = f'<span class="partial-tag">partial</span>: {esc(status)}' if status else "complete"
        gallery = f'<a href="{RUNS}/{name}/gallery.html">{"gallery" if name in galleries else "none (why)"}</a>'
        rows.append(
            f'<tr><th><a href="{RUNS}/{name}/index.html">{esc(label)}</a></th><td>{esc(s.name)}</td>'
            f'<td data-v="{s.images}">{s.images}</td><td>{state}</td><td>{gallery}</td></tr>'
        )
    skipped = "".join(f"<li>{esc(w)}</li>" for w in runs.skipped)
    return "\n".join(
        [
            f"<h1>camexp report: {esc(results_dir)}</h1>",
            f"<p>{len(runs.read)} runs, recomputed from their records"
            + (
                ' · <a href="reports.html">study, distillation, consistency and reliability reports</a>'
                if reports
                else ""
            )
            + "</p>",
            "<h2>Runs</h2>",
            '<div class="scroll"><table class="sortable runs"><thead><tr><th>backbone × data set</th><th>run</th>'
            f"<th>images</th><th>state</th><th>gallery</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>",
            f'<h2>Not reported</h2><ul class="skipped">{skipped}</ul>' if skipped else "",
            "<h2>Leaderboard</h2>",
            _leaderboards(results_dir, runs) if runs.read else "<p>No run could be read.</p>",
        ]
    )


def _copy(src: Path, dst: Path) -> None:
    """A figure into the site, unless the copy there has its size and time already (a rebuild writes none)."""
    have, want = (dst.stat() if dst.exists() else None), src.stat()
    if have is None or (have.st_size, have.st_mtime_ns) != (want.st_size, want.st_mtime_ns):
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def _figures(run_dir: Path, folder: Path) -> str:
    """The run's figures (every PNG in its folder: curves, MPRT, distributions), copied beside the page."""
    pngs = sorted(run_dir.glob("*.png"))
    if not pngs:
        return "<p>This run drew no figures.</p>"
    out = []
    for png in pngs:
        _copy(png, folder / "figures" / png.name)
        src = "figures/" + esc(png.name)
        out.append(
            f'<figure><a href="{src}"><img src="{src}" alt="{esc(png.stem)}"></a>'
            f"<figcaption>{esc(png.stem)}</figcaption></figure>"
        )
    return f'<div class="figs">{"".join(out)}</div>'


def _provenance(meta: dict[str, Any]) -> str:
    """Config, software, device and images of the run, from its run.json; the whole file folded below."""
    software = meta.get("software") or {}
    dataset = meta.get("dataset") or {}
    facts = {
        "config file": meta.get("config_path"),
        "model": (meta.get("config") or {}).get("model", {}).get("name"),
        "explained layer": meta.get("layer"),
        "input": json.dumps(meta.get("input")),
        "data set": f"{dataset.get('kind')} at {dataset.get('root_resolved') or dataset.get('root')}",
        "images": f"{dataset.get('selected', meta.get('images_in_dataset'))} selected, "
        f"{meta.get('images_recorded')} recorded, {meta.get('images_bad')} unreadable; ids sha256 "
        f"{dataset.get('ids_sha256')}",
        "device": f"{meta.get('device')} ({meta.get('device_name')}), amp {meta.get('amp')}, "
        f"world size {meta.get('world_size')}",
        "camexp": f"commit {software.get('camexp_commit')}, source sha256 {software.get('camexp_source_sha256')}",
        "versions": ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items()),
        "uv.lock sha256": meta.get("uv_lock_sha256"),
        "status": meta.get("status"),
        "wall time": f"{meta.get('wall_time_s')} s ({meta.get('images_per_s')} images/s)",
    }
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts.items())
    config = yaml.safe_dump(meta.get("config"), sort_keys=False, allow_unicode=True)
    return (
        f"<table>{rows}</table><details><summary>config (resolved)</summary><pre>{esc(config)}</pre></details>"
        f"<details><summary>run.json</summary><pre>{esc(json.dumps(meta, indent=2, default=str))}</pre></details>"
    )


def _main_table(s: RunSummary) -> str:
    """The paper-style table: metrics as rows, methods as columns, each cell its value and interval (best in
    bold, ≈ not distinguishable from it), every digit of the value in data-v."""
    text = cells(s)
    head = "<th>metric</th>" + "".join(f"<th>{esc(m)}</th>" for m in text.columns)
    rows = []
    for label in text.index:
        tds = "".join(
            f'<td data-v="{num(s.main.at[label, m]) if pd.api.types.is_number(s.main.at[label, m]) else ""}">'
            f"{_strong(str(text.at[label, m]))}</td>"
            for m in text.columns
        )
        rows.append(f"<tr><th>{esc(label)}</th>{tds}</tr>")
    body = "".join(rows)
    return f'<div class="scroll"><table class="main"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _run_page(run_dir: Path, meta: dict[str, Any], s: RunSummary, label: str, folder: Path, gallery: bool) -> str:
    status = _status(meta, s)
    parts = [
        f"<h1>{esc(s.name)}</h1>",
        f"<p>{esc(label)} · {s.images} images · <code>{esc(run_dir)}</code> · "
        + (
            '<a href="gallery.html">image gallery</a>'
            if gallery
            else '<a href="gallery.html">no image gallery (why)</a>'
        )
        + "</p>",
        f'<p class="partial">{esc(status)}</p>' if status else "",
        "<h2>Summary</h2>",
        _main_table(s),
        markdown_html(s.stats.legend()) if s.stats is not None else "",
    ]
    for title, frame in summary_tables(s, False):
        parts += [f"<h3>{esc(title)}</h3>", f'<div class="scroll">{table(frame.map(lambda v: fmt_cell(v, 3)))}</div>']
    if s.stats is not None and (pairs := pairwise_markdown(s.stats)):
        parts += [
            "<h2>Paired comparisons</h2><p>Bootstrap intervals over the same images; exact sign test for win %.</p>",
            '<div class="scroll md">' + markdown_html(pairs).replace("<table>", '<table class="sortable">') + "</div>",
        ]
    notes = [*s.result.notes, *s.extra_notes]
    parts += [f'<p class="note">{esc(n)}</p>' for n in notes]
    parts += ["<h2>Figures</h2>", _figures(run_dir, folder), "<h2>Provenance</h2>", _provenance(meta)]
    return "\n".join(parts)


def _gallery_pages(
    run_dir: Path, meta: dict[str, Any], s: RunSummary, label: str, folder: Path, root: str
) -> GalleryFiles | None:
    """gallery.html and image.html of a run, with their data and images; a page saying how to get them when
    the run kept no maps."""
    title = f"{s.name}: images"
    if not has_maps(run_dir):
        body = f'<h1>{esc(title)}</h1><p class="note" id="no-maps">{esc(NO_MAPS)}; then build this site again.</p>'
        write_text_atomically(folder / "gallery.html", document(title, body, root))
        (folder / "image.html").unlink(missing_ok=True)
        return None
    run = open_run(run_dir)
    cfg = ExperimentConfig.model_validate(run.config)
    dataset, note = photographs(run_dir, meta)
    try:
        files = write_images(run_dir, meta, dataset, cfg.method_names, folder)
    except CamexpError as e:  # a shard unreadable, maps missing for some images: this gallery only says why
        body = f'<h1>{esc(title)}</h1><p class="note" id="no-maps">No gallery: {esc(e)}</p>'
        write_text_atomically(folder / "gallery.html", document(title, body, root))
        raise
    files.note = note
    write_data(
        folder, gallery_data(run_dir, cfg, run.records, f"{s.name} ({label})", dataset.class_names if dataset else None)
    )
    head = f'<p><a href="index.html">{esc(s.name)}</a> · {esc(label)}</p>'
    warn = f'<p class="note">{esc(note)}</p>' if note else ""
    gallery_body = (
        f"{head}<h1>{esc(title)}</h1>{warn}<p>Each card: the image, then every method's map over it. Sort and filter "
        "by any per-image value (a method's, or the difference of two methods'), the explained class and whether "
        'the top-1 prediction is correct; a click opens the image.</p><div id="gallery"></div>'
    )
    scripts = ("gallery-data.js",)
    write_text_atomically(folder / "gallery.html", document(title, gallery_body, root, scripts))
    write_text_atomically(
        folder / "image.html", document(f"{s.name}: image", f'{head}{warn}<div id="image"></div>', root, scripts)
    )
    return files


def _reports(results_dir: Path, out: Path) -> str:
    """The study, distillation, consistency and reliability reports the folder holds, as HTML ('' if none)."""
    parts = [markdown_html(study_section(folder)) for folder in find_studies(results_dir)]
    distills, warnings = distill_summaries(results_dir)
    parts += [markdown_html(distill_markdown(d)) for d in distills]
    parts += [f'<p class="note">{esc(w)}</p>' for w in warnings]
    for name in REPORT_FILES:
        for path in sorted(results_dir.rglob(name)):
            if out in path.parents:
                continue
            figures = []
            for png in sorted(path.parent.glob(f"{path.stem}*.png")):
                target = out / "reports" / slug(results_dir, path.parent) / png.name
                _copy(png, target)
                rel = target.relative_to(out).as_posix()
                figures.append(f'<figure><img src="{esc(rel)}" alt="{esc(png.stem)}"></figure>')
            parts += [f"<h2>{esc(path.relative_to(results_dir))}</h2>", markdown_html(path.read_text()), *figures]
    return "\n".join(f'<div class="md">{p}</div>' for p in parts)


def build_site(results_dir: Path, out: Path, stats: dict[str, Any] | None = None) -> Site:
    """Every page of the site of `results_dir` into `out` (created; pages rewritten, image files reused)."""
    runs = summarized_runs(results_dir, stats)
    if not runs.read and not runs.skipped:
        raise CamexpError(f"{results_dir}: no run folders (holding run.json) found below it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        copy_assets(out)
    except OSError as e:
        raise CamexpError(
            f"{out}: cannot write the site ({e.strerror or e}); choose another folder with --out"
        ) from None
    site = Site(out / "index.html", warnings=list(runs.skipped))
    slugs = [slug(results_dir, d) for d, _ in runs.read]
    for (run_dir, s), meta, label, name in zip(runs.read, runs.metas, runs.labels, slugs):
        folder = out / RUNS / name
        folder.mkdir(parents=True, exist_ok=True)
        try:
            gallery = _gallery_pages(run_dir, meta, s, label, folder, "../../")
        except CamexpError as e:
            gallery = None
            site.warnings.append(f"{run_dir}: no gallery: {str(e).partition(chr(10))[0]}")
        if gallery is not None:
            site.galleries[name] = (label, gallery)
        body = _run_page(run_dir, meta, s, label, folder, gallery is not None)
        write_text_atomically(folder / "index.html", document(f"{s.name}: {label}", body, "../../"))
    reports = _reports(results_dir, out)
    if reports:
        write_text_atomically(out / "reports.html", document("camexp reports", f"<h1>Reports</h1>{reports}", ""))
    body = _overview(results_dir, runs, slugs, set(site.galleries), bool(reports))
    write_text_atomically(site.index, document(f"camexp report: {results_dir}", body, ""))
    return site
