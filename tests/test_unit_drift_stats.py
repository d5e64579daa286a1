"""The drift statistics against textbook values and scipy, and the minimum n sized for the run."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from worker.drift.stats import (
    CellInput,
    WeekRate,
    WeekStats,
    benjamini_hochberg,
    decide,
    min_n_means,
    min_n_rates,
    proportion_drop_p,
    welch_drop_p,
)


def week(values) -> WeekStats:
    a = np.asarray(values, dtype=float)
    return WeekStats(len(a), float(a.sum()), float((a * a).sum()))


def normal_week(mean: float, sd: float, n: int) -> WeekStats:
    """A week whose sample mean and sd are exactly these (for deterministic cells)."""
    return WeekStats(n, mean * n, (mean * mean + sd * sd * (n - 1) / n) * n)


def test_welch_p_equals_scipy_one_sided_unequal_variance_t_test():
    rng = np.random.default_rng(4)
    for n1, n2, shift, sd2 in [(30, 45, -3.0, 25.0), (200, 150, 1.0, 12.0), (8, 5, -10.0, 30.0)]:
        prev, curr = rng.normal(70, 20, n1), rng.normal(70 + shift, sd2, n2)
        expected = sps.ttest_ind(curr, prev, equal_var=False, alternative="less").pvalue
        assert welch_drop_p(week(prev), week(curr)) == pytest.approx(expected, rel=1e-9)


def test_two_proportion_p_equals_the_pooled_z_test_from_its_formula():
    prev, curr = WeekRate(400, 320), WeekRate(380, 281)
    p1, p2 = 320 / 400, 281 / 380
    pooled = (320 + 281) / 780
    z = (p2 - p1) / np.sqrt(pooled * (1 - pooled) * (1 / 400 + 1 / 380))
    assert proportion_drop_p(prev, curr) == pytest.approx(sps.norm.cdf(z), rel=1e-12)
    assert proportion_drop_p(prev, curr) < 0.05 < proportion_drop_p(curr, prev)


def test_benjamini_hochberg_on_the_1995_paper_example_rejects_the_first_four_at_005():
    # Benjamini & Hochberg (1995), section 4: 15 p-values, q* = 0.05 rejects the four smallest.
    p = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240, 0.4262,
         0.5719, 0.6528, 0.7590, 1.0000]
    q = benjamini_hochberg(p)
    assert [qi < 0.05 for qi in q] == [True] * 4 + [False] * 11
    assert q == pytest.approx(list(sps.false_discovery_control(p, method="bh")), rel=1e-12)


def test_benjamini_hochberg_keeps_input_order_and_is_monotone_in_p():
    p = [0.04, 0.001, 0.5, 0.02]
    q = benjamini_hochberg(p)
    assert q == pytest.approx(list(sps.false_discovery_control(p, method="bh")))
    by_p = [q[i] for i in sorted(range(4), key=p.__getitem__)]
    assert by_p == sorted(by_p)


def test_minimum_n_is_sized_at_alpha_over_the_cells_of_the_run():
    one, twenty = min_n_means(20, 5), min_n_means(20, 5, cells=20)
    z = lambda alpha: sps.norm.ppf(1 - alpha) + sps.norm.ppf(0.9)  # noqa: E731
    assert one == int(np.ceil(2 * (z(0.01) * 20 / 5) ** 2)) == 417
    assert twenty == int(np.ceil(2 * (z(0.01 / 20) * 20 / 5) ** 2))
    assert one < twenty < min_n_means(20, 5, cells=200)
    # At the sized n a z test at alpha/m has 90% power for the threshold drop.
    se = 20 * np.sqrt(2 / twenty)
    assert sps.norm.cdf(5 / se - sps.norm.ppf(1 - 0.01 / 20)) >= 0.9
    assert min_n_rates(0.8, 0.05, cells=20) > min_n_rates(0.8, 0.05)


def test_insufficient_data_reports_the_n_it_has_and_the_n_it_needs_for_this_run():
    stable = [CellInput(f"c{i}", normal_week(70, 20, 900), normal_week(70, 20, 900)) for i in range(9)]
    small = CellInput("small", normal_week(70, 20, 120), normal_week(68, 20, 150))
    decisions = decide(stable + [small])
    d = decisions[-1]
    assert d.status == "insufficient_data"
    assert d.n_have == 120 and d.cells_in_run == 10
    assert d.n_needed == min_n_means(20, 5, cells=10)
    assert all(x.status == "ok" and x.n_needed <= 900 for x in decisions[:-1])
    [alone] = decide([small])
    assert alone.n_needed == min_n_means(20, 5) < d.n_needed  # the same cell checked on its own


def test_a_clear_drop_at_the_sized_n_alerts_and_the_stable_cells_do_not():
    n = min_n_means(20, 5, cells=20)
    cells = [CellInput(f"c{i}", normal_week(70, 20, n), normal_week(70, 20, n)) for i in range(19)]
    cells.append(CellInput("drop", normal_week(70, 20, n), normal_week(64, 20, n)))
    decisions = decide(cells)
    assert [d.key for d in decisions if d.status == "alert"] == ["drop"]
    assert decisions[-1].q < 0.01 and decisions[-1].drop == pytest.approx(6.0)


def test_an_untestable_cell_has_no_needed_n_and_counts_in_the_family():
    empty = CellInput("empty", WeekStats(0, 0.0, 0.0), normal_week(70, 20, 50))
    [d, other] = decide([empty, CellInput("x", normal_week(70, 20, 50), normal_week(70, 20, 50))])
    assert d.status == "insufficient_data" and d.n_needed is None and d.p == 1.0 and d.n_have == 0
    assert other.n_needed == min_n_means(20, 5, cells=2)


def test_a_tiny_cell_of_identical_scores_does_not_page():
    """Two 100s then two 75s: zero variance must not read as certainty (p = 0 would alert)."""
    tiny = CellInput("tenant=small", week([100, 100]), week([75, 75]))
    rng = np.random.default_rng(3)
    others = [CellInput(str(i), week(rng.normal(70, 20, 300)), week(rng.normal(70, 20, 300))) for i in range(10)]
    decision = decide([tiny, *others])[0]
    assert decision.status != "alert" and decision.p > 0.01
    assert decision.n_needed is not None and decision.n_needed > 100  # sized with the floor's spread, not 2
