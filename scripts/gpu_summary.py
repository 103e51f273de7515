"""Merge the JSON files of scripts/gpu_check.sh's steps into one file and print the figures issue 21 asks for.

  python scripts/gpu_summary.py JSON_DIR OUT.json [--quiet]

Reads each step's scripts.bench JSON (STEP_loader.json, STEP_family.json, STEP_device.json, STEP_decode.json,
STEP_rss.json) and writes {STEP_SECTION: its JSON} to OUT.json in the order the steps ran; gpu_check.sh calls
it quietly after every step, so that a check cut short still brings back what it measured. Then prints the
environment once (GPU, driver, versions) and one block per step: images/s against both floors, Score-CAM
against the peers, the CPU-vs-device and decoder agreement, peak memory by run size. Reports, asserts nothing;
a step that timed out wrote no JSON and has no block (the log says why).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

VGG_TARGET = 170.0  # images/s, VGG-16 with four methods in float32 (issue 21)
FLOOR_TARGET = 0.9  # camexp's images/s over the slower floor's (the bottleneck's), on a GPU
SCORECAM_TARGET = 3.0  # pytorch-grad-cam's ScoreCAM seconds over camexp's
MEMORY_TARGET = 1.05  # the largest run's peak memory over the smallest's ("within a few %")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def loader_lines(d: dict) -> list[str]:
    ips, ratios = d["images_per_s"], d["ratios"]
    lines = [f"  {name:16s} {v:9.1f} img/s" for name, v in ips.items()]
    lines += [f"  {name:42s} {v:.3f}" for name, v in ratios.items() if "faster floor" in name or "slower" in name]
    for name, v in ratios.items():
        if "slower floor" in name:
            who = name.split("/")[0]
            lines.append(f"  target {who} >= {FLOOR_TARGET} x the slower floor: {verdict(v >= FLOOR_TARGET)}")
    env = d["environment"]
    if env["model"].startswith("vgg16") and env["amp"] == "off":
        best = max(v for k, v in ips.items() if k.startswith("camexp"))
        lines.append(f"  target VGG-16 float32 >= {VGG_TARGET:.0f} img/s: {verdict(best >= VGG_TARGET)}")
    return lines


def family_lines(d: dict) -> list[str]:
    med = d["median_s"]
    lines = [f"  {name:30s} {v:8.2f} s" for name, v in med.items()]
    lines += [f"  {name:62s} {v:.3f}" for name, v in d["ratios"].items()]
    if "pytorch-grad-cam ScoreCAM" in med and "camexp scorecam" in med:
        speedup = med["pytorch-grad-cam ScoreCAM"] / med["camexp scorecam"]
        ok = verdict(speedup >= SCORECAM_TARGET)
        lines.append(f"  target Score-CAM >= {SCORECAM_TARGET:.0f}x pytorch-grad-cam's: {speedup:.2f}x, {ok}")
    return lines


def diff_lines(d: dict) -> list[str]:
    agree = d["targets_agree"]
    lines = [f"  targets agree on {agree} of {d['images']} images"]
    for key in ("abs_dO", "abs_dY", "abs_dO_same_target", "abs_dY_same_target"):
        if key in d:
            s = d[key]
            lines.append(f"  {key:20s} max {s['max']:.3g}  median {s['median']:.3g}  p99 {s['p99']:.3g}")
    if "within_1e-4" in d:
        lines.append(f"  targets equal and |dO| <= 1e-4: {d['within_1e-4']}")
    return lines


def rss_lines(d: dict) -> list[str]:
    lines = [
        f"  {r['images']:6d} images: host {r['self_mib']:,.0f} MiB, device "
        + ("-" if r["device_mib"] is None else f"{r['device_mib']:,.0f} MiB")
        for r in d["rss_runs"]
    ]
    for key in ("rss_ratio_largest_smallest", "device_ratio_largest_smallest"):
        if key in d:
            ok = verdict(d[key] <= MEMORY_TARGET)
            lines.append(f"  target {key} <= {MEMORY_TARGET}: {d[key]:.3f}, {ok}")
    return lines


SECTIONS = {
    "loader": loader_lines,
    "family": family_lines,
    "device": diff_lines,
    "decode": diff_lines,
    "rss": rss_lines,
}


def main() -> None:
    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    steps = sorted(folder.glob("*.json"), key=lambda path: path.stat().st_mtime)
    merged = {path.stem: json.loads(path.read_text()) for path in steps}
    out.write_text(json.dumps(merged, indent=2))
    if "--quiet" in sys.argv[3:]:
        return
    if merged:
        env = next(iter(merged.values()))["environment"]
        keys = ("device", "device_name", "driver", "cuda", "cudnn", "tf32", "torch", "torchvision", "timm", "cpus")
        print("environment: " + ", ".join(f"{k} {env[k]}" for k in keys))
    for name, d in merged.items():
        env = d["environment"]
        size = (
            f"{d['images']} images"
            if "images" in d
            else "runs of " + ", ".join(str(r["images"]) for r in d["rss_runs"])
        )
        print(f"{name}: {env['model']} amp {env['amp']} decode {env['decode']}, {size}")
        print(f"  command: {env['command']}")
        print("\n".join(SECTIONS[name.rsplit("_", 1)[1]](d)))
    print(f"wrote {out} ({len(merged)} step(s))")


if __name__ == "__main__":
    main()
