"""`--compare-paper` for the field's metrics: published values at the precision printed, and the published
methods a run did not include (Score-CAM, the center baseline) in columns of their own."""

from __future__ import annotations

import pandas as pd
import pytest

from camexp.metrics import MetricResult
from camexp.report.tables import RunSummary, to_markdown, with_paper

# the main table's labels as users read them (the metrics' rows build them from title and direction)
INSERTION, DELETION = "Insertion AUC (higher is better)", "Deletion AUC (lower is better)"
POINTING_ALL, POINTING_DIFFICULT = "Pointing game % (all)", "Pointing game % (difficult)"


def test_pointing_game_beside_torchray_with_the_center_baseline() -> None:
    main = pd.DataFrame({"gradcam": [86.04, 70.0]}, index=[POINTING_ALL, POINTING_DIFFICULT])
    out = with_paper(RunSummary("tr", "torchray_vgg16", main, MetricResult(), images=3))
    assert (
        out.at[POINTING_ALL, "gradcam"] == "86.04 / 86.60" and out.at[POINTING_DIFFICULT, "gradcam"] == "70.00 / 74.00"
    )
    assert out.at[POINTING_ALL, "center (not run)"] == "— / 69.60"
    assert out.at[POINTING_DIFFICULT, "center (not run)"] == "— / 42.40"


def test_auc_rows_keep_three_decimals() -> None:
    main = pd.DataFrame({"gradcam": [0.35712, 0.0912], "gradcam++": [0.3, 0.1]}, index=[INSERTION, DELETION])
    summary = RunSummary("sc", "scorecam", main, MetricResult(), images=3)
    out = with_paper(summary)
    assert out.at[INSERTION, "gradcam"] == "0.357 / 0.357" and out.at[DELETION, "gradcam++"] == "0.100 / 0.082"
    assert out.at[INSERTION, "scorecam (not run)"] == "— / 0.386"
    md = to_markdown(summary, compare_paper=True)
    assert "Score-CAM paper Tables 1-3" in md and "0.357 / 0.357" in md


def test_relperf_table_gets_the_equivalence_papers_r_beside_ours():
    """`--compare-paper` on an equiv1 run: relperf's table (found by its entry's title, not by a prefix) gains
    the published R, mean and std of log R per pair, and says which table they come from."""
    from types import SimpleNamespace

    import pandas as pd

    from camexp.metrics import RELPERF_TABLE, WIN_TABLE
    from camexp.report.tables import summary_tables

    ours = pd.DataFrame({"R": [1.3, 1.1]}, index=["gradcam++ vs gradcam", "gradcam++ vs cam"])
    win = pd.DataFrame({"gradcam": [50.0]}, index=["gradcam++"])
    summary = SimpleNamespace(paper="equiv1", result=SimpleNamespace(tables={RELPERF_TABLE: ours, WIN_TABLE: win}))
    tables = dict(summary_tables(summary, compare_paper=True))
    title = RELPERF_TABLE + " — beside Equivalence paper, pre-softmax maps (4219 images)"
    assert list(tables[title].loc["gradcam++ vs gradcam", ["paper R", "paper mean log R", "paper std log R"]]) == [
        1.24,
        0.21,
        0.64,
    ]
    assert tables[title].loc["gradcam++ vs cam", "paper R"] != tables[title].loc["gradcam++ vs cam", "paper R"]  # NaN
    assert tables[WIN_TABLE] is win  # other tables untouched
    assert dict(summary_tables(summary, compare_paper=False))[RELPERF_TABLE] is ours


@pytest.mark.parametrize(
    ("paper", "spot"),
    [  # cells read off TorchRay's docs/pointing.csv by hand: (method, all, difficult)
        ("torchray_vgg16", ("rise", 86.9, 75.1)),
        ("torchray_resnet50", ("contrastive_excitation_backprop", 90.7, 82.1)),
        ("torchray_coco14_vgg16", ("extremal_perturbation", 51.5, 45.9)),
        ("torchray_coco14_resnet50", ("center", 27.8, 19.5)),
    ],
)
def test_torchrays_whole_table_is_printed_beside_a_run(paper, spot) -> None:
    """Issue 29: all 9 TorchRay rows of each of the 4 settings (72 numbers), methods not run included."""
    main = pd.DataFrame({"gradcam": [50.0, 40.0]}, index=[POINTING_ALL, POINTING_DIFFICULT])
    out = with_paper(RunSummary("tr", paper, main, MetricResult(), images=3))
    assert out.shape == (2, 9) and out.map(lambda c: " / " in c).all().all()
    method, everything, difficult = spot
    assert out.at[POINTING_ALL, f"{method} (not run)"] == f"— / {everything:.2f}"
    assert out.at[POINTING_DIFFICULT, f"{method} (not run)"] == f"— / {difficult:.2f}"
    grad_cam = {"torchray_vgg16": 86.6, "torchray_resnet50": 90.4, "torchray_coco14_vgg16": 54.2}
    assert paper not in grad_cam or out.at[POINTING_ALL, "gradcam"] == f"50.00 / {grad_cam[paper]:.2f}"
