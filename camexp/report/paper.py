"""Numbers the papers printed (docs/definitions.md, D6), to show beside a run's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from camexp.metrics import AVG_DROP, INCREASE, WIN
from camexp.metrics.perturbation import DELETION, INSERTION, KEEP_DROP, KEEP_INCREASE
from camexp.metrics.pointing import ENERGY, POINTING_ALL, POINTING_DIFFICULT


def _faith(
    pp: tuple[float, float, float],
    other: tuple[float, float, float],
    other_name: str = "gradcam",
    pp_name: str = "gradcam++",
) -> dict[str, dict[str, float]]:
    return {row.label: {pp_name: pp[i], other_name: other[i]} for i, row in enumerate((AVG_DROP, INCREASE, WIN))}


@dataclass(frozen=True)
class Setting:
    """What a table's numbers were measured on, or what a run measured: backbone architecture (timm or
    torchvision name without the weights tag) and data set ('imagenet_val', 'voc2007', 'voc2012', 'imagenetv2',
    or the run's `dataset.kind`)."""

    backbone: str
    dataset: str

    @classmethod
    def of_run(cls, meta: dict[str, Any]) -> Setting:
        """A run's setting from its run.json (the VOC year as the loader found it, when the config left it open)."""
        cfg = meta["config"]
        kind = cfg["dataset"].get("kind", "folder")
        year = cfg["dataset"].get("year") or (meta.get("dataset") or {}).get("year")
        return cls(cfg["model"]["name"].removeprefix("tv:").split(".")[0], f"voc{year}" if kind == "voc" else kind)

    def describe(self) -> str:
        return f"{self.backbone} on {DATASET_NAMES.get(self.dataset, 'a ' + self.dataset + ' data set')}"


DATASET_NAMES = {
    "imagenet_val": "ILSVRC2012 val",
    "voc2007": "VOC 2007 val",
    "voc2012": "VOC 2012 val",
    "imagenetv2": "ImageNetV2 MatchedFrequency",
    "cifar10": "CIFAR-10 test",
    "coco": "COCO 2014 val",
}
# TorchRay's pointing game table (facebookresearch/TorchRay, docs/pointing.csv), verbatim: method, then VOC 2007
# test VGG-16 all / difficult, VOC ResNet-50 all / difficult, COCO 2014 val VGG-16 all / difficult, COCO
# ResNet-50 all / difficult. TORCHRAY_NAMES maps TorchRay's method names to camexp's where they differ; rows for
# methods camexp does not register are kept: `--compare-paper` shows them as '(not run)' columns.
TORCHRAY_CSV = """\
center,69.6,42.4,69.6,42.4,27.8,19.5,27.8,19.5
gradient,76.3,56.9,72.3,56.8,37.7,31.4,35.0,29.4
deconvnet,67.5,44.2,68.6,44.7,30.7,23.0,30.0,21.9
guided_backprop,75.9,53.0,77.2,59.4,39.1,31.4,42.1,35.3
excitation_backprop,77.1,56.6,84.5,70.8,39.8,32.8,49.6,43.9
contrastive_excitation_backprop,79.9,66.5,90.7,82.1,49.7,44.3,58.5,53.6
rise,86.9,75.1,86.4,78.8,50.8,45.3,54.7,50.0
grad_cam,86.6,74.0,90.4,82.3,54.2,49.0,57.3,52.3
extremal_perturbation,88.0,76.1,88.9,78.7,51.5,45.9,56.5,51.5
"""
TORCHRAY_NAMES = {"grad_cam": "gradcam"}


def _torchray_tables() -> dict[str, tuple[str, Setting, dict[str, dict[str, float]]]]:
    """TORCHRAY_CSV as four tables (paper key -> caption, setting, rows), one per data set and backbone, in the
    CSV's column order. The VOC keys keep their first names (torchray_vgg16, torchray_resnet50)."""
    columns = [
        ("torchray_vgg16", "PASCAL VOC 2007 test, VGG-16", Setting("vgg16", "voc2007")),
        ("torchray_resnet50", "PASCAL VOC 2007 test, ResNet-50", Setting("resnet50", "voc2007")),
        ("torchray_coco14_vgg16", "COCO 2014 val, VGG-16", Setting("vgg16", "coco")),
        ("torchray_coco14_resnet50", "COCO 2014 val, ResNet-50", Setting("resnet50", "coco")),
    ]
    rows = [line.split(",") for line in TORCHRAY_CSV.splitlines()]
    return {
        key: (
            f"TorchRay pointing game, {where} (fine-tuned on the data set)",
            setting,
            {
                row.label: {TORCHRAY_NAMES.get(r[0], r[0]): float(r[1 + 2 * i + j]) for r in rows}
                for j, row in enumerate((POINTING_ALL, POINTING_DIFFICULT))
            },
        )
        for i, (key, where, setting) in enumerate(columns)
    }


TORCHRAY = _torchray_tables()

# table -> (caption, main-table rows: row label -> method -> value)
PUBLISHED: dict[str, tuple[str, dict[str, dict[str, float]]]] = {
    "table1": (
        "Grad-CAM++ paper Table 1: ILSVRC2012 val, VGG-16",
        _faith((36.84, 17.05, 70.72), (46.56, 13.42, 29.28)),
    ),
    "table2": (
        "Grad-CAM++ paper Table 2: VOC 2007 val, VGG-16 fine-tuned",
        _faith((19.53, 18.96, 61.47), (28.54, 21.43, 39.44)),
    ),
    "table4": (
        "Grad-CAM++ paper Table 4: VOC 2007 val, Grad-CAM++ (all gradients) vs Grad-CAM",
        _faith((32.43, 19.12, 26.09), (28.54, 21.43, 73.91), pp_name="gradcam++all"),
    ),
    "table5": ("Grad-CAM++ paper Table 5: ILSVRC2012 val, AlexNet", _faith((62.75, 8.24, 86.56), (82.86, 3.16, 13.44))),
    "table6": ("Grad-CAM++ paper Table 6: VOC 2007 val, AlexNet", _faith((29.16, 19.76, 72.79), (45.82, 14.38, 27.21))),
    "table7": (
        "Grad-CAM++ paper Table 7: ILSVRC2012 val, ResNet-50",
        _faith((28.90, 22.16, 60.51), (30.36, 22.11, 39.49)),
    ),
    "table8": (
        "Grad-CAM++ paper Table 8: VOC 2007 val, ResNet-50",
        _faith((16.19, 19.52, 58.61), (20.86, 21.99, 41.39)),
    ),
    "table3": (
        "Grad-CAM++ paper Table 3: VOC 2012 val, mLoc",
        {
            "mLoc δ=0": {"gradcam++": 0.34, "gradcam": 0.33},
            "mLoc δ=0.25": {"gradcam++": 0.38, "gradcam": 0.28},
            "mLoc δ=0.5": {"gradcam++": 0.28, "gradcam": 0.16},
        },
    ),
    # the papers around Grad-CAM++ (docs/definitions.md D6)
    "scorecam": (
        "Score-CAM paper Tables 1-3: ILSVRC2012 val, torchvision VGG-16, 2000 random images "
        "(energy pointing: 500 images)",
        {
            KEEP_DROP.label: {"gradcam": 47.8, "gradcam++": 45.5, "scorecam": 31.5},
            KEEP_INCREASE.label: {"gradcam": 19.6, "gradcam++": 18.9, "scorecam": 30.6},
            INSERTION.label: {"gradcam": 0.357, "gradcam++": 0.346, "scorecam": 0.386},
            DELETION.label: {"gradcam": 0.089, "gradcam++": 0.082, "scorecam": 0.077},
            ENERGY.label: {"gradcam": 48.1, "gradcam++": 49.3, "scorecam": 63.7},
        },
    ),
    **{key: (caption, rows) for key, (caption, _, rows) in TORCHRAY.items()},
}

# Equivalence paper (VGG-16, ImageNetV2 MatchedFrequency, 4219 confident images): pair -> (R, mean, std)
PUBLISHED_RELPERF: dict[str, tuple[str, dict[str, tuple[float, float, float]]]] = {
    "equiv1": (
        "Equivalence paper, pre-softmax maps (4219 images)",
        {
            "gradcam++ vs gradcam": (1.24, 0.21, 0.64),
            "gradcam+ vs gradcam": (1.16, 0.15, 0.66),
            "gradcam++ vs gradcam+": (1.06, 0.06, 0.41),
        },
    ),
    "equiv2": (
        "Equivalence paper, post-softmax maps (4219 images)",
        {
            "gradcam++ vs gradcam": (1.27, 0.24, 0.68),
            "gradcam+ vs gradcam": (1.25, 0.22, 0.68),
            "gradcam++ vs gradcam+": (1.01, 0.01, 0.11),
        },
    ),
}


SETTINGS: dict[str, Setting] = {
    "table1": Setting("vgg16", "imagenet_val"),
    "table2": Setting("vgg16", "voc2007"),
    "table3": Setting("vgg16", "voc2012"),
    "table4": Setting("vgg16", "voc2007"),
    "table5": Setting("alexnet", "imagenet_val"),
    "table6": Setting("alexnet", "voc2007"),
    "table7": Setting("resnet50", "imagenet_val"),
    "table8": Setting("resnet50", "voc2007"),
    "equiv1": Setting("vgg16", "imagenetv2"),
    "equiv2": Setting("vgg16", "imagenetv2"),
    "scorecam": Setting("vgg16", "imagenet_val"),
    **{key: setting for key, (_, setting, _) in TORCHRAY.items()},
}


def setting_mismatch(paper: str, run: Setting) -> str | None:
    """Why a run's numbers cannot be read against `paper`'s (another backbone or data set), or None."""
    table = SETTINGS[paper] if paper in SETTINGS else PUBLISHED_DISTILL[paper].setting
    diffs = [
        f"{what} {ours}, the paper's {theirs}"
        for what, ours, theirs in (
            ("backbone", run.backbone, table.backbone),
            ("data set", DATASET_NAMES.get(run.dataset, run.dataset), DATASET_NAMES[table.dataset]),
        )
        if ours != theirs
    ]
    if not diffs:
        return None
    return f"not comparable with {paper}: this run's {' and '.join(diffs)}"


@dataclass(frozen=True)
class DistillTable:
    """A published table of student arms (`camexp distill`): arm -> value of `metric`; `setting` has the student,
    `student_parameters` its published size (the same name can hide another size, as VGG-11's FC head)."""

    caption: str
    metric: str
    setting: Setting
    values: dict[str, float]
    student_parameters: float


# Grad-CAM++ poster, "Learning from explanations: knowledge distillation"; arm names as camexp/distill/config.py
PUBLISHED_DISTILL: dict[str, DistillTable] = {
    "poster3": DistillTable(
        "Grad-CAM++ poster Table 3: PASCAL VOC 2007, teacher VGG-16 (VOC fine-tuned), student an "
        "11-layer CNN (we use VGG-11)",
        "mAP",
        Setting("vgg11", "voc2007"),
        {"ce+exp_gradcampp": 0.42, "ce+kd": 0.34, "ce": 0.31},
        27e6,  # "an 11-layer CNN with 27 M parameters" (arXiv §5)
    ),
    "poster4": DistillTable(
        "Grad-CAM++ poster Table 4: CIFAR-10, teacher WRN-40-2, student WRN-16-2",
        "top-1 error %",
        Setting("wrn_16_2", "cifar10"),
        {
            "ce": 6.78,
            "ce+exp_gradcampp": 6.74,
            "ce+exp_gradcam": 6.86,
            "ce+kd": 5.68,
            "ce+kd+exp_gradcampp": 5.56,
            "ce+kd+exp_gradcam": 5.8,
        },
        0.7e6,  # WRN-16-2 as Zagoruyko & Komodakis publish it
    ),
}
