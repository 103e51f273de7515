"""What a record metric declares on its entry reaches the outputs with no edit elsewhere: a plug-in's paired
statistic (on the images it selects) lands in pairwise.csv, and its extra table is written to the file it names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from camexp.config import StatsConfig
from camexp.metrics import METRICS, Metric, MetricParams, MetricResult, Pairwise, RecordsView
from camexp.report.tables import write_summary
from tests.report.test_uncertainty import records, summarize, synthetic

TITLE = "Gap table (test plug-in)"
SEEN: dict[str, object] = {}


def gap_values(o: pd.DataFrame) -> pd.DataFrame:
    """Per image: O_A - O_B of the first two methods."""
    return pd.DataFrame({"gap": o.iloc[:, 0] - o.iloc[:, 1]})


def gap_table(o: pd.DataFrame, n_boot: int, level: float, seed: int, boot: np.ndarray) -> pd.DataFrame:
    SEEN["boot"] = boot
    a, b = o.columns[:2]
    value = float(gap_values(o)["gap"].mean())
    return pd.DataFrame([{"metric": "gap", "method_a": a, "method_b": b, "value": value, "interval": "t", "n": len(o)}])


def first_ten(view: RecordsView, params: MetricParams) -> torch.Tensor:
    return torch.tensor([i < 10 for i in range(len(view.image_ids))])


def _gap(view: RecordsView, params: MetricParams) -> MetricResult:
    return MetricResult(tables={TITLE: pd.DataFrame({"x": [1.5]})})


def test_a_plugin_pairwise_statistic_and_table_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = Metric(
        "test_gap", _gap, pairwise=Pairwise(gap_values, gap_table, select=first_ten), table_files=((TITLE, "gap_file"),)
    )
    monkeypatch.setitem(METRICS._entries, "test_gap", entry)  # registered for this test only
    y, o = synthetic(3, n=25)
    methods = ["gradcam", "gradcam++", "cam"]
    s = summarize("r", None, records(y, o), methods, ["test_gap"], MetricParams(), StatsConfig(bootstrap=100, seed=1))
    assert s.stats is not None
    assert "gap" not in set(s.stats.pairwise.metric)  # the rows are the entry's, whatever its table called them
    row = s.stats.pairwise[s.stats.pairwise.metric == "test_gap"].iloc[0]
    # the images are ordered by id (img000..img024 = record order), and select keeps the first ten
    assert row.n == 10 and np.isclose(row.value, (o[:10, 0] - o[:10, 1]).mean())
    boot = SEEN["boot"]
    assert isinstance(boot, np.ndarray) and boot.shape == (100, 1)  # resample means of the selected images' gaps
    assert np.all(boot >= (o[:10, 0] - o[:10, 1]).min() - 1e-12) and np.all(boot <= (o[:10, 0] - o[:10, 1]).max())
    write_summary(tmp_path, s)
    assert pd.read_csv(tmp_path / "gap_file.csv", index_col=0)["x"].tolist() == [1.5]


def test_every_metric_and_analysis_declares_its_cost() -> None:
    """Issue 30: `camexp metrics` / `camexp analyses` list each one's cost per image (forwards, backwards,
    re-explanations). camexp's own entries (a plug-in resolved by another test in this process has a ':') declare it;
    the record metrics and record plots cost nothing beyond the run, and say so."""
    from camexp.analyses import ANALYSES
    from camexp.metrics.base import RECORDS_COST

    entries = [(n, e.cost) for n, e in METRICS.items() if ":" not in n]
    entries += [(n, e.cost) for n, e in ANALYSES.items() if ":" not in n]
    assert [n for n, cost in entries if not cost.strip()] == []
    assert {n for n, e in METRICS.items() if e.source == "records" and ":" not in n} == {
        n for n, cost in entries if cost == RECORDS_COST and n in METRICS
    }
    assert METRICS.get("deletion").cost == METRICS.get("insertion").cost and "S - 1" in METRICS.get("deletion").cost
    assert ANALYSES.get("area_curve").cost.startswith("11 x M forwards")


def test_a_record_metric_may_declare_another_cost() -> None:
    assert Metric("x", _gap).cost == "none (the records)" and Metric("x", _gap, cost="2 forwards").cost == "2 forwards"
