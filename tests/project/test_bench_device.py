"""scripts/bench's device options (--device, --model, --amp, --decode, --cycled, --device-diff) and the prepared
GPU check (scripts/gpu_check.sh), run on the CPU: what a later session runs once on a lent GPU must run here."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """scripts.bench's argument parsing (`parse_args`; importing it registers the `bench-cycled` data set kind)."""
    return importlib.import_module("scripts.bench.__main__")


@pytest.fixture(scope="module")
def common() -> ModuleType:
    """What the benchmarks share: Where, the model config, a run's config, the floor ratios."""
    return importlib.import_module("scripts.bench.common")


def run_bench(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "scripts.bench", *args], check=True, cwd=REPO)


def test_device_arguments_parse(bench: ModuleType, common: ModuleType) -> None:
    a = bench.parse_args(
        ["--loader", "--device", "cpu", "--model", "vgg16.tv_in1k", "--amp", "bf16", "--cycled"]
        + ["--loader-methods", "gradcam", "layercam"]
    )
    assert a.where == common.Where(torch.device("cpu"), "vgg16.tv_in1k", "bf16", "cpu")
    assert a.methods == ["gradcam", "layercam"] and a.cycled
    assert bench.parse_args([]).where == common.CPU  # the CPU bench as it was
    assert bench.parse_args(["--family", "--methods", "gradcam", "cam"]).methods == ["gradcam", "cam"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--loader", "--decode", "gpu"], "--decode gpu decodes JPEGs on a CUDA device"),
        (["--model", "vgg11"], "apply to --loader, --family, --attributions, --decode-diff, --device-diff and --rss"),
        (
            ["--metrics", "--amp", "bf16"],
            "apply to --loader, --family, --attributions, --decode-diff, --device-diff and --rss",
        ),
    ],
)
def test_device_argument_mistakes_are_one_line(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where no CUDA device is present")
def test_cuda_without_a_gpu_is_one_line(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(["--loader", "--device", "cuda"])
    assert exit_.value.code == 2
    assert "no CUDA device is available here" in capsys.readouterr().err


def test_where_resolves_as_a_run_does(common: ModuleType, tmp_path: Path) -> None:
    """The model's weights, the forward chunk and the run's runtime keys on each device (no GPU needed to build
    a config): Lite0 keeps its package weights, anything else is random; 8 images per forward on the CPU, all at
    once (None) on CUDA, as docs/guide/speed-gpu.md's GPU settings give them."""
    assert common.loaded_config(common.LITE0).weights == "efficientnet-lite0-package"
    assert common.loaded_config("vgg16.tv_in1k").weights == "random"
    gpu = common.Where(torch.device("cuda"), "vgg16.tv_in1k", "bf16", "gpu")
    assert (common.CPU.chunk, gpu.chunk) == (8, None)
    cfg = common.camexp_config(tmp_path, 4, 2, "auto", tmp_path / "run", where=gpu)
    assert (cfg.runtime.device, cfg.runtime.amp, cfg.runtime.decode) == ("cuda", "bf16", "gpu")
    assert (cfg.model.name, cfg.model.weights) == ("vgg16.tv_in1k", "random")


def test_cycled_repeats_the_folder(common: ModuleType, tmp_path: Path, make_jpeg) -> None:
    """`--cycled`: 5 items from 2 files, the files in turn, every id unique (a run keys records by id)."""
    from camexp.config import DatasetConfig
    from camexp.data import list_dataset

    for name in ("a.jpg", "b.jpg"):
        make_jpeg(tmp_path / name)
    items = list_dataset(DatasetConfig(kind=common.CYCLED, root=tmp_path, limit=5)).items
    assert [Path(it.path).name for it in items] == ["a.jpg", "b.jpg", "a.jpg", "b.jpg", "a.jpg"]
    assert len({it.image_id for it in items}) == 5


def test_loader_section_on_vgg16(ilsvrc_images: Path, tmp_path: Path) -> None:
    """--loader on VGG-16 (random weights) at toy size: camexp, both floors, the ratios computed from the medians,
    and the environment block every GPU figure needs."""
    argv = ["--loader", "--device", "cpu", "--model", "vgg16.tv_in1k", "--images", str(ilsvrc_images)]
    argv += ["--cycled", "--limit", "2", "--batch-size", "2", "--rounds", "1", "--loader-workers", "0"]
    argv += ["--methods", "gradcam", "gradcam++", "--out", str(tmp_path / "b.json")]
    run_bench(*argv)
    d = json.loads((tmp_path / "b_loader.json").read_text())
    med = d["median_s"]
    assert set(med) == {"model_floor", "camexp@0", "loader_floor@0"} and all(v > 0 for v in med.values())
    assert d["images"] == 2 and d["methods"] == ["gradcam", "gradcam++"] and d["chunk"] == 8
    assert d["ratios"]["camexp@0/model_floor throughput"] == pytest.approx(med["model_floor"] / med["camexp@0"])
    assert d["loader"]["workers"] == 0 and d["loader"]["decode"] == "cpu"
    env = d["environment"]
    assert (env["device"], env["model"], env["weights"], env["amp"]) == ("cpu", "vgg16.tv_in1k", "random", "off")
    assert env["torch"] == torch.__version__ and env["argv"][1:] == argv
    assert {"driver", "cuda", "cudnn", "tf32", "torchvision", "timm", "command"} <= set(env)


def test_device_diff_of_the_cpu_against_itself(ilsvrc_images: Path, tmp_path: Path) -> None:
    """--device-diff with the CPU on both sides: two runs of the same images must give the same records, so every
    target agrees and |dO| = |dY| = 0 exactly; a misaligned join of the two record files would not."""
    run_bench(
        "--device-diff",
        "--images",
        str(ilsvrc_images),
        "--limit",
        "3",
        "--batch-size",
        "2",
        "--out",
        str(tmp_path / "b.json"),
    )
    d = json.loads((tmp_path / "b_device.json").read_text())
    assert (d["images"], d["records"], d["targets_agree"], d["all_targets_agree"]) == (3, 6, 3, True)
    assert d["abs_dO"]["max"] == 0.0 and d["abs_dY"]["max"] == 0.0 and d["within_1e-4"]
    assert d["runs"]["cpu"]["device"] == d["runs"]["device"]["device"] == "cpu"


@pytest.mark.slow
def test_gpu_check_runs_every_step_on_the_cpu(ilsvrc_images: Path, tmp_path: Path) -> None:
    """`DEVICE=cpu SMALL=1 bash scripts/gpu_check.sh`: every step but nvJPEG (CUDA only) writes its JSON into
    the one merged file, and the log says which step was skipped and why."""
    env = {**os.environ, "DEVICE": "cpu", "SMALL": "1", "PYTHON": sys.executable}
    env.update(IMAGES=str(ilsvrc_images), OUT=str(tmp_path))
    subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], check=True, cwd=REPO, env=env)
    merged = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(merged) == [
        "lite0_f32_loader",
        "vgg16_f32_loader",
        "lite0_diff_device",
        "vgg16_diff_device",
        "lite0_bf16_loader",
        "vgg16_bf16_loader",
        "vgg16_scorecam_family",
        "lite0_memory_rss",
        "lite0_decode_diff_decode",
    ]
    assert merged["lite0_bf16_loader"]["environment"]["amp"] == "bf16"
    assert merged["lite0_diff_device"]["all_targets_agree"]
    assert [r["images"] for r in merged["lite0_memory_rss"]["rss_runs"]] == [4, 8]
    log = (tmp_path / "gpu_check.log").read_text()
    assert "lite0_nvjpeg: skipped, --decode gpu needs a CUDA device" in log


def test_gpu_summary_verdicts(
    common: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """gpu_summary.py on hand-made step JSONs: 100 images, loader floor 1 s, model floor 2 s, camexp 2.1 s. The
    slower floor (the bottleneck) is the model's: camexp at 2/2.1 = 0.95 of it meets 0.9; 100/2.1 = 48 img/s
    misses VGG-16's 170; pytorch-grad-cam's ScoreCAM at 5 s against camexp's 2 s is 2.5x, short of 3x. Memory:
    host 1,000 -> 1,030 MiB (1.03) is within 5 %, device 100 -> 120 MiB (1.2) is not."""
    spec = importlib.util.spec_from_file_location("gpu_summary", REPO / "scripts" / "gpu_summary.py")
    assert spec and spec.loader
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    env = {"model": "vgg16.tv_in1k", "amp": "off", "decode": "cpu", "command": "python -m scripts.bench ..."}
    env |= dict.fromkeys(("device", "device_name", "driver", "cuda", "cudnn", "tf32", "torch", "torchvision"))
    env |= {"timm": None, "cpus": 16}
    med = {"model_floor": 2.0, "camexp@auto": 2.1, "loader_floor@auto": 1.0}
    loader = {"images": 100, "median_s": med, "images_per_s": {k: 100 / v for k, v in med.items()}}
    loader["ratios"] = common.floor_ratios(med, "@auto")
    family = {"images": 8, "median_s": {"camexp scorecam": 2.0, "pytorch-grad-cam ScoreCAM": 5.0}, "ratios": {}}
    runs = [
        {"images": 200, "self_mib": 1000.0, "device_mib": 100.0},
        {"images": 2000, "self_mib": 1030.0, "device_mib": 120.0},
    ]
    memory = {"rss_runs": runs, "rss_ratio_largest_smallest": 1.03, "device_ratio_largest_smallest": 1.2}
    steps = (("vgg16_f32_loader", loader), ("vgg16_scorecam_family", family), ("lite0_memory_rss", memory))
    for name, d in steps:
        (tmp_path / f"{name}.json").write_text(json.dumps({**d, "environment": env}))
    monkeypatch.setattr(sys, "argv", ["gpu_summary.py", str(tmp_path), str(tmp_path / "merged.json")])
    summary.main()
    out = capsys.readouterr().out
    assert "target camexp@auto >= 0.9 x the slower floor: met" in out
    assert "target VGG-16 float32 >= 170 img/s: NOT met" in out
    assert "target Score-CAM >= 3x pytorch-grad-cam's: 2.50x, NOT met" in out
    assert "target rss_ratio_largest_smallest <= 1.05: 1.030, met" in out
    assert "target device_ratio_largest_smallest <= 1.05: 1.200, NOT met" in out
    assert "runs of 200, 2000" in out and "2000 images: host 1,030 MiB, device 120 MiB" in out
    assert set(json.loads((tmp_path / "merged.json").read_text())) == {name for name, _ in steps}
