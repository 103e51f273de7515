"""`camexp plot RUN_DIR`: redraw a run's analysis figures from its saved files, without running a model."""

from __future__ import annotations

from pathlib import Path

from camexp.analyses import ANALYSES
from camexp.config import ExperimentConfig
from camexp.errors import CamexpError
from camexp.results import RECORDS, RUN_JSON, read_json


def redraw(run_dir: Path, names: list[str] | None = None) -> list[str]:
    """Redraw the analyses `names` (default: those the run's config enabled) into `run_dir`; links that
    summary.md lacks (an analysis drawn only now) are appended to it. Returns the Markdown lines."""
    if not (run_dir / RUN_JSON).is_file() or not (run_dir / RECORDS).is_file():
        raise CamexpError(f"{run_dir}: not a run folder (needs {RUN_JSON} and {RECORDS})")
    cfg = ExperimentConfig.model_validate(read_json(run_dir / RUN_JSON)["config"])
    names = names or cfg.analyses
    unknown = [n for n in names if n not in ANALYSES]
    if unknown or not names:
        raise CamexpError(
            f"--analyses: {'unknown ' + str(unknown) if unknown else 'the run enabled none'}; "
            f"give some of {sorted(ANALYSES)}"
        )
    lines = [line for n in names for line in ANALYSES[n].make(cfg).finish(run_dir)]
    summary = run_dir / "summary.md"
    if summary.exists():
        text = summary.read_text()
        missing = [line for line in lines if line.startswith(("![", "### ")) and line not in text]
        if missing:
            summary.write_text(text.rstrip("\n") + "\n" + "\n".join(lines) + "\n")
    return lines
