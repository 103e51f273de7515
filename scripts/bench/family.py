"""`--family`: Score-CAM and Ablation-CAM against their floors and the peers."""

from __future__ import annotations

import contextlib
import io
import resource
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torch.utils.data import DataLoader

from camexp.accel import MAX_FORWARD
from camexp.data import build_dataset, collate
from camexp.models import build_model

from .common import CPU, Where, alternate, bare_forwards, camexp_config, user_model


def family_bench(
    images: Path, n: int | None, batch_size: int, rounds: int, skip: list[str], where: Where = CPU
) -> dict:
    """Score-CAM at the peers' definition (softmax over channels of the target's logit on the pixel-space masked
    images: `weighting: softmax_logits`) vs pytorch-grad-cam's and torchcam's ScoreCAM and vs its floor: one
    forward of the images plus one forward per non-constant channel (the count camexp reports), of ready-made
    images, chunked and channels_last as camexp runs them. Ablation-CAM vs pytorch-grad-cam's AblationCAM and
    vs its floor: the forward of the images plus one pass of the network after the layer per channel not all
    zero. All on the same pre-decoded batches, the same targets (camexp's top-1) and the same weights."""
    from pytorch_grad_cam import AblationCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import ScoreCAM as TorchcamScoreCAM

    from camexp.explain.core import Explainer
    from camexp.explain.model_methods import block_size
    from camexp.explain.scoring import Scorer

    cfg = camexp_config(images, n, batch_size, 0, Path(tempfile.mkdtemp(prefix="camexp-bench-")), where=where)
    loaded = where.build()
    net, chunk = loaded.model.net, where.chunk
    scorer = Scorer(loaded.model, chunk=chunk)
    explainers = {
        "scorecam": Explainer(loaded, [("scorecam", "scorecam", {"weighting": "softmax_logits"})], scorer=scorer),
        "ablationcam": Explainer(loaded, ["ablationcam"], scorer=scorer),
    }
    batches = [
        where.place(b["image"])
        for b in DataLoader(build_dataset(cfg.dataset, loaded.spec), batch_size=batch_size, collate_fn=collate)
    ]
    # Setup (and oneDNN warm-up): each batch's targets, live-channel counts and layer output for the floors.
    targets, counts, natives = [], [], []
    for x in batches:
        ex = {m: e.explain(x) for m, e in explainers.items()}
        targets.append(ex["scorecam"].targets)
        counts.append({m: e.counts[m] for m, e in ex.items()})
        natives.append(explainers["ablationcam"].forward_backward(x, grad=False)[4])
    k = loaded.maps_shape[0]
    user = user_model(build_model(cfg.model, where.device))
    layer = cast(nn.Module, user.net).get_submodule(loaded.layer_name)

    def floor_scorecam(j: int, x: torch.Tensor) -> None:
        with torch.inference_mode():
            normalized = loaded.model.normalize(x)
            net(normalized)
            bare_forwards(net, normalized, counts[j]["scorecam"]["forwards"], chunk or MAX_FORWARD)

    def floor_ablationcam(j: int, x: torch.Tensor) -> None:
        native = natives[j]
        per_block = block_size(native[0].numel(), None)
        with torch.inference_mode():
            net(loaded.model.normalize(x))
            todo = counts[j]["ablationcam"]["tail_passes"]
            block = native.repeat(-(-min(todo, per_block) // len(x)), 1, 1, 1)
            for lo in range(0, todo, per_block):
                loaded.tail(block[: min(per_block, todo - lo)])

    def pgc(cls: type) -> Callable[[int, torch.Tensor], None]:
        cam = cls(model=user, target_layers=[layer])

        def step(j: int, x: torch.Tensor) -> None:
            with contextlib.redirect_stderr(io.StringIO()):  # its progress bar per image, not worth a terminal
                cam(input_tensor=x.contiguous(), targets=[ClassifierOutputTarget(int(t)) for t in targets[j]])

        return step

    def torchcam_scorecam(j: int, x: torch.Tensor) -> None:
        with TorchcamScoreCAM(
            user, target_layer=f"net.{loaded.layer_name}", input_shape=tuple(x.shape[1:])
        ) as extractor:
            with torch.inference_mode():
                user(x.contiguous())
                extractor(class_idx=targets[j].tolist())

    contenders: dict[str, Callable[[int, torch.Tensor], object]] = {
        "camexp scorecam": lambda j, x: explainers["scorecam"].explain(x),
        "floor scorecam": floor_scorecam,
        "pytorch-grad-cam ScoreCAM": pgc(ScoreCAM),
        "torchcam ScoreCAM": torchcam_scorecam,
        "camexp ablationcam": lambda j, x: explainers["ablationcam"].explain(x),
        "floor ablationcam": floor_ablationcam,
        "pytorch-grad-cam AblationCAM": pgc(AblationCAM),
    }
    contenders = {name: fn for name, fn in contenders.items() if name not in skip}
    times, med = alternate(contenders, batches, rounds, where)
    count = sum(len(x) for x in batches)
    totals = {m: {key: sum(c[m][key] for c in counts) for key in counts[0][m]} for m in explainers}
    ratios = {}
    if "floor scorecam" in med:
        ratios["camexp/floor scorecam wall (target <= 1.10)"] = med["camexp scorecam"] / med["floor scorecam"]
    peers = [med[p] for p in ("pytorch-grad-cam ScoreCAM", "torchcam ScoreCAM") if p in med]
    if peers:
        ratios["faster peer/camexp scorecam wall (speed-up, target >= 3)"] = min(peers) / med["camexp scorecam"]
    if "floor ablationcam" in med:
        ratios["camexp/floor ablationcam wall"] = med["camexp ablationcam"] / med["floor ablationcam"]
    if "pytorch-grad-cam AblationCAM" in med:
        ratios["pytorch-grad-cam/camexp ablationcam wall (speed-up, target >= 5)"] = (
            med["pytorch-grad-cam AblationCAM"] / med["camexp ablationcam"]
        )
    # Where Score-CAM's time goes: how many masked images each side forwards, and how fast.
    profile: dict[str, float] = {
        "scorecam masked images, camexp": totals["scorecam"]["forwards"],
        "scorecam masked images, peers": count * k,
    }
    profile["fewer forwards (constant channels skipped)"] = count * k / totals["scorecam"]["forwards"]
    for name in ("camexp scorecam", "floor scorecam", "pytorch-grad-cam ScoreCAM", "torchcam ScoreCAM"):
        if name in med:
            done = count * k if name.startswith(("pytorch", "torchcam")) else totals["scorecam"]["forwards"]
            profile[f"masked images/s, {name}"] = done / med[name]
    return {
        "images": count,
        "model": where.model,
        "batch_size": batch_size,
        "rounds": rounds,
        "channels": k,
        "chunk": chunk,
        "profile": profile,
        "threads": torch.get_num_threads(),
        "images_dir": str(images),
        "counts": totals,
        "seconds": times,
        "median_s": med,
        "images_per_s": {name: count / v for name, v in med.items()},
        "ratios": ratios,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
