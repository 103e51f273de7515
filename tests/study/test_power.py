"""The power simulation of a human-trust study (camexp/study/power.py): its vote model against its definition,
and power at the two ends (no effect: about the interval's miss rate; a huge effect: every study)."""

from __future__ import annotations

import numpy as np
import pytest

from camexp.study.power import PAPER_SHARES, power, simulate_votes


def test_paper_shares_are_the_published_totals_over_250() -> None:
    assert PAPER_SHARES == pytest.approx((0.22432, 0.43876, 0.33692)) and sum(PAPER_SHARES) == pytest.approx(1)


def test_votes_follow_the_shares_and_the_concentration() -> None:
    """Mean shares as given; two raters on one image agree with probability E[sum p^2], which for a
    Dirichlet(c·s) is sum (s_k (c s_k + 1)) / (c + 1)."""
    rng = np.random.default_rng(0)
    shares, c = (0.2, 0.5, 0.3), 2.0
    votes = simulate_votes(rng, 20000, 2, shares, c)
    assert [(votes == k).mean() for k in range(3)] == pytest.approx(shares, abs=0.01)
    expected = sum(s * (c * s + 1) for s in shares) / (c + 1)
    assert (votes[0] == votes[1]).mean() == pytest.approx(expected, abs=0.015)


def test_power_is_low_without_an_effect_and_full_with_a_huge_one() -> None:
    none = power(30, 5, shares=(0.35, 0.35, 0.3), studies=60, n_boot=200, seed=1)
    assert none <= 0.2  # a 95 % interval excludes a true zero in about 5 % of studies
    assert power(20, 5, shares=(0.05, 0.9, 0.05), studies=20, n_boot=200, seed=1) == 1.0
