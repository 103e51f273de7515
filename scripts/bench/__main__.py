r"""Side-by-side speed of camexp against the protocol's floor and against pytorch-grad-cam and torchcam.

Every contender runs the same protocol (top-1 target; Grad-CAM, Grad-CAM+, Grad-CAM++ maps; one
confidence on each explanation image E = L * I) on the same real images, the same model
(tf_efficientnet_lite0 at 224, the offline package weights) and the same batch size, in one process, in
alternating rounds; the median round is reported. All contenders read the images through the same
DataLoader (JPEG decode + resize + crop), so the comparison is of the explanation work. The floor is
plain torch's default (NCHW); since camexp runs convolutions channels_last and, on CPU, the explanation
images in cache-sized forwards (camexp.accel.forward_chunk), the floor in that layout, the floor with
those chunks too (the tightest floor) and the floor without image loading are reported beside it.

  python -m scripts.bench [--batch-size 16] [--rounds 3] [--limit N] [--out results/bench.json]
  python -m scripts.bench --rss [--rss-sizes 200 2000]   # peak RSS of camexp runs, each in a subprocess
  python -m scripts.bench --only stats    # the bootstrap alone: 50,000 images x 10 methods x 1,000 resamples
  python -m scripts.bench --metrics [--limit 4] [--steps 20] [--road-percentiles 10 50 90]
      # per-batch metrics on the same maps: insertion/deletion vs torchcam's DeletionInsertionMetric and vs
      # the floor (the same number of bare forwards), ROAD vs pytorch-grad-cam's ROADCombined
  python -m scripts.bench --criteria [faithfulness_correlation irof ...] [--limit 4] [--batch-size 4]
      # each faithfulness / complexity metric a peer also has vs that peer (Quantus 0.6, Captum) on the same maps
  python -m scripts.bench --robustness [--limit 4] [--batch-size 4] [--samples 5] [--radius 0.02]
      # the four robustness metrics (one shared re-explanation of S copies per batch) vs their floor (one plain
      # torch forward + head backward of the same copies) and vs Quantus' four metrics on the same maps
  python -m scripts.bench --rss --rss-metrics insertion deletion road [--rss-sizes 8 32] [--steps 5]
  python -m scripts.bench --family [--limit 2] [--batch-size 2] [--skip torchcam\ ScoreCAM]
      # Score-CAM (at the peers' softmax-over-channels weighting) vs pytorch-grad-cam's and torchcam's ScoreCAM
      # and vs its floor (the forwards of the non-constant channels' masked images); Ablation-CAM vs
      # pytorch-grad-cam's AblationCAM and vs its floor (one pass of the network after the layer per channel)
  python -m scripts.bench --rss --rss-methods scorecam ablationcam --rss-sizes 2 8 --batch-size 2
  python -m scripts.bench --attributions [--limit 2] [--batch-size 2]
      # integrated gradients (16 steps), SmoothGrad of the gradient (8 samples), RISE (64 masks) and occlusion (56 px
      # windows at stride 28) vs their floors (the same number of bare forwards (+ input backwards)) and vs Captum's
      # IntegratedGradients, NoiseTunnel(Saliency) and Occlusion at the same settings (RISE: TorchRay's loop)
  python -m scripts.bench --loader [--loader-workers 0 1] [--limit 64] [--loader-methods gradcam gradcam++]
      # camexp's images/s beside its two floors, per workers setting: the loader floor (decode + resize + crop
      # through camexp's loader, same workers) and the model floor (the same forwards and head backward on
      # images already on the device)
  python -m scripts.bench --decode-diff [--limit 300]
      # per-image |dO| and |dY| of torchvision.io.decode_jpeg + tensor resize (runtime.decode: gpu's path, run
      # on the CPU; nvJPEG with --device cuda) against the PIL path, on the same images, model and methods
  python -m scripts.bench --device-diff --device cuda [--limit 32] [--methods gradcam cam]
      # the same images by camexp run on the CPU and on the GPU (decode: cpu): targets, |dO| and |dY|
  python -m scripts.bench --startup [--rounds 3] [--limit 2]
      # fresh processes: `camexp methods` to exit, `camexp run` (one batch of Lite0) to its first batch's end,
      # with the environment's bytecode and with none

--loader, --family, --attributions, --decode-diff and --device-diff take --device {cpu,cuda,auto} (default cpu),
--model NAME (tf_efficientnet_lite0 with its package weights; any other timm model with random weights),
--amp {off,bf16} and --decode {cpu,gpu}; --cycled repeats the folder's images up to --limit. On CUDA every contender
synchronises before its clock stops, and every JSON records the GPU, driver, versions, TF32 flags and command.
scripts/gpu_check.sh runs the whole GPU check as one command (docs/guide/speed-gpu.md, "Measuring on a GPU").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from camexp.accel import disable_tf32, keep_host_memory, resolve_device
from camexp.config import RuntimeConfig
from camexp.errors import CamexpError

from . import (
    attributions,
    criteria,
    decode_diff,
    device_diff,
    family,
    loader,
    maps,
    metrics,
    robustness,
    rss,
    speed,
    startup,
    stats,
)
from .common import CPU, CYCLED, LITE0, METHODS, REPO, Where, default_images, environment, print_timings


def workers_arg(value: str) -> int | str:
    return value if value == "auto" else int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=None, help="folder of images (default: shared ILSVRC subset)")
    p.add_argument("--limit", type=int, default=None, help="use the first N images")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default 16; 2 with --family)")
    p.add_argument(
        "--workers",
        type=workers_arg,
        default=RuntimeConfig().workers,
        help="DataLoader workers (all contenders): a number or auto",
    )
    p.add_argument(
        "--loader",
        action="store_true",
        help="camexp beside its loader floor and model floor, per --loader-workers setting, instead",
    )
    p.add_argument("--loader-workers", type=workers_arg, nargs="+", default=[0, 1])
    p.add_argument(
        "--methods",
        "--loader-methods",
        dest="methods",
        nargs="+",
        default=["gradcam", "gradcam++"],
        help="the methods of --loader, --decode-diff and --device-diff",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda", "auto"],
        default="cpu",
        help="device of --loader, --family, --decode-diff and --device-diff (auto: CUDA when present)",
    )
    p.add_argument(
        "--model", default=LITE0, help=f"timm model ({LITE0}: its package weights; any other: weights: random)"
    )
    p.add_argument("--amp", choices=["off", "bf16"], default="off", help="runtime.amp of the explanation forwards")
    p.add_argument("--decode", choices=["cpu", "gpu"], default="cpu", help="runtime.decode (gpu: CUDA only)")
    p.add_argument(
        "--cycled", action="store_true", help="repeat the folder's images up to --limit (e.g. 1,024 from 150 files)"
    )
    p.add_argument(
        "--device-diff",
        action="store_true",
        help="the same images by camexp run on the CPU and on --device (decode: cpu): targets, |dO|, |dY|",
    )
    p.add_argument(
        "--decode-diff",
        action="store_true",
        help="|dO| of the tensor decode + resize path against the PIL path instead",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip", nargs="*", default=[], help="contenders to leave out (not camexp)")
    p.add_argument("--rss", action="store_true", help="measure peak RSS of camexp runs instead")
    p.add_argument("--rss-sizes", type=int, nargs="+", default=[200, 2000])
    p.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--only", choices=["stats"], default=None, help="run one section only (stats: the bootstrap)")
    p.add_argument(
        "--stats-size",
        type=int,
        nargs=3,
        default=[50_000, 10, 1000],
        metavar=("IMAGES", "METHODS", "RESAMPLES"),
        help="size of the bootstrap measurement",
    )
    p.add_argument("--rss-metrics", nargs="*", default=[], help="per-batch metrics added to the --rss runs")
    p.add_argument("--metrics", action="store_true", help="bench the per-batch metrics against their peers instead")
    p.add_argument(
        "--criteria",
        nargs="*",
        choices=list(criteria.PEERS),
        default=None,
        help="bench these metrics (default: all with a peer) against Quantus / Captum on the same maps instead",
    )
    p.add_argument(
        "--robustness", action="store_true", help="bench the robustness metrics against their floor and Quantus"
    )
    p.add_argument("--samples", type=int, default=5, help="perturbed copies per image (--robustness)")
    p.add_argument("--radius", type=float, default=0.02, help="the copies' L-inf radius in pixel space (--robustness)")
    p.add_argument(
        "--family",
        action="store_true",
        help="bench Score-CAM and Ablation-CAM against their floors and the peers instead",
    )
    p.add_argument(
        "--attributions",
        action="store_true",
        help="bench integrated gradients, SmoothGrad and occlusion against their floors and Captum instead",
    )
    p.add_argument(
        "--maps", action="store_true", help="output.maps on against off (time, disk) and float16 against float32"
    )
    p.add_argument(
        "--startup", action="store_true", help="start-up of camexp methods and camexp run, fresh processes, instead"
    )
    p.add_argument("--rss-methods", nargs="+", default=METHODS, help="the methods of the --rss runs")
    p.add_argument("--steps", type=int, default=20, help="insertion/deletion steps (--metrics, --rss-metrics)")
    p.add_argument("--road-percentiles", type=int, nargs="+", default=[10, 20, 30, 40, 50, 60, 70, 80, 90])
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench.json")
    a = p.parse_args(argv)
    try:
        a.where = Where(resolve_device(a.device), a.model, a.amp, a.decode)
    except CamexpError as e:
        p.error(str(e))
    sections = (a.loader, a.family, a.attributions, a.decode_diff, a.device_diff, a.rss, a.rss_child)
    if a.where != CPU and not any(sections):
        p.error(
            "--device, --model, --amp and --decode apply to --loader, --family, --attributions, --decode-diff, "
            "--device-diff and --rss"
        )
    if a.decode == "gpu" and a.where.device.type != "cuda":
        p.error("--decode gpu decodes JPEGs on a CUDA device: use it with --device cuda (or auto on a GPU machine)")
    return a


def print_medians(result: dict) -> None:
    """A per-batch metric bench's median times and ratios."""
    for k, v in result["median_s"].items():
        print(f"{k:34s} median {v:7.2f} s for {result['images']} images")
    for k, v in result["ratios"].items():
        print(f"{k:58s} {v:.3f}")


def main() -> None:
    a = parse_args()
    where: Where = a.where
    kind = CYCLED if a.cycled else "folder"
    disable_tf32(where.device)  # as every camexp run does; the peers and floors run under the same flags
    # camexp's runs set glibc's allocator thresholds (camexp.accel.keep_host_memory); set them before any
    # contender runs, so that every one is timed under the same allocator, whatever ran before it.
    allocator = keep_host_memory()
    stats_size = (*a.stats_size, a.rounds)
    if a.only == "stats":
        out = a.out.with_name(a.out.stem + "_stats.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(stats.bench_stats(*stats_size), indent=2))
        print(f"wrote {out}")
        return
    images = a.images or default_images()
    batch_size = a.batch_size or (2 if a.family or a.attributions else 16)
    if a.rss_child is not None:
        return rss.rss_child(
            images, a.rss_child, batch_size, a.workers, tuple(a.rss_metrics), a.steps, tuple(a.rss_methods), where
        )
    if a.rss:
        result = rss.rss(
            images, a.rss_sizes, batch_size, a.workers, tuple(a.rss_metrics), a.steps, tuple(a.rss_methods), where
        )
        out = a.out.with_name(a.out.stem + "_rss.json")
    elif a.family:
        result = family.family_bench(images, a.limit or 2, batch_size, a.rounds, a.skip, where)
        out = a.out.with_name(a.out.stem + "_family.json")
        print_timings(result)
        print(f"channels skipped and model calls: {result['counts']}")
        for k, v in result["profile"].items():
            print(f"{k:62s} {v:.2f}")
    elif a.attributions:
        result = attributions.attribution_bench(images, a.limit or 2, batch_size, a.rounds, a.skip, where=where)
        out = a.out.with_name(a.out.stem + "_attributions.json")
        print_timings(result)
        print(f"passes: {result['counts']}")
    elif a.loader:
        result = loader.loader_bench(
            images, a.limit or 64, batch_size, a.loader_workers, a.rounds, tuple(a.methods), where, kind
        )
        out = a.out.with_name(a.out.stem + "_loader.json")
        for k, v in result["images_per_s"].items():
            print(f"{k:20s} {v:7.2f} img/s  (median {result['median_s'][k]:.2f} s for {result['images']} images)")
        for k, v in result["ratios"].items():
            print(f"{k:42s} {v:.3f}")
    elif a.decode_diff:
        result = decode_diff.decode_diff(images, a.limit, batch_size, tuple(a.methods), where, kind)
        out = a.out.with_name(a.out.stem + "_decode.json")
        print(json.dumps(result, indent=2))
    elif a.device_diff:
        result = device_diff.device_diff(images, a.limit or 32, batch_size, tuple(a.methods), where, kind)
        out = a.out.with_name(a.out.stem + "_device.json")
        print(json.dumps(result, indent=2))
    elif a.maps:
        result = maps.maps_bench(images, a.limit, batch_size, a.workers, a.rounds)
        out = a.out.with_name(a.out.stem + "_maps.json")
        print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=2))
    elif a.startup:
        result = startup.startup_bench(images, a.limit or 2, a.workers, a.rounds)
        out = a.out.with_name(a.out.stem + "_startup.json")
        for cache, med in result["median_s"].items():
            for k, v in med.items():
                print(f"{cache:8s} {k:16s} median {v:7.2f} s")
        for k, v in result["no_cache/compiled"].items():
            print(f"no cache/compiled {k:16s} {v:.2f}")
    elif a.robustness:
        result = robustness.robustness_bench(
            images, a.limit or 4, a.batch_size or 4, a.samples, a.radius, a.rounds, tuple(a.skip)
        )
        out = a.out.with_name(a.out.stem + "_robustness.json")
        print_medians(result)
    elif a.criteria is not None:
        names = a.criteria or list(criteria.PEERS)
        result = criteria.criteria_bench(images, a.limit or 4, a.batch_size or 4, a.rounds, names)
        out = a.out.with_name(a.out.stem + "_criteria.json")
        for name, r in result["metrics"].items():
            ratio = next(v for k, v in r.items() if k.endswith("target >= 1)"))
            print(f"{name:26s} peer/camexp {ratio:6.2f}  (medians: {r['median_s']})")
    elif a.metrics:
        result = metrics.metrics_bench(images, a.limit or 4, batch_size, a.steps, a.road_percentiles, a.rounds)
        out = a.out.with_name(a.out.stem + "_metrics.json")
        print_medians(result)
    else:
        result = speed.bench(images, a.limit, batch_size, a.workers, a.rounds, a.skip)
        result["stats"] = stats.bench_stats(*stats_size)
        out = a.out
        for k, v in result["images_per_s"].items():
            print(f"{k:20s} {v:7.2f} img/s  (median {result['median_s'][k]:.2f} s for {result['images']} images)")
        for k, v in result["ratios"].items():
            print(f"{k:36s} {v:.3f}")
        print(f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    result["host_allocator"] = allocator
    result["environment"] = environment(where)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
