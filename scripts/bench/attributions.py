"""`--attributions`: integrated gradients' steps, SmoothGrad's samples, RISE's masks and occlusion's windows against
their floors and against Captum (RISE: TorchRay's rise() loop, written out: TorchRay is not installed)."""

from __future__ import annotations

import resource
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from camexp.accel import MAX_FORWARD, pass_budget
from camexp.data import build_dataset, collate
from camexp.models import build_model

from .common import CPU, Where, alternate, bare_forwards, camexp_config, user_model


def bare_forward_backwards(net: torch.nn.Module, normalized: torch.Tensor, n: int, chunk: int) -> None:
    """`n` forwards and input backwards of ready-made images (`normalized` repeated), `chunk` per call, channels_last:
    what a floor spends where camexp takes n input gradients."""
    block = normalized.repeat(-(-chunk // len(normalized)), 1, 1, 1)[:chunk].contiguous(
        memory_format=torch.channels_last
    )
    for lo in range(0, n, chunk):
        leaf = block[: min(chunk, n - lo)].detach().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(net(leaf)[:, 0].sum(), leaf)


def attribution_bench(
    images: Path,
    n: int | None,
    batch_size: int,
    rounds: int,
    skip: list[str],
    steps: int = 16,
    samples: int = 8,
    window: int = 56,
    stride: int = 28,
    masks: int = 64,
    where: Where = CPU,
) -> dict:
    """Per method, camexp's explainer (its shared pass included) beside its floor, the same number of bare passes
    camexp counts (forwards + input backwards for IG and SmoothGrad of the gradient, forwards for RISE and occlusion)
    of ready-made images in camexp's chunks (its gradient passes for the backwards), and beside Captum's
    IntegratedGradients (riemann_right), NoiseTunnel of Saliency and Occlusion at the same settings, called as a
    user calls them (their default batching). Same pre-decoded batches, same targets (camexp's top-1), alternating
    rounds, median round. RISE's peer is TorchRay's rise() loop as it runs: per image, the sigmoid of the target
    on 32 masked normalised images per forward."""
    from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    from camexp.explain.core import Explainer
    from camexp.explain.model_methods import seed_of
    from camexp.explain.scoring import Scorer
    from camexp.explain.torchray import RISE_DRAW, rise_masks

    cfg = camexp_config(images, n, batch_size, 0, Path(tempfile.mkdtemp(prefix="camexp-bench-")), where=where)
    loaded = where.build()
    net = loaded.model.net
    scorer = Scorer(loaded.model, chunk=where.chunk, pass_budget=pass_budget(where.device, None))
    settings: dict[str, tuple[str, dict[str, Any]]] = {
        "ig": ("integrated_gradients", {"steps": steps}),
        "smoothgrad": ("gradient", {"smooth": {"n": samples, "sigma": 0.15}}),
        "rise": ("rise", {"n": masks}),
        "occlusion": ("occlusion", {"window": window, "stride": stride}),
    }
    explainers = {k: Explainer(loaded, [(k, m, p)], scorer=scorer) for k, (m, p) in settings.items()}
    batches = [
        where.place(b["image"])
        for b in DataLoader(build_dataset(cfg.dataset, loaded.spec), batch_size=batch_size, collate_fn=collate)
    ]
    targets, counts = [], []  # setup and warm-up: each batch's targets and camexp's counted passes
    for x in batches:
        ex = {k: e.explain(x) for k, e in explainers.items()}
        targets.append(ex["ig"].targets)
        counts.append({k: e.counts[k] for k, e in ex.items()})
    user = user_model(build_model(cfg.model, where.device))  # the peers' own copy, NCHW, trainable

    def floor(key: str, backward: bool) -> Callable[[int, torch.Tensor], None]:
        def step(j: int, x: torch.Tensor) -> None:
            normalized = loaded.model.normalize(x)
            with torch.inference_mode():
                net(normalized)  # the shared pass
            n = counts[j][key]["forwards"]
            passes = scorer.pass_chunk(x, n) or MAX_FORWARD
            if backward:
                bare_forward_backwards(net, normalized, n, passes)
            else:
                with torch.inference_mode():
                    bare_forwards(net, normalized, n, passes)

        return step

    def captum_ig(j: int, x: torch.Tensor) -> None:
        IntegratedGradients(user).attribute(x, target=targets[j], n_steps=steps, method="riemann_right")

    def captum_smoothgrad(j: int, x: torch.Tensor) -> None:
        sigma = 0.15 * float(x.max() - x.min())  # one stdev per batch: Captum takes no per-image one
        NoiseTunnel(Saliency(user)).attribute(x, nt_samples=samples, stdevs=sigma, target=targets[j], abs=False)

    def torchray_rise(j: int, x: torch.Tensor) -> None:
        size = (x.shape[-2], x.shape[-1])
        with torch.inference_mode():
            for image, t in zip(user.normalize(x), targets[j].tolist()):
                gen = torch.Generator().manual_seed(seed_of(0, "rise"))
                saliency = torch.zeros(size)
                for m in rise_masks(masks, 7, 0.5, size, gen, RISE_DRAW):
                    scores = user.net(image[None] * m[:, None])[:, t].sigmoid()
                    saliency += (scores[:, None, None] * m).sum(0)

    def captum_occlusion(j: int, x: torch.Tensor) -> None:
        Occlusion(user).attribute(x, (3, window, window), strides=(3, stride, stride), target=targets[j], baselines=0)

    contenders: dict[str, Callable[[int, torch.Tensor], object]] = {
        "camexp ig": lambda j, x: explainers["ig"].explain(x),
        "floor ig": floor("ig", True),
        "captum IntegratedGradients": captum_ig,
        "camexp smoothgrad": lambda j, x: explainers["smoothgrad"].explain(x),
        "floor smoothgrad": floor("smoothgrad", True),
        "captum NoiseTunnel(Saliency)": captum_smoothgrad,
        "camexp rise": lambda j, x: explainers["rise"].explain(x),
        "floor rise": floor("rise", False),
        "torchray rise (written out)": torchray_rise,
        "camexp occlusion": lambda j, x: explainers["occlusion"].explain(x),
        "floor occlusion": floor("occlusion", False),
        "captum Occlusion": captum_occlusion,
    }
    contenders = {name: fn for name, fn in contenders.items() if name not in skip}
    times, med = alternate(contenders, batches, rounds, where)
    count = sum(len(x) for x in batches)
    peers = {"ig": "captum IntegratedGradients", "smoothgrad": "captum NoiseTunnel(Saliency)"}
    peers.update({"rise": "torchray rise (written out)", "occlusion": "captum Occlusion"})
    ratios = {}
    for key, peer in peers.items():
        ours = med.get(f"camexp {key}")
        if ours and f"floor {key}" in med:
            ratios[f"floor/camexp {key} throughput (target >= 0.9)"] = med[f"floor {key}"] / ours
        if ours and peer in med:
            ratios[f"camexp/{peer} throughput (target >= 1)"] = med[peer] / ours
    return {
        "images": count,
        "model": where.model,
        "batch_size": batch_size,
        "rounds": rounds,
        "settings": {k: {"method": m, **p} for k, (m, p) in settings.items()},
        "chunk": where.chunk,
        "pass_chunk": {k: scorer.pass_chunk(batches[0], c["forwards"]) for k, c in counts[0].items()},
        "threads": torch.get_num_threads(),
        "images_dir": str(images),
        "counts": {k: {c: sum(b[k][c] for b in counts) for c in counts[0][k]} for k in settings},
        "seconds": times,
        "median_s": med,
        "images_per_s": {name: count / v for name, v in med.items()},
        "ratios": ratios,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
