"""camexp/resume.py without a model: which folders a config may resume or extend, and the words of a refusal."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from camexp.config import FINGERPRINT_VERSION, ExperimentConfig, fingerprint_hash
from camexp.data.base import Item
from camexp.errors import CamexpError
from camexp.results import COLUMNS
from camexp.resume import changed_keys, check_config, check_images, fingerprinted_of


def config(tmp_path: Path, **kw) -> ExperimentConfig:
    base = {
        "name": "r",
        "dataset": {"root": str(tmp_path), "limit": 2},
        "model": {"name": "resnet18"},
        "output": {"dir": str(tmp_path / "out")},
    }
    return ExperimentConfig.model_validate({**base, **kw})


def previous(cfg: ExperimentConfig) -> dict:
    """run.json as the runner writes it (the parts check_config reads)."""
    return {
        "config": cfg.model_dump(mode="json"),
        "fingerprint": fingerprint_hash(fingerprinted_of(cfg)),
        "fingerprint_version": FINGERPRINT_VERSION,
    }


def records(ids: list[str], methods: tuple[str, ...] = ("gradcam", "gradcam++")) -> pd.DataFrame:
    rows = [{"index": i, "image_id": image_id, "method": m} for i, image_id in enumerate(ids) for m in methods]
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def items(ids: list[str]) -> list[Item]:
    return [Item(Path(f"{i}.jpg"), i) for i in ids]


def test_the_refusal_names_every_key_that_differs(tmp_path: Path) -> None:
    old = config(tmp_path)
    new = config(tmp_path, score="softmax", model={"name": "resnet50"}, runtime={"batch_size": 3})
    with pytest.raises(CamexpError) as e:
        check_config(previous(old), new, tmp_path)
    assert (
        f"{tmp_path}: holds a run of a different configuration (model.name: 'resnet18' -> 'resnet50', "
        "score: 'logit' -> 'softmax'); pass --fresh" in str(e.value)
    )  # batch size changes no value: not named


def test_a_run_of_another_fingerprint_version_is_refused_naming_its_writer(tmp_path: Path) -> None:
    """No key-by-key comparison under rules that have changed: one line, which camexp wrote it, the ways out."""
    cfg = config(tmp_path)
    old = {k: v for k, v in previous(cfg).items() if k != "fingerprint_version"}  # written before versions existed
    old["versions"] = {"camexp": "0.1.0"}
    with pytest.raises(CamexpError) as e:
        check_config(old, cfg, tmp_path)
    assert str(e.value) == (
        f"{tmp_path}: holds a run written by camexp 0.1.0 under fingerprint version 1; this camexp compares "
        f"configurations under version {FINGERPRINT_VERSION}. Pass --fresh to start over or --out to write elsewhere"
    )
    newer = {**previous(cfg), "fingerprint_version": FINGERPRINT_VERSION + 1, "software": {"camexp_commit": "f" * 40}}
    with pytest.raises(
        CamexpError, match=rf"camexp an unknown version \(commit {'f' * 12}\) under fingerprint version"
    ):
        check_config(newer, cfg, tmp_path)
    check_config(previous(cfg), cfg, tmp_path)


def test_metric_settings_are_compared_as_their_metric_reads_them(tmp_path: Path) -> None:
    """Settings written out at their defaults resume a run recorded without them; a changed one is named."""
    check_config(previous(config(tmp_path)), config(tmp_path, road={"noise": 0.01}), tmp_path)  # the default
    old = config(tmp_path, road={"noise": 0.02})
    with pytest.raises(CamexpError, match=r"road.noise: 0.02 -> 0.0\)"):
        check_config(previous(old), config(tmp_path, road={"noise": 0.0, "neighbours": "road"}), tmp_path)
    check_config(previous(old), config(tmp_path, road={"noise": 0.02}, perturbation={"curves": True}), tmp_path)


def test_a_new_limit_or_subset_passes_the_config_check_only(tmp_path: Path) -> None:
    old = config(tmp_path)
    check_config(previous(old), config(tmp_path, dataset={"root": str(tmp_path), "limit": 4}), tmp_path)
    check_config(previous(old), config(tmp_path, dataset={"root": str(tmp_path), "subset": {"every": 2}}), tmp_path)
    with pytest.raises(CamexpError, match="not written by camexp"):
        check_config({"epochs": 3}, old, tmp_path)


def test_records_must_keep_their_image_at_their_index(tmp_path: Path) -> None:
    done = records(["a", "b"])
    check_images(config(tmp_path), done, items(["a", "b", "c", "d"]), tmp_path)  # a larger limit: extension
    with pytest.raises(CamexpError, match=r"1 of its 2 recorded images .* \(index 1 was b, is no longer selected\)"):
        check_images(config(tmp_path), done, items(["a"]), tmp_path)  # a smaller limit
    with pytest.raises(CamexpError, match=r"\(index 1 was b, is now c\)"):
        check_images(config(tmp_path), done, items(["a", "c", "d"]), tmp_path)  # renumbered (subset, renamed file)


def test_a_per_batch_analysis_added_after_records_is_refused_a_record_figure_is_not(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    old = config(tmp_path)
    check_config(previous(old), config(tmp_path, analyses=["mloc"]), out)  # nothing recorded yet: fine
    records(["a", "b"]).to_csv(out / "per_image.csv", index=False)
    with pytest.raises(CamexpError, match=r"analyses \['mloc'\] were added after 2 images were recorded"):
        check_config(previous(old), config(tmp_path, analyses=["mloc"]), out)
    check_config(previous(old), config(tmp_path, analyses=["drop_dist", "relperf_plot"]), out)
    check_config(previous(config(tmp_path, analyses=["mloc"])), old, out)  # dropping one is fine


def test_changed_keys_walks_nested_dicts() -> None:
    assert changed_keys({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 5}, "e": 3}) == ["a.c", "d", "e"]


@pytest.mark.parametrize("marker", ["study.json", "distill.json"])
def test_a_run_into_a_study_or_distillation_folder_is_refused_before_it_writes(tmp_path: Path, marker: str) -> None:
    """A run's records and resume state would mix with a study's page or a distillation's checkpoints."""
    from camexp.runner import run_experiment

    cfg = config(tmp_path, model={"name": "resnet18", "weights": "random"})
    cfg.output_dir.mkdir()
    (cfg.output_dir / marker).write_text("{}")
    what = {"study.json": "a study", "distill.json": "a distillation"}[marker]
    with pytest.raises(CamexpError, match=f"holds {what} \\({marker}\\); a camexp run needs a folder of its own"):
        run_experiment(cfg, progress=False)
    assert sorted(p.name for p in cfg.output_dir.iterdir()) == [marker]
