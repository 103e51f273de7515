"""CSV formula injection (audit): text that a spreadsheet would run is written with a leading quote (OWASP's
advice) in every CSV camexp writes, numbers are not touched, and camexp reads its own files back exactly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from camexp.cli import app
from camexp.csvsafe import csv_text, neutralise, restored
from camexp.results import read_records

cli = CliRunner()
ATTACK = "=cmd|' /C calc'!A0"


def test_formula_text_gets_a_quote_numbers_and_plain_text_do_not() -> None:
    """Each prefix OWASP lists (=, +, -, @, tab, CR) is quoted in cells, column labels and the index; a float
    -0.5, text that is a plain decimal number and ordinary text are written as they are."""
    df = pd.DataFrame(
        {
            "method": [ATTACK, "+1+1", "-2+3", "@SUM(A1)", "\tx", "gradcam", "-0.50", "'plain"],
            "value": [-0.5, 1.0, -2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        }
    ).set_index("method")
    df.columns = ["=HYPERLINK(1)"]
    lines = csv_text(df, float_format="%.2f").splitlines()
    assert lines == [
        "method,'=HYPERLINK(1)",
        f"'{ATTACK},-0.50",
        "'+1+1,1.00",
        "'-2+3,-2.00",
        "'@SUM(A1),3.00",
        "'\tx,4.00",
        "gradcam,5.00",
        "-0.50,6.00",
        "'plain,7.00",
    ]
    assert neutralise("\rx") == "'\rx" and neutralise(-0.5) == -0.5 and neutralise(None) is None


def test_what_camexp_reads_back_is_exactly_what_it_wrote() -> None:
    """`restored` undoes the quote, also for text that itself began with quotes before a formula character."""
    ids = [ATTACK, "'=x", "''+y", "-0.5", "-1", "'plain", "a'=b", "@", "img_001"]
    df = pd.DataFrame({"image_id": ids, "o": [-0.5] * len(ids)})
    text = csv_text(df, index=False)
    assert "'''+y" in text and "\n-0.5,-0.5\n" in text
    back = restored(pd.read_csv(io.StringIO(text), dtype={"image_id": str}))
    assert back["image_id"].tolist() == ids and back["o"].tolist() == [-0.5] * len(ids)


def test_a_run_with_formula_names_writes_quoted_csvs_and_resumes_with_its_own_ids(
    tmp_path: Path, photo_dir: Path
) -> None:
    """Image ids from file names and a method's name reach per_image.csv, summary.csv and the report CSV quoted;
    read_records gives the ids and names back unchanged, so extending the run to more images resumes the
    recorded ones (a changed id would be refused as a moved image)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    attack = ATTACK.replace("/", "-")  # a file name holds no slash
    names = [attack, "-1", "@x", "plain"]
    for name, src in zip(names, sorted(photo_dir.iterdir()), strict=True):
        (photos / f"{name}.png").write_bytes(src.read_bytes())
    ids = sorted(names)  # the folder kind lists images by file name
    config = {
        "name": "csv",
        "dataset": {"kind": "folder", "root": str(photos), "limit": 2},
        "model": {"name": "resnet18", "weights": "random"},
        "methods": ["gradcam", {"name": "+evil", "method": "gradcam++"}],
        "runtime": {"device": "cpu", "batch_size": 2},
        "output": {"dir": str(tmp_path / "out")},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.invoke(app, ["run", str(path), "--no-progress"]).exit_code == 0
    config["dataset"].pop("limit")
    path.write_text(yaml.safe_dump(config))
    result = cli.invoke(app, ["run", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    meta = json.loads((out / "run.json").read_text())
    assert (meta["images_resumed"], meta["images_processed"]) == (2, 2)
    raw = (out / "per_image.csv").read_text()
    assert f"'{attack}" in raw and "'+evil" in raw and "'@x" in raw and ",-1," in raw
    records = read_records(out / "per_image.csv")
    assert records["image_id"].tolist() == [i for i in ids for _ in range(2)]
    assert set(records["method"]) == {"gradcam", "+evil"}
    assert (out / "summary.csv").read_text().splitlines()[0] == "metric,gradcam,'+evil"
    result = cli.invoke(app, ["table", str(out), "--format", "csv", "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert "'+evil" in (tmp_path / "rep" / "report.csv").read_text() and ",'+evil," in result.stdout
