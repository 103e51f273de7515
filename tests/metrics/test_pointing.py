"""Pointing games on hand-made maps and boxes: the tolerance in original pixels, the energy share, which
pairs are explained, skipped or difficult."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from camexp.config import ExperimentConfig
from camexp.metrics import METRICS, validate_settings
from camexp.metrics.batch import BatchContext
from camexp.metrics.pointing import NO_BOX, energy_shares, pointing_hits, summarize_pointing
from camexp.results import METRIC_COLUMNS


def peak(h: int, w: int, row: int, col: int) -> torch.Tensor:
    m = torch.zeros(1, h, w)
    m[0, row, col] = 1.0
    return m


@pytest.mark.parametrize(
    "x0, scale, hit",
    [
        (18.0, (0.5, 0.5), True),  # point (10.5, 10.5); 7.5 input px = 15 original px: on the tolerance
        (18.1, (0.5, 0.5), False),  # 7.6 input px = 15.2 original px
        (18.1, (1.0, 0.5), False),  # only the horizontal scale matters for a horizontal gap
        (18.1, (0.5, 0.51), True),  # 7.6 / 0.51 = 14.9 original px
        (5.0, (0.1, 0.1), True),  # inside the box: distance 0
    ],
)
def test_hit_is_within_tolerance_in_original_pixels(x0: float, scale: tuple[float, float], hit: bool) -> None:
    maps = peak(32, 32, 10, 10)
    boxes = torch.tensor([[x0, 0.0, 30.0, 30.0]], dtype=torch.float64)
    got = pointing_hits(maps, boxes, torch.tensor([0]), torch.tensor([scale], dtype=torch.float64), 15.0)
    assert got.tolist() == [hit]


def test_diagonal_distance_and_any_box_of_the_pair() -> None:
    maps = torch.cat([peak(32, 32, 0, 0), peak(32, 32, 0, 0)])
    # pair 0: a box 9 px right and 12 px down of the point (0.5, 0.5): distance 15 -> hit; pair 1: one far box
    # and one near box, any box counts
    boxes = torch.tensor([[9.5, 12.5, 20, 20], [25, 25, 30, 30], [0, 0, 2, 2]], dtype=torch.float64)
    owner = torch.tensor([0, 1, 1])
    got = pointing_hits(maps, boxes, owner, torch.ones(2, 2, dtype=torch.float64), 15.0)
    assert got.tolist() == [True, True]
    assert pointing_hits(maps, boxes, owner, torch.ones(2, 2, dtype=torch.float64), 14.99).tolist() == [False, True]


def test_energy_share_by_hand() -> None:
    maps = torch.tensor([[[1.0, 2, 0, 0], [3, 4, 0, 0], [0, 0, 0, 0], [0, 0, 0, 10]], torch.zeros(4, 4).tolist()])
    inside = torch.zeros(2, 4, 4, dtype=torch.bool)
    inside[:, :2, :2] = True
    assert energy_shares(maps, inside).tolist() == [pytest.approx(10 / 20), 0.0]  # a map without mass: 0


def _batch(targets: list[int], **settings: dict) -> tuple[BatchContext, list]:
    """Three 32x32 images. Image 0: classes 3 (the target, a big box) and 5 (a small box); image 1: class 7
    whose only box was cropped away (zero width) and class 2 with two boxes; image 2: no boxes. The fake
    explainer's map for class c peaks at pixel (c, c)."""
    calls: list = []

    def explain(x: torch.Tensor, classes: torch.Tensor, image_ids: list[str] | None = None) -> SimpleNamespace:
        calls.append((classes.tolist(), image_ids))
        return SimpleNamespace(maps={"m": torch.cat([peak(32, 32, int(c), int(c)) for c in classes])})

    cfg = ExperimentConfig(
        name="p", dataset={"root": "."}, model={"name": "toy"}, methods=["m"], metrics=["avg_drop"], **settings
    )
    own = torch.cat([peak(32, 32, 3, 3), peak(32, 32, 31, 31), peak(32, 32, 0, 0)])  # the run's maps (targets)
    explanation = SimpleNamespace(maps={"m": own}, targets=torch.tensor(targets), logits=None)
    f = torch.float32
    batch = {
        "boxes": [
            torch.tensor([[0, 0, 32, 20], [20, 20, 24, 24]], dtype=f),
            torch.tensor([[32, 0, 32, 10], [0, 0, 4, 4], [28, 28, 32, 32]], dtype=f),
            None,
        ],
        "box_labels": [torch.tensor([3, 5]), torch.tensor([7, 2, 2]), None],
        "scale": torch.ones(3, 2, dtype=torch.float64),
        "image_id": ["im0", "im1", "im2"],
    }
    return BatchContext(
        cfg, SimpleNamespace(explain=explain), torch.zeros(3, 3, 32, 32), explanation, batch, validate_settings(cfg)
    ), calls


def test_pointing_pairs_reuse_skip_and_difficult() -> None:
    batch, calls = _batch([3, 2, 0])
    out = METRICS.get("pointing_game").compute(batch)
    rows = {(v.metric, int(p), int(c)): float(x) for v in out for p, c, x in zip(v.pos, v.cls, v.value)}
    # class 3 on image 0 is the target: the run's map (peak (3,3), inside box 0); class 5 explained (peak
    # (5,5), 15 px from box (20,20)-(24,24): distance hypot(14.5, 14.5) > 15 -> miss); image 1 class 2 is
    # its target: the run's map peaks at (31, 31), inside the box at (28..32) -> hit
    assert calls == [([5], ["im0"])]  # seeded methods seed by (seed, image id), as in the run's own maps
    nan = {k for k, x in rows.items() if x != x}
    assert nan == {("pointing_game", 1, 7), ("pointing_game", 2, NO_BOX)}
    assert rows[("pointing_game", 0, 3)] == 1.0 and rows[("pointing_game", 0, 5)] == 0.0
    assert rows[("pointing_game", 1, 2)] == 1.0
    # difficult: class 5 covers 16/1024 of the image with class 3 present; class 3 covers 640/1024; image
    # 1's class 2 covers 32/1024, and class 7 is present (even though its box is cropped away)
    assert {k for k in rows if k[0] == "pointing_game_difficult"} == {
        ("pointing_game_difficult", 0, 5),
        ("pointing_game_difficult", 1, 2),
    }


def test_difficult_pairs_from_a_file_in_torchrays_format(tmp_path: Path) -> None:
    """TorchRay's rule for its EBP lists: a listed image's pair is difficult when its class is flagged 1; every
    pair of an image the file does not list counts (TorchRay skips a pair only when the file says it is easy)."""
    from camexp.errors import CamexpError
    from camexp.metrics import settings_fingerprint

    flags = tmp_path / "difficult.txt"
    row = "\t".join("1" if c == 3 else "0" for c in range(8))  # im0: its big class-3 box (easy by area) flagged
    flags.write_text(f"im0\t{row}\nim9\t{row}\n")
    batch, _ = _batch([3, 2, 0], pointing={"difficult_pairs": str(flags)})
    out = METRICS.get("pointing_game").compute(batch)
    difficult = {(int(p), int(c)) for v in out if v.metric == "pointing_game_difficult" for p, c in zip(v.pos, v.cls)}
    assert difficult == {(0, 3), (1, 2)}  # im0 class 5 flagged 0: easy; im1 not listed: counted
    assert settings_fingerprint(batch.cfg)["pointing"]["difficult_pairs"] == str(flags)
    plain, _ = _batch([3, 2, 0])
    assert "difficult_pairs" not in settings_fingerprint(plain.cfg)["pointing"]  # older run folders keep theirs
    short = tmp_path / "short.txt"
    short.write_text("im0\t1\t0\t0\t1\n")  # 4 classes; image 0 has class 5
    batch, _ = _batch([3, 2, 0], pointing={"difficult_pairs": str(short)})
    with pytest.raises(CamexpError, match="short.txt flags 4 classes; the data set has class 5"):
        METRICS.get("pointing_game").compute(batch)
    bad = tmp_path / "bad.txt"
    for text, said in (("im0\t1\t2\n", "bad.txt:1: give an image name"), ("a\t1\nb\t1\t0\n", "same number")):
        bad.write_text(text)
        with pytest.raises(CamexpError, match=f"pointing.difficult_pairs: Value error, .*{said}"):
            _batch([3, 2, 0], pointing={"difficult_pairs": str(bad)})
    with pytest.raises(CamexpError, match="nope.txt: no such file"):
        _batch([3, 2, 0], pointing={"difficult_pairs": str(tmp_path / "nope.txt")})


def test_energy_selects_single_small_boxes() -> None:
    batch, calls = _batch([3, 2, 0])
    (out,) = METRICS.get("energy_pointing").compute(batch)
    assert out.pos.tolist() == [0, 1, 2] and out.value.isnan().all()  # 2 boxes, 3 boxes, none
    batch.batch["boxes"][0] = batch.batch["boxes"][0][1:]
    batch.batch["box_labels"][0] = batch.batch["box_labels"][0][1:]
    batch._cache.clear()
    values = {int(p): float(x) for v in METRICS.get("energy_pointing").compute(batch) for p, x in zip(v.pos, v.value)}
    assert values[0] == 0.0  # class 5's map peaks at (5,5), outside the box (20..24)
    assert values[1] != values[1] and values[2] != values[2]


def test_pointing_summary_is_the_mean_over_classes() -> None:
    rows = pd.DataFrame(
        [
            # class 1: 2 hits of 3; class 2: 0 of 1 -> mean of 2/3 and 0 = 33.3 %, not 2/4 = 50 %
            (0, "a", "m", "pointing_game", 1, 1.0),
            (1, "b", "m", "pointing_game", 1, 1.0),
            (2, "c", "m", "pointing_game", 1, 0.0),
            (2, "c", "m", "pointing_game", 2, 0.0),
            (2, "c", "m", "pointing_game_difficult", 2, 0.0),
            (3, "d", "m", "pointing_game", NO_BOX, float("nan")),
        ],
        columns=METRIC_COLUMNS,
    )
    cfg = ExperimentConfig(name="p", dataset={"root": "."}, model={"name": "toy"}, methods=["m"], metrics=["avg_drop"])
    res = summarize_pointing(rows, ["m"], cfg)
    assert res.rows["Pointing game % (all)"]["m"] == pytest.approx(100 / 3)
    assert res.rows["Pointing game % (difficult)"]["m"] == 0.0
    assert (
        "4 (image, class) pairs, 1 difficult (the class's boxes under 0.25 of the image, another class present); "
        "0 pairs skipped"
        in res.notes[0]
        and "1 images without" in res.notes[0]
    )


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (224, 224), (333, 1000)])
def test_resize_scale_matches_the_box_mapping(size: tuple[int, int]) -> None:
    """The scale the data set records is the one torchvision applies to boxes (a box inside the crop)."""
    from PIL import Image

    from camexp.data.transforms import InputSpec, PixelTransform

    spec = InputSpec(
        size=(224, 224),
        interpolation="bilinear",
        crop_pct=0.875,
        crop_mode="center",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    tf = PixelTransform(spec)
    w, h = size
    box = torch.tensor([[w / 2 - 20, h / 2 - 30, w / 2 + 20, h / 2 + 30]])
    _, mapped = tf(Image.new("RGB", size), box)
    sy, sx = tf.scale(h, w)
    assert float(mapped[0, 2] - mapped[0, 0]) == pytest.approx(40 * sx, rel=1e-5)
    assert float(mapped[0, 3] - mapped[0, 1]) == pytest.approx(60 * sy, rel=1e-5)
    assert min(sy, sx) == pytest.approx(256 / min(w, h), rel=1e-2)


@pytest.mark.parametrize(
    "metrics, analyses, explained",
    [
        (["pointing_game", "energy_pointing"], ["mloc"], [[5]]),  # mLoc's pairs are the pointing games' (cached)
        ([], ["mloc"], [[5]]),  # mLoc alone explains its one non-target pair
        (["pointing_game"], [], [[5]]),
    ],
)
def test_class_maps_of_other_classes_are_explained_once_per_batch_for_every_job(
    tmp_path, metrics: list[str], analyses: list[str], explained: list[list[int]]
) -> None:
    """The run's jobs share one batch context: with the pointing games and mLoc on, the map of image 0's
    non-target class 5 is explained once (one explainer call), and every job reads it from the context's
    cache. Before the one context, mLoc explained its classes again in a call of its own."""
    from camexp.analyses.localization import MLOC_CSV
    from camexp.jobs import jobs_of
    from camexp.results import read_records

    ctx, calls = _batch([3, 2, 0])
    cfg = ExperimentConfig(
        name="p",
        dataset={"root": "."},
        model={"name": "toy"},
        methods=["m"],
        metrics=metrics,
        analyses=analyses,
        localization={"topk": 2},
    )
    ctx.cfg = cfg
    logits = torch.zeros(3, 10)
    logits[0, [3, 5]] = torch.tensor([2.0, 1.0])  # image 0's top-2: its target 3 and class 5 (both boxed)
    logits[1, [2, 7]] = torch.tensor([2.0, 1.0])  # image 1's top-2: its target 2 and 7 (whose box is cropped away)
    logits[2, [0, 1]] = torch.tensor([2.0, 1.0])  # image 2: no boxes
    ctx.explanation.logits = logits
    ctx.batch["index"] = torch.arange(3)
    ctx.own = lambda name: tmp_path / name
    for job in jobs_of(cfg):  # as the runner's batch loop does
        job.start()
        job.update(ctx)
    assert [classes for classes, _ in calls] == explained
    assert [ids for _, ids in calls] == [["im0"]]  # seeded by the image's id, as the run's own maps
    if analyses:
        rows = read_records(tmp_path / MLOC_CSV, ["index", "image_id", "class", "rank", "method", "delta", "loc"])
        assert sorted(set(zip(rows["index"], rows["class"]))) == [(0, 3), (0, 5), (1, 2)]
        # class 5's map peaks at pixel (5, 5), outside class 5's box [20, 24)^2: no pixel of it on at δ = 0
        assert rows[(rows["class"] == 5) & (rows["delta"] == 0.0)]["loc"].tolist() == [0.0]
