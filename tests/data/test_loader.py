"""The run's loader (camexp/data/loader.py) and stage timer (camexp/profile.py): `runtime.workers: auto`,
`runtime.decode: gpu` (its device path run on the CPU here: the same code with device="cpu"), and the
per-stage times in run.json and `camexp run --profile`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

import camexp.profile as profile_mod
from camexp.cli import app
from camexp.config import DatasetConfig
from camexp.data import build_dataset
from camexp.data.images import BadImageError
from camexp.data.loader import MAX_CUDA_WORKERS, loader_settings, make_loader, resolve_workers
from camexp.data.transforms import InputSpec
from camexp.errors import ConfigError
from camexp.profile import StageTimer, lap, profiled, table

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
SPEC = InputSpec((224, 224), "bicubic", 0.875, "center", (0.5,) * 3, (0.5,) * 3)  # Lite0's geometry


# --- the stage timer -----------------------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A fake perf_counter: the test sets now[0]."""
    now = [0.0]
    monkeypatch.setattr(profile_mod.time, "perf_counter", lambda: now[0])
    return now


def test_each_lap_charges_the_time_since_the_previous_mark(clock: list[float]) -> None:
    with profiled(CPU) as timer:
        for t, name in [(1.0, "load"), (3.5, "model"), (4.0, "load"), (7.0, "model"), (7.25, "write")]:
            clock[0] = t
            lap(name)
    lap("after")  # no active profile: nothing recorded anywhere
    s = timer.summary()
    assert {k: v["seconds"] for k, v in s["stages"].items()} == {"load": 1.5, "model": 5.5, "write": 0.25}
    assert {k: v["marks"] for k, v in s["stages"].items()} == {"load": 2, "model": 2, "write": 1}
    assert s["total_s"] == 7.25 and s["stages"]["model"]["share"] == round(5.5 / 7.25, 4)
    assert s["synchronized"] is False  # nothing to synchronise on a CPU, even when asked


def test_the_innermost_profile_takes_the_laps(clock: list[float]) -> None:
    with profiled(CPU) as outer:
        with profiled(CPU) as inner:
            clock[0] = 2.0
            lap("x")
        clock[0] = 5.0
        lap("y")
    assert inner.seconds == {"x": 2.0} and outer.seconds == {"y": 5.0}


def test_the_table_puts_the_slowest_stage_first_and_says_when_gpu_times_are_unsynchronised() -> None:
    timer = StageTimer(CUDA, synchronize=False, seconds={"a": 1.0, "b": 3.0}, calls={"a": 2, "b": 2})
    lines = table(timer.summary()).splitlines()
    assert lines[1].split()[:2] == ["b", "3.000"] and lines[2].split()[:2] == ["a", "1.000"]
    assert lines[3].split() == ["total", "4.000"] and "not synchronised" in lines[4]
    assert "not synchronised" not in table(StageTimer(CPU, seconds={"a": 1.0}, calls={"a": 1}).summary())


def test_the_profile_keeps_the_host_peak_of_the_loop() -> None:
    """A 600 MiB array made and freed inside the profile puts the host peak it reports at the resident set just
    before (read from /proc) plus the array; in a fresh interpreter, whose earlier peak is only its imports."""
    code = (
        "import os, numpy as np, torch\n"
        "from camexp.profile import profiled\n"
        "with profiled(torch.device('cpu')) as t:\n"
        "    before = t.summary()['peak_host_rss_mib']\n"
        "    now = int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20\n"
        "    a = np.ones(600 * 2**20, dtype=np.uint8); del a\n"
        "print(before, now, t.summary()['peak_host_rss_mib'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, now, after = map(float, out.split())
    assert now + 595 <= after <= max(before, now + 600) + 20


def test_the_profile_reports_the_cuda_allocators_peak_from_the_loops_start(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(f"reset {device}"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3 * 2**20 + 2**19)
    s = StageTimer(CUDA, seconds={"a": 1.0}, calls={"a": 1}).summary()
    assert calls == [f"reset {CUDA}"] and s["peak_device_mib"] == 3.5
    assert table(s).splitlines()[-1].endswith(f", {CUDA} 4 MiB allocated")
    assert StageTimer(CPU).summary()["peak_device_mib"] is None


# --- workers and decode settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "local", "expected"), [(2, "1", 1), (16, "1", MAX_CUDA_WORKERS), (16, "4", 3), (1, "1", 0)]
)
def test_auto_workers_on_cuda_leave_one_core_to_the_main_process(
    monkeypatch: pytest.MonkeyPatch, cores: int, local: str, expected: int
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local)  # torchrun's processes on this node share its cores
    assert resolve_workers("auto", CUDA) == expected
    assert resolve_workers(5, CUDA) == 5 and resolve_workers(0, CPU) == 0


def test_loader_settings_per_device() -> None:
    cpu = loader_settings("auto", "cpu", CPU)
    assert (cpu.workers, cpu.workers_setting, cpu.pin_memory, cpu.persistent_workers) == (0, "auto", False, False)
    assert cpu.decoder.startswith("PIL ")
    two = loader_settings(2, "cpu", CPU)
    assert (two.workers, two.prefetch_factor, two.persistent_workers) == (2, 2, False)
    gpu = loader_settings(3, "gpu", CUDA)  # resolving needs no GPU
    assert (gpu.pin_memory, gpu.persistent_workers, gpu.prefetch_factor) == (True, True, 2)
    assert gpu.decoder.startswith("torchvision ") and "decode_jpeg on cuda" in gpu.decoder


def test_gpu_decode_without_a_cuda_device_is_a_config_error() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^runtime.decode: gpu decodes JPEGs on a CUDA device, but the run's "
        r"device is cpu; use runtime.decode: cpu",
    ):
        loader_settings("auto", "gpu", CPU)


# --- decoding on the device (run on the CPU) -----------------------------------------------------------------


def _batches(
    root: Path, decode_device: torch.device | None, workers: int = 0, batch_size: int = 4, **dataset: object
) -> list[dict]:
    ds = build_dataset(DatasetConfig(root=root, **dataset), SPEC)
    return list(
        make_loader(
            ds, list(range(len(ds))), batch_size, CPU, loader_settings(workers, "cpu", CPU), decode_device=decode_device
        )
    )


GPU = pytest.param(CUDA, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"))


@pytest.mark.parametrize("device", [CPU, GPU])
def test_device_decoding_gives_the_cpu_paths_crop_and_only_resampling_rounding(
    ilsvrc_images: Path, tmp_path: Path, record_property, device: torch.device
) -> None:
    """Real ILSVRC2012 JPEGs (and a PNG, which takes the CPU path) through both paths, the device one in a worker
    process: same ids, order, scales and shapes; pixels equal up to the two resamplers' rounding, so the same
    crop of the same resize (a crop off by one pixel would differ by far more on photographs)."""
    for path in sorted(ilsvrc_images.iterdir())[:6]:
        (tmp_path / path.name).symlink_to(path)
    Image.open(ilsvrc_images / "ILSVRC2012_val_00000001.JPEG").save(tmp_path / "png_one.png")
    cpu = _batches(tmp_path, None)
    dev = [{**b, "image": b["image"].cpu()} for b in _batches(tmp_path, device, workers=1)]
    assert len(cpu) == len(dev) == 2
    worst = []
    for a, b in zip(cpu, dev, strict=True):
        assert a["image_id"] == b["image_id"] and torch.equal(a["index"], b["index"])
        assert torch.equal(a["scale"], b["scale"]) and not b["bad"].any()
        assert b["image"].shape == a["image"].shape and "encoded" not in b
        diff = (a["image"] - b["image"]).abs()
        worst += diff.amax(dim=(1, 2, 3)).tolist()
        assert diff.mean() < 2 / 255  # measured: about 0.3/255 on average
        for i, image_id in enumerate(a["image_id"]):
            if image_id == "png_one":  # not a JPEG: the CPU path, bit for bit
                assert torch.equal(a["image"][i], b["image"][i])
    record_property("max_abs_pixel_difference_per_image", worst)


def test_device_decoding_refuses_a_lanczos_model_before_the_first_batch(tmp_path: Path, make_jpeg) -> None:
    from dataclasses import replace

    make_jpeg(tmp_path / "a.jpg")
    ds = build_dataset(DatasetConfig(root=tmp_path), replace(SPEC, interpolation="lanczos"))
    with pytest.raises(ConfigError, match="^runtime.decode: gpu resizes tensors, which have no lanczos resampling"):
        make_loader(ds, [0], 1, CPU, loader_settings(0, "cpu", CPU), decode_device=CPU)


def test_device_decoding_maps_boxes_from_the_header_size(tmp_path: Path, make_jpeg) -> None:
    """A VOC-style item with boxes: the encoded path maps them without decoding, to the CPU path's boxes."""
    from camexp.data.base import ImageDataset, Item
    from camexp.data.transforms import PixelTransform

    make_jpeg(tmp_path / "a.jpg", size=(400, 300))
    item = Item(
        tmp_path / "a.jpg",
        "a",
        boxes=((40.0, 30.0, 200.0, 150.0), (300.0, 0.0, 400.0, 300.0)),
        box_labels=(1, 2),
        size=(400, 300),
    )
    ds = ImageDataset([item], PixelTransform(SPEC))
    cpu, enc = ds.sample(0), ds.sample(0, encoded=True)
    assert enc["image"] is None and enc["encoded"].dtype == torch.uint8
    # 400x300 -> shorter side 256: 341x256 (x 0.8525, y 0.8533); centre crop 224: left 58, top 16; clamped.
    expected = torch.tensor(
        [
            [0.0, 30 * 256 / 300 - 16, 200 * 341 / 400 - 58, 150 * 256 / 300 - 16],
            [300 * 341 / 400 - 58, 0.0, 224.0, 224.0],
        ]
    )
    torch.testing.assert_close(enc["boxes"], expected)
    torch.testing.assert_close(cpu["boxes"], expected)


def test_a_bad_jpeg_on_the_device_path_is_named_or_flagged(tmp_path: Path, ilsvrc_images: Path) -> None:
    """The header reads (so the worker passes the bytes on) but the body does not decode: the device decoder
    refuses it, and the CPU path names the file, or flags it when bad images are skipped."""
    good = ilsvrc_images / "ILSVRC2012_val_00000001.JPEG"
    (tmp_path / "a.JPEG").symlink_to(good)
    (tmp_path / "b.JPEG").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BadImageError, match=r"b.JPEG: cannot read image \(OSError: image file is truncated"):
        _batches(tmp_path, CPU)
    (batch,) = _batches(tmp_path, CPU, skip_bad_images=True)
    assert batch["bad"].tolist() == [False, True] and not batch["image"][1].any()


# --- a run through the CLI -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_records_the_loader_and_the_stages_and_profile_prints_them(tmp_path: Path, photo_dir: Path) -> None:
    cfg = {
        "name": "prof",
        "dataset": {"kind": "folder", "root": str(photo_dir), "limit": 3},
        "model": {"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"},
        "methods": ["gradcam", "gradcam++"],
        "metrics": ["avg_drop", "insertion"],
        "perturbation": {"steps": 4},
        "runtime": {"device": "cpu", "batch_size": 2},
        "output": {"dir": str(tmp_path / "out")},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["run", str(path), "--no-progress", "--profile"])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert meta["loader"]["workers"] == 0 and meta["loader"]["workers_setting"] == "auto"
    assert meta["config"]["runtime"]["profile"] is True
    stages = meta["profile"]["stages"]
    assert set(stages) == {
        profile_mod.WAIT_LOADER,
        profile_mod.SHARED_PASS,
        "method gradcam",
        "method gradcam++",
        profile_mod.EXPLANATION_FORWARDS,
        "job insertion",
        profile_mod.RECORDS,
    }
    assert {name: v["marks"] for name, v in stages.items()} == dict.fromkeys(stages, 2)  # 2 batches
    assert meta["profile"]["total_s"] <= meta["wall_time_s"]
    for name in stages:
        assert name in res.output
    assert f"3 images at {meta['images_per_s']} images/s" in res.output


def test_gpu_decode_on_a_machine_without_cuda_is_one_line_naming_the_key(
    tmp_path: Path, make_jpeg, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # `auto` must resolve to the CPU, GPU or not
    make_jpeg(tmp_path / "img" / "a.jpg")
    cfg = {
        "name": "gpu",
        "dataset": {"kind": "folder", "root": str(tmp_path / "img")},
        "model": {"name": "resnet18", "weights": "random"},
        "runtime": {"device": "auto", "decode": "gpu"},
        "output": {"dir": str(tmp_path / "out")},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "runtime.decode: gpu decodes JPEGs on a CUDA device, but the run's device is cpu" in res.output


@pytest.mark.parametrize(("value", "shown"), [(-1, "-1"), ("many", "'many'"), (1.5, "1.5")])
def test_a_bad_workers_value_is_one_line_naming_the_key(tmp_path: Path, value: object, shown: str) -> None:
    from camexp.experiment import load_experiment

    path = tmp_path / "cfg.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "w",
                "dataset": {"root": str(tmp_path)},
                "model": {"name": "resnet18"},
                "runtime": {"workers": value},
            }
        )
    )
    with pytest.raises(ConfigError) as e:
        load_experiment(path)
    assert str(e.value) == (
        f"{path}: runtime.workers: Value error, give a number of worker processes (0, 1, ...) or auto, not {shown}"
    )
