"""`--metrics`: per-batch metrics on the same maps against torchcam's, pytorch-grad-cam's and the floor."""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from camexp.accel import CPU_FORWARD_CHUNK, pass_budget
from camexp.config import DatasetConfig, ExperimentConfig
from camexp.data import build_dataset, collate
from camexp.models import LoadedModel, build_model

from .common import bare_forwards, camexp_config, loaded_config, warm_rounds


class GivenMaps:
    """A torchcam CAM extractor returning maps computed beforehand, so that only the metric is timed."""

    def __init__(self, model: nn.Module):
        self.model, self.maps = model, None

    def __call__(self, class_idx, scores, normalized=True, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    def _hooks_off(self):
        from contextlib import nullcontext

        return nullcontext()


def time_batch_metrics(cfg: ExperimentConfig, names: list[str], batches: list) -> float:
    """Seconds for the per-batch metrics `names` over `batches` (from `metric_batches`), settings validated once
    as a run validates them: what a run spends on those metrics, without explaining the images again."""
    from camexp.metrics import batch_metrics, validate_settings
    from camexp.metrics.batch import BatchContext

    entries, settings = batch_metrics(names), validate_settings(cfg)
    start = time.perf_counter()
    for x, explainer, ex, ids in batches:
        mb = BatchContext(cfg, explainer, x, ex, {"image_id": ids}, settings)
        for entry in entries:
            entry.compute(mb)
    return time.perf_counter() - start


def metric_batches(
    images: Path, n: int | None, batch_size: int, method: str, passes: bool = False
) -> tuple[LoadedModel, list]:
    """Lite0, and per batch: the images, the explainer, its Explanation of `method` (computed once) and the
    images' ids (what a run's batch hands the metrics: seeded metrics key their noise by them).
    `passes`: the metrics' generated images run in passes sized by memory, as in a CPU run (`accel.pass_budget`);
    else in forward chunks of CPU_FORWARD_CHUNK, the size the peers of `--metrics` are given."""
    from camexp.explain.core import Explainer
    from camexp.explain.scoring import Scorer

    cfg = camexp_config(images, n, batch_size, 0, Path(tempfile.mkdtemp()))
    loaded = build_model(cfg.model)
    loaded.model.to(memory_format=torch.channels_last)
    budget = pass_budget(torch.device("cpu"), None) if passes else None
    explainer = Explainer(loaded, [method], scorer=Scorer(loaded.model, chunk=CPU_FORWARD_CHUNK, pass_budget=budget))
    ds = build_dataset(cfg.dataset, loaded.spec)
    out = []
    for b in DataLoader(ds, batch_size=batch_size, collate_fn=collate):
        x = b["image"].contiguous(memory_format=torch.channels_last)
        out.append((x, explainer, explainer.explain(x), b["image_id"]))
    return loaded, out


def metrics_bench(
    images: Path, n: int | None, batch_size: int, steps: int, percentiles: list[int], rounds: int
) -> dict:
    """Insertion + deletion: camexp vs torchcam's DeletionInsertionMetric (same maps, steps, substrate 0 for
    both curves as torchcam has it, chunks of the same size) vs the floor: the same number of forwards of
    ready-made images. ROAD: camexp vs pytorch-grad-cam's ROADCombined (same maps and percentiles)."""
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    from torchcam.metrics import DeletionInsertionMetric

    method = "gradcam++"
    loaded, batches = metric_batches(images, n, batch_size, method)
    chunk = CPU_FORWARD_CHUNK
    cfg = ExperimentConfig(
        name="bench",
        dataset=DatasetConfig(root=images),
        model=loaded_config(),
        methods=[method],
        metrics=["insertion", "deletion", "road"],
        perturbation={"steps": steps, "insertion_substrate": "zero"},
        road={"percentiles": percentiles},
    )
    net = loaded.model.net
    count = sum(len(x) for x, _, _, _ in batches)

    def camexp_metric(names: tuple[str, ...]) -> float:
        return time_batch_metrics(cfg, list(names), batches)

    def torchcam() -> float:
        extractor = GivenMaps(net)
        metric = DeletionInsertionMetric(
            extractor,  # type: ignore[arg-type]  # GivenMaps stands in for torchcam's CAM extractor
            lambda z: z.softmax(-1),
            steps=steps,
            batch_size=chunk,
        )
        start = time.perf_counter()
        for x, _, ex, _ in batches:
            extractor.maps = ex.maps[method]
            metric.update(loaded.model.normalize(x), class_idx=ex.targets.tolist())
        return time.perf_counter() - start

    def floor() -> float:
        forwards = 1 + 2 * (steps - 1)  # per image, one method, both curves sharing the zero substrate: camexp's count
        start = time.perf_counter()
        with torch.inference_mode():
            for x, _, _, _ in batches:
                bare_forwards(net, loaded.model.normalize(x), forwards * len(x), chunk)
        return time.perf_counter() - start

    def pgc_road() -> float:
        road = ROADCombined(percentiles=percentiles)
        start = time.perf_counter()
        for x, _, ex, _ in batches:
            road(
                loaded.model.normalize(x),
                ex.maps[method].numpy(),
                [ClassifierOutputSoftmaxTarget(int(t)) for t in ex.targets],
                net,
            )
        return time.perf_counter() - start

    contenders = {
        "camexp insertion+deletion": lambda: camexp_metric(("insertion", "deletion")),
        "torchcam DeletionInsertionMetric": torchcam,
        "floor (same forwards)": floor,
        "camexp road": lambda: camexp_metric(("road",)),
        "pytorch-grad-cam ROADCombined": pgc_road,
    }
    times, med = warm_rounds(contenders, rounds)
    return {
        "images": count,
        "batch_size": batch_size,
        "steps": steps,
        "road_percentiles": percentiles,
        "method": method,
        "threads": torch.get_num_threads(),
        "seconds": times,
        "median_s": med,
        "ratios": {
            "torchcam/camexp insertion+deletion (speed-up, target >= 2)": med["torchcam DeletionInsertionMetric"]
            / med["camexp insertion+deletion"],
            "camexp/floor insertion+deletion (target <= 1.10)": med["camexp insertion+deletion"]
            / med["floor (same forwards)"],
            "pytorch-grad-cam/camexp ROAD (speed-up, target >= 3)": med["pytorch-grad-cam ROADCombined"]
            / med["camexp road"],
        },
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
