"""`--decode-diff`: the tensor decode + resize path (runtime.decode: gpu's) against the PIL path, per image."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import torch
import torchvision

from camexp.data import build_dataset
from camexp.data.loader import decoder_name

from .common import CPU, Where, camexp_config, run_loader, spread


def decode_diff(
    images: Path, n: int | None, batch_size: int, methods: tuple[str, ...], where: Where = CPU, kind: str = "folder"
) -> dict:
    """The same images read by the PIL path and by runtime.decode: gpu's path (torchvision's decode_jpeg, then
    the tensor resize and crop) on `where`'s device (on a CPU, the CPU's decoder; on CUDA, nvJPEG), both explained
    there: per image, the largest and mean |pixel difference|, whether the top-1 target agrees, |dY| (confidence
    at the target) and, where the targets agree, |dO| per method."""
    from camexp.explain.core import Explainer
    from camexp.explain.scoring import Scorer, confidence

    pil = replace(where, decode="cpu")
    tmp = Path(tempfile.mkdtemp(prefix="camexp-bench-"))
    cfg = camexp_config(images, n, batch_size, 0, tmp, kind=kind, methods=methods, where=pil)
    loaded = pil.build()
    explainer = Explainer(loaded, list(methods), scorer=Scorer(loaded.model, chunk=pil.chunk, amp=pil.amp))
    ds = build_dataset(cfg.dataset, loaded.spec)

    def outputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ex = explainer.explain(x)
        y = confidence(ex.logits, "softmax").gather(1, ex.targets[:, None])[:, 0]
        return ex.targets, y, explainer.scorer.explanations(x, ex.maps, ex.targets)

    rows: dict[str, list] = {"pixel_max": [], "pixel_mean": [], "same_target": [], "dy": [], "do": []}
    for a, b in zip(run_loader(cfg, ds), run_loader(cfg, ds, decode_on=where.device), strict=True):
        assert a["image_id"] == b["image_id"]
        xa, xb = pil.arrive(a["image"]), pil.arrive(b["image"])
        diff = (xa - xb).abs()
        rows["pixel_max"] += diff.amax(dim=(1, 2, 3)).tolist()
        rows["pixel_mean"] += diff.mean(dim=(1, 2, 3)).tolist()
        (ta, ya, oa), (tb, yb, ob) = outputs(xa), outputs(xb)
        same = ta == tb
        rows["same_target"] += same.tolist()
        rows["dy"] += (ya - yb).abs()[same].tolist()
        rows["do"] += (oa - ob).abs()[same].flatten().tolist()
    return {
        "images": len(rows["same_target"]),
        "methods": list(methods),
        "images_dir": str(images),
        "targets_agree": sum(rows["same_target"]),
        "pixel_max_abs_x255": spread([255 * v for v in rows["pixel_max"]]),
        "pixel_mean_abs_x255": spread([255 * v for v in rows["pixel_mean"]]),
        "abs_dY_same_target": spread(rows["dy"]),
        "abs_dO_same_target": spread(rows["do"]),
        "pil_decoder": decoder_name("cpu", where.device),
        "tensor_decoder": f"torchvision {torchvision.__version__} decode_jpeg on {where.device} + tensor resize "
        "(runtime.decode: gpu's code path)",
    }
