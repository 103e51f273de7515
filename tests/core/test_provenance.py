"""Which software wrote a run folder: recorded per invocation, compared on resume, an override recorded and shown."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from camexp import provenance
from camexp.errors import CamexpError
from tests.e2e.test_cli import invoke, one_line, write_config


def test_the_source_hash_changes_with_any_edit_and_only_then(tmp_path: Path) -> None:
    pkg = tmp_path / "camexp"
    shutil.copytree(provenance.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before = provenance.source_hash(pkg)
    assert provenance.source_hash(pkg) == before and before == provenance.source_hash()  # a copy hashes alike
    (pkg / "notes.txt").write_text("not code")
    assert provenance.source_hash(pkg) == before
    maps = pkg / "explain" / "maps.py"
    maps.rename(pkg / "explain" / "maps2.py")  # the same bytes under another name: another program
    renamed = provenance.source_hash(pkg)
    assert renamed != before
    (pkg / "explain" / "maps2.py").rename(maps)
    assert provenance.source_hash(pkg) == before
    maps.write_text(maps.read_text() + "\n# one more line\n")  # any edit, even a comment
    assert provenance.source_hash(pkg) not in (before, renamed)


def test_the_lock_hash_is_the_checkouts_own_lock(tmp_path: Path) -> None:
    import hashlib

    expected = hashlib.sha256((provenance.PACKAGE.parent / "uv.lock").read_bytes()).hexdigest()
    assert provenance.lock_hash() == expected
    assert provenance.lock_hash(tmp_path / "camexp") is None  # installed without a lock beside it


SOFT = {"camexp_source_sha256": "a" * 64, "torch": "2.9.0", "timm": "1.0.20", "uv_lock_sha256": "b" * 64}


def test_a_change_in_any_compared_key_is_refused_with_what_changed_and_the_way_out(tmp_path: Path) -> None:
    assert provenance.check_same(SOFT, dict(SOFT), tmp_path, allow=False) == {}
    # the commit and the other versions are recorded, not compared: a README-only commit resumes
    assert provenance.check_same(SOFT, {**SOFT, "camexp_commit": "x", "versions": {}}, tmp_path, allow=False) == {}
    for key, value in [("torch", "2.10.0"), ("timm", "1.1.0"), ("camexp_source_sha256", "c" * 64)]:
        with pytest.raises(CamexpError) as e:
            provenance.check_same(SOFT, {**SOFT, key: value}, tmp_path, allow=False)
        shown = value[:12] if len(value) == 64 else value
        assert f"{key}: " in str(e.value) and f"-> {shown}" in str(e.value)
        assert all(way in str(e.value) for way in ("--fresh", "--out", "--allow-software-change"))
    with pytest.raises(CamexpError, match="recorded no software versions"):
        provenance.check_same(None, SOFT, tmp_path, allow=False)
    got = provenance.check_same(SOFT, {**SOFT, "torch": "2.10.0"}, tmp_path, allow=True)
    assert got == {"torch": ["2.9.0", "2.10.0"]}


def test_mixed_note_names_the_changed_keys() -> None:
    assert provenance.mixed_note({}) is None and provenance.mixed_note({"mixed_software": []}) is None
    note = provenance.mixed_note(
        {"mixed_software": [{"changed": {"torch": [1, 2]}}, {"changed": {"timm": [1, 2], "torch": [2, 3]}}]}
    )
    assert note is not None and "2 invocation(s)" in note and "timm, torch changed" in note


@pytest.mark.slow
def test_extending_a_run_with_other_software_is_refused_or_recorded_and_reported(
    tmp_path: Path, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    assert invoke("run", write_config(tmp_path, photo_dir, dataset__limit=2), "--no-progress").exit_code == 0
    first = json.loads((out / "run.json").read_text())
    assert first["software"] == first["invocations"][0]["software"] and first["mixed_software"] == []
    assert first["software"]["camexp_source_sha256"] == provenance.source_hash()
    records = (out / "per_image.csv").read_bytes()

    real = provenance.software()
    monkeypatch.setattr(provenance, "software", lambda: {**real, "torch": "0.0-other"})
    larger = write_config(tmp_path, photo_dir, "three.yaml", dataset__limit=3)
    refused = invoke("run", larger, "--no-progress")
    assert refused.exit_code == 2, refused.output
    line = one_line(refused)
    assert f"{out}: this run was written by other software (torch: {real['torch']} -> 0.0-other)" in line
    assert (out / "per_image.csv").read_bytes() == records  # nothing was touched
    assert json.loads((out / "run.json").read_text()) == first

    allowed = invoke("run", larger, "--no-progress", "--allow-software-change")
    assert allowed.exit_code == 0, allowed.output
    meta = json.loads((out / "run.json").read_text())
    assert [i["images_before"] for i in meta["invocations"]] == [0, 2]
    assert meta["invocations"][1]["software_override"] == {"torch": [real["torch"], "0.0-other"]}
    assert meta["mixed_software"] == [{"images_before": 2, "changed": {"torch": [real["torch"], "0.0-other"]}}]
    assert "Mixed software: 1 invocation(s)" in (out / "summary.md").read_text()
    table = invoke("table", tmp_path)
    assert table.exit_code == 0 and "Mixed software" in table.output

    again = invoke("run", larger, "--no-progress")  # the same (other) software again: nothing new to override
    assert again.exit_code == 0, again.output
    assert len(json.loads((out / "run.json").read_text())["mixed_software"]) == 1
    assert invoke("run", larger, "--no-progress", "--fresh").exit_code == 0  # the way out the line names
