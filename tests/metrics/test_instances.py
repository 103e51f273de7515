"""The multiple-instance metric on hand-made maps and boxes: one peak vs two, the τ boundary, the k = 1
control, boxes cropped away or difficult, constant maps, a plain second implementation on random cases, the
summary's note and its per-image weights."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from camexp.config import ExperimentConfig
from camexp.errors import CamexpError
from camexp.metrics import METRICS, settings_of, validate_settings
from camexp.metrics.batch import BatchContext
from camexp.metrics.instances import instances_found, summarize_instances
from camexp.metrics.pointing import NO_BOX
from camexp.report.uncertainty import per_image_means
from camexp.results import METRIC_COLUMNS

H = W = 32
Image = tuple[list[list[float]], list[int], list[bool]]  # boxes (xyxy pixel edges), their classes, difficult flags


def _cfg(**settings: object) -> ExperimentConfig:
    return ExperimentConfig(
        name="i",
        dataset={"root": "."},
        model={"name": "toy"},
        methods=["m"],
        metrics=["instances"],
        settings={"instances": settings} if settings else {},
    )


def _batch(images: list[Image | None], maps: dict[tuple[int, int], torch.Tensor], **settings: object) -> BatchContext:
    """A batch of 32x32 images; the fake explainer's map of class c on image i is maps[(i, c)] (every class is
    explained in the batched call: the run's own target is a class no image has)."""

    def explain(x: torch.Tensor, classes: torch.Tensor, image_ids: list[str] | None = None) -> SimpleNamespace:
        index = [int(i[2:]) for i in image_ids or []]
        return SimpleNamespace(maps={"m": torch.stack([maps[(i, int(c))] for i, c in zip(index, classes)])})

    n = len(images)
    explanation = SimpleNamespace(maps={"m": torch.zeros(n, H, W)}, targets=torch.full((n,), 19), logits=None)
    batch = {
        "boxes": [None if im is None else torch.tensor(im[0], dtype=torch.float32).reshape(-1, 4) for im in images],
        "box_labels": [None if im is None else torch.tensor(im[1]) for im in images],
        "box_difficult": [None if im is None else torch.tensor(im[2], dtype=torch.bool) for im in images],
        "scale": torch.ones(n, 2, dtype=torch.float64),
        "image_id": [f"im{i}" for i in range(n)],
    }
    cfg = _cfg(**settings)
    return BatchContext(
        cfg, SimpleNamespace(explain=explain), torch.zeros(n, 3, H, W), explanation, batch, validate_settings(cfg)
    )


def _rows(batch: BatchContext) -> dict[tuple[str, int, int], float]:
    out = METRICS.get("instances").compute(batch)
    return {(v.metric, int(p), int(c)): float(x) for v in out for p, c, x in zip(v.pos, v.cls, v.value)}


def _map(*peaks: tuple[int, int, float]) -> torch.Tensor:
    """A 32x32 map of zeros with value v at (row, col) for each peak."""
    m = torch.zeros(H, W)
    for r, c, v in peaks:
        m[r, c] = v
    return m


TWO = ([[0, 0, 8, 8], [20, 20, 28, 28]], [4, 4], [False, False])  # class 4: two objects, far apart


@pytest.mark.parametrize(
    "second, tau, share",
    [
        (0.0, 0.5, 0.5),  # one peak, in the first box: half the objects found, not all
        (0.8, 0.5, 1.0),  # a second peak of 0.8 >= 0.5 x 1 in the second box: both found
        (0.8, 0.9, 0.5),  # ... but not at τ = 0.9
        (0.5, 0.5, 1.0),  # exactly τ x the maximum counts as found
        (0.5, 0.51, 0.5),
    ],
)
def test_one_peak_or_two(second: float, tau: float, share: float) -> None:
    rows = _rows(_batch([TWO], {(0, 4): _map((3, 3, 1.0), (25, 24, second))}, tau=tau))
    assert rows == {("instances_found", 0, 4): share, ("instances_all", 0, 4): float(share == 1.0)}


def test_single_object_is_the_control_and_other_pairs_leave_nan_rows() -> None:
    """Image 0: class 1 with one box (found), class 2 with one box the crop removed (zero width) and one of
    less than a pixel (covering no pixel centre): no instance; image 1: no boxes; image 2: class 4 with a
    difficult second object."""
    images: list[Image | None] = [
        ([[10, 10, 20, 20], [32, 0, 32, 10], [31.6, 0, 32, 10]], [1, 2, 2], [False, False, False]),
        None,
        (TWO[0], TWO[1], [False, True]),
    ]
    maps = {(0, 1): _map((12, 12, 1.0)), (0, 2): _map((5, 31, 1.0)), (2, 4): _map((24, 24, 1.0))}
    rows = _rows(_batch(images, maps))
    assert rows.pop(("instances_single", 0, 1)) == 1.0
    assert rows.pop(("instances_single", 2, 4)) == 0.0  # the difficult box (where the peak is) is no instance
    assert rows.keys() == {("instances_found", 0, 2), ("instances_found", 1, NO_BOX)}
    assert all(v != v for v in rows.values())
    counted = _rows(_batch(images, maps, difficult="count"))
    assert counted[("instances_found", 2, 4)] == 0.5 and counted[("instances_all", 2, 4)] == 0.0


def test_a_constant_map_finds_nothing() -> None:
    rows = _rows(_batch([TWO], {(0, 4): torch.zeros(H, W)}))
    assert rows == {("instances_found", 0, 4): 0.0, ("instances_all", 0, 4): 0.0}


def _plain(maps: np.ndarray, boxes: list[list[float]], tau: float) -> float:
    """The definition written out: pixel (r, c) is in a box when its centre is; a box with no pixel is no
    instance; found when its largest value is >= tau x the map's largest and positive."""
    found = k = 0
    for x0, y0, x1, y1 in boxes:
        values = [maps[r, c] for r in range(H) for c in range(W) if x0 <= c + 0.5 < x1 and y0 <= r + 0.5 < y1]
        if values:
            k += 1
            found += max(values) >= tau * maps.max() and max(values) > 0
    return found / k if k else float("nan")


def test_against_a_plain_implementation_on_random_cases() -> None:
    g = torch.Generator().manual_seed(0)
    images: list[Image | None] = []
    maps = {}
    for i in range(12):
        n = int(torch.randint(1, 5, (1,), generator=g))
        corner = torch.rand(n, 2, generator=g) * 30
        size = torch.rand(n, 2, generator=g) * 12 + 0.3
        boxes = torch.cat([corner, (corner + size).clamp(max=32)], 1).tolist()
        labels = torch.randint(0, 2, (n,), generator=g).tolist()
        images.append((boxes, labels, [False] * n))
        for c in set(labels):
            blur = torch.nn.functional.avg_pool2d(torch.rand(1, 1, H, W, generator=g) ** 8, 5, 1, 2)[0, 0]
            maps[(i, c)] = (blur - blur.min()) / (blur.max() - blur.min())
    tau = 0.4
    rows = _rows(_batch(images, maps, tau=tau))
    checked = 0
    for i, im in enumerate(images):
        assert im is not None
        for c in set(im[1]):
            want = _plain(maps[(i, c)].numpy(), [b for b, lab in zip(im[0], im[1]) if lab == c], tau)
            k = sum(1 for b, lab in zip(im[0], im[1]) if lab == c and _plain(np.ones((H, W)), [b], 1) == 1)
            key = "instances_found" if k >= 2 or k == 0 else "instances_single"
            got = rows[(key, i, c)]
            assert got == pytest.approx(want, nan_ok=True), (i, c)
            if k >= 2:
                assert rows[("instances_all", i, c)] == float(want == 1.0)
                checked += 1
    assert checked >= 3  # the random cases include pairs with several instances


def test_instances_found_on_masks() -> None:
    maps = torch.stack([_map((0, 0, 1.0), (1, 1, 0.25)), torch.zeros(H, W)])
    inside = torch.zeros(3, H, W, dtype=torch.bool)
    inside[0, 1, 1] = inside[1, 0, 0] = inside[2, 0, 0] = True
    assert instances_found(maps, inside, torch.tensor([0, 0, 1]), 0.25).tolist() == [True, True, False]
    assert instances_found(maps, inside, torch.tensor([0, 0, 1]), 0.26).tolist() == [False, True, False]


@pytest.mark.parametrize("tau", [0.0, -0.5, 1.5])
def test_tau_out_of_range_is_one_clear_error(tau: float) -> None:
    with pytest.raises(CamexpError, match=r"^settings\.instances\.tau: Input should be (greater than 0|less than or)"):
        settings_of(_cfg(tau=tau), "instances")
    with pytest.raises(CamexpError, match=r"^settings\.instances\.difficult: "):
        settings_of(_cfg(difficult="drop"), "instances")


def _file_rows() -> pd.DataFrame:
    """per_image_metrics.csv rows: image a has two k >= 2 pairs (1/2 and 1 found), b one (0 found) and one
    k = 1 pair; c a pair without instances; d no boxes."""
    return pd.DataFrame(
        [
            (0, "a", "m", "instances_found", 4, 0.5),
            (0, "a", "m", "instances_all", 4, 0.0),
            (0, "a", "m", "instances_found", 8, 1.0),
            (0, "a", "m", "instances_all", 8, 1.0),
            (1, "b", "m", "instances_found", 4, 0.0),
            (1, "b", "m", "instances_all", 4, 0.0),
            (1, "b", "m", "instances_single", 2, 1.0),
            (2, "c", "m", "instances_found", 3, float("nan")),
            (3, "d", "m", "instances_found", NO_BOX, float("nan")),
        ],
        columns=METRIC_COLUMNS,
    )


def test_summary_is_the_mean_over_pairs_with_counts() -> None:
    res = summarize_instances(_file_rows(), ["m"], _cfg(tau=0.25))
    assert res.rows["Instances found % (k ≥ 2) (higher is better)"]["m"] == pytest.approx(100 * 1.5 / 3)
    assert res.rows["All instances found % (k ≥ 2) (higher is better)"]["m"] == pytest.approx(100 / 3)
    assert res.rows["Instance found % (k = 1, control) (higher is better)"]["m"] == 100.0
    (note,) = res.notes
    assert "τ = 0.25" in note and "k ≥ 2: 3 (image, class) pairs on 2 images" in note
    assert "k = 1 (control): 1 (image, class) pairs on 1 images" in note
    assert "1 pairs without an instance" in note and "1 images without boxes" in note


def test_an_image_with_several_pairs_is_one_value_weighing_their_number() -> None:
    """The bootstrap sees one value per image; its weight makes the weighted mean the mean over pairs."""
    long = per_image_means(_file_rows()).set_index(["image_id", "metric"])
    assert long.loc[("a", "instances_found"), ["value", "weight"]].tolist() == [75.0, 2]
    assert long.loc[("b", "instances_found"), ["value", "weight"]].tolist() == [0.0, 1]
    assert ("c", "instances_found") not in long.index
    found = long.xs("instances_found", level="metric")
    assert (found["value"] * found["weight"]).sum() / found["weight"].sum() == pytest.approx(50.0)
