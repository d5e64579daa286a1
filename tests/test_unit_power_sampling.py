"""Power-aware sampling (samplers/power.py) and the weighted means (worker/drift/weighting.py):
pure unit tests, no Redis."""
from __future__ import annotations

import math

import numpy as np
import pytest

from samplers import power as pw
from samplers.hashing import sample_point
from worker.drift import sequential as sq
from worker.drift.weighting import WeightedSums, hajek_mean

TARGET = pw.DetectionTarget(drop=5.0, hours=72.0)
DAY = 86400.0


def policy(judged: float | None = None, base: float = 0.01, **kw: float) -> pw.Policy:
    return pw.Policy(TARGET, pw.Budget(judged_per_day=judged), base_rate=base, **kw)  # type: ignore[arg-type]


def test_rate_meets_the_target_by_the_detectors_own_delay() -> None:
    for sd, traffic in ((20.0, 5_000.0), (30.0, 800.0), (12.0, 100_000.0)):
        alloc = pw.allocate(policy(), [pw.Cell("c", traffic, sd=sd)])
        c = alloc.cell("c")
        n = c.rate * traffic
        ref = sq.Reference(70.0, sd, round(n * TARGET.reference_days), TARGET.reference_days, None, None, "ok")
        d = sq.design(ref, TARGET.drop, n_per_day=n)
        assert d is not None
        assert sq.expected_delay_hours(d) <= TARGET.hours * 1.0001
        assert c.meets_target and c.reason is None
        # ... and not wastefully: 10% fewer judged would miss it (unless the base rate rules).
        if c.rate > 0.01:
            assert pw.delay_hours(0.9 * n, sd, TARGET) > TARGET.hours


def test_budget_binds_by_priority() -> None:
    need = pw.needed_judged_per_day(20.0, TARGET)
    cells = [pw.Cell("low", 10_000, priority=1), pw.Cell("high", 10_000, priority=5)]
    alloc = pw.allocate(policy(judged=1.5 * need, base=0.0), cells)
    assert alloc.cell("high").meets_target
    low = alloc.cell("low")
    assert not low.meets_target and low.reason == pw.REASON_BUDGET and "budget" in low.note
    assert alloc.judged_per_day == pytest.approx(1.5 * need, rel=1e-6)
    # swap the priorities: the other one wins
    swapped = pw.allocate(policy(judged=1.5 * need, base=0.0),
                          [pw.Cell("low", 10_000, priority=9), pw.Cell("high", 10_000, priority=5)])
    assert swapped.cell("low").meets_target and not swapped.cell("high").meets_target


def test_base_rate_is_a_floor_even_over_budget() -> None:
    cells = [pw.Cell("big", 1_000_000), pw.Cell("small", 50)]
    alloc = pw.allocate(policy(judged=100, base=0.02), cells)
    assert all(c.rate >= 0.02 for c in alloc.cells)
    assert alloc.over_budget
    # a big cell needs far less than the base rate: it keeps the base rate
    roomy = pw.allocate(policy(base=0.05), [pw.Cell("big", 1_000_000)])
    assert roomy.cell("big").rate == 0.05


def test_traffic_floor_is_reported_with_why() -> None:
    alloc = pw.allocate(policy(), [pw.Cell("tiny", 30, sd=25)])
    c = alloc.cell("tiny")
    assert c.reason == pw.REASON_TRAFFIC and not c.meets_target
    assert c.rate == 1.0  # best effort
    assert "traffic floor" in c.note
    off = pw.allocate(pw.Policy(TARGET, pw.Budget(), base_rate=0.01, best_effort=False), [pw.Cell("tiny", 30, sd=25)])
    assert off.cell("tiny").rate == 0.01


def test_boost_multiplies_within_budget_and_expires() -> None:
    t0 = 1_700_000_000.0
    cells = [pw.Cell("a", 50_000, changed_at=t0), pw.Cell("b", 50_000)]
    plain = pw.allocate(policy(), cells, now=t0 - 10)  # before the change: no boost
    base_a = plain.cell("a").rate
    on = pw.allocate(policy(), cells, now=t0 + 3600)
    assert on.cell("a").boosted and on.cell("a").rate == pytest.approx(10 * base_a)
    assert on.cell("b").rate == plain.cell("b").rate
    # within the budget: room for the targets plus 3 × a's target
    tight = plain.judged_per_day + 3 * base_a * 50_000
    capped = pw.allocate(policy(judged=tight), cells, now=t0 + 3600)
    assert capped.cell("a").rate == pytest.approx(4 * base_a, rel=1e-6)
    assert capped.judged_per_day <= tight * (1 + 1e-9)
    assert capped.cell("b").meets_target  # the targets come before the boost
    expired = pw.allocate(policy(), cells, now=t0 + 48 * 3600 + 1)
    assert not expired.cell("a").boosted and expired.cell("a").rate == base_a
    assert not pw.boost_active(t0, t0 + 48 * 3600)
    assert pw.boost_active(t0, t0 + 48 * 3600 - 1)


def test_usd_budget_and_overlapping_cells_cost_the_max_rate() -> None:
    b = pw.Budget(usd_per_day=10.0, usd_per_judgement=0.005)
    assert b.judged_cap == 2000
    cells = [pw.Cell("all", 20_000), pw.Cell("f1", 10_000), pw.Cell("f2", 10_000)]
    strata = [pw.Stratum(10_000, ("all", "f1")), pw.Stratum(10_000, ("all", "f2"))]
    alloc = pw.allocate(pw.Policy(TARGET, b, base_rate=0.0), cells, strata=strata)
    rates = alloc.rates
    expected = 10_000 * max(rates["all"], rates["f1"]) + 10_000 * max(rates["all"], rates["f2"])
    assert alloc.judged_per_day == pytest.approx(expected)
    assert alloc.usd_per_day == pytest.approx(expected * 0.005)
    assert pw.inclusion_probability(rates, ["all", "f1"]) == max(rates["all"], rates["f1"])
    assert pw.inclusion_probability({"a": 0.2}, ["a", "unknown"], base_rate=0.5) == 0.5
    # the parent's judged n counts its children's higher rates (Kish), so it meets its target
    assert alloc.cell("all").judged_per_day >= rates["all"] * 20_000
    assert alloc.cell("all").meets_target and rates["all"] == 0.0  # served by its children's rates
    assert alloc.judged_per_day <= 2000 * (1 + 1e-9)
    assert pw.effective_n([(100, 0.5), (100, 0.5)]) == pytest.approx(100)
    assert pw.effective_n([(100, 1.0), (100, 0.1)]) < 110


def test_without_overlap_a_parent_meets_its_target_by_its_own_rate() -> None:
    """The planner's setting: a cell's detector reads only what its own rate picks, so a parent
    served by its children's rates alone does not meet its target; it gets its own rate."""
    cells = [pw.Cell("all", 20_000), pw.Cell("f1", 10_000), pw.Cell("f2", 10_000)]
    strata = [pw.Stratum(10_000, ("all", "f1")), pw.Stratum(10_000, ("all", "f2"))]
    alloc = pw.allocate(policy(5000, base=0.0, count_overlap=False), cells, strata=strata)  # type: ignore[arg-type]
    rates = alloc.rates
    for c in cells:
        assert alloc.cell(c.key).judged_per_day == pytest.approx(c.traffic_per_day * rates[c.key])
        assert alloc.cell(c.key).meets_target, alloc.cell(c.key).note
    need = pw.needed_judged_per_day(20.0, TARGET)
    assert rates["all"] * 20_000 >= need * (1 - 1e-6) and rates["all"] > 0
    # The cost still counts each trace once, at the highest rate of its cells.
    assert alloc.judged_per_day == pytest.approx(10_000 * max(rates["all"], rates["f1"])
                                                 + 10_000 * max(rates["all"], rates["f2"]))


def test_nested_determinism() -> None:
    ids = [f"trace-{i}" for i in range(3000)]
    rates = [0.0, 0.01, 0.05, 0.2, 0.5, 1.0]
    picked = [{t for t in ids if pw.selected(t, {"c": r}, ["c"])} for r in rates]
    for small, big in zip(picked, picked[1:]):
        assert small <= big
    assert picked[0] == set() and picked[-1] == set(ids)
    assert len(picked[3]) == pytest.approx(600, abs=90)
    # the contract's point, and a trace's max over its cells
    t = ids[7]
    u = sample_point(t)
    assert pw.selected(t, {"a": u + 1e-9, "b": 0.0}, ["a", "b"])
    assert not pw.selected(t, {"a": u, "b": 0.0}, ["a", "b"])


def _planted_day(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Two segments: A (90% of traffic, mean 80) at 2%, B (10%, mean 40, boosted) at 20%."""
    seg_b = np.arange(50_000) < 5_000
    scores = np.where(seg_b, rng.normal(40, 15, 50_000), rng.normal(80, 15, 50_000))
    p = np.where(seg_b, 0.2, 0.02)
    return scores, p, float(scores.mean())


def test_hajek_mean_is_unbiased_on_a_planted_boosted_segment() -> None:
    rng = np.random.default_rng(7)
    scores, p, truth = _planted_day(rng)
    hajek, plain, covered = [], [], 0
    for _ in range(300):
        keep = rng.random(scores.size) < p
        s = WeightedSums.of(scores[keep], p[keep])
        hajek.append(s.mean)
        plain.append(scores[keep].mean())
        covered += abs(s.mean - truth) <= 1.96 * s.se(finite_population=True)
    assert abs(np.mean(hajek) - truth) < 0.2
    assert np.mean(plain) - truth < -10  # the boosted low segment drags the plain mean down
    assert 0.9 <= covered / 300 <= 0.99


def test_weighted_sums_combine_and_round_trip() -> None:
    rng = np.random.default_rng(1)
    x, p = rng.normal(70, 20, 400), rng.choice([0.01, 0.1, 1.0], 400)
    whole = WeightedSums.of(x, p)
    parts = WeightedSums.combine(WeightedSums.of(x[i:i + 100], p[i:i + 100]) for i in range(0, 400, 100))
    assert parts.mean == pytest.approx(whole.mean) and parts.variance() == pytest.approx(whole.variance())
    assert WeightedSums.from_fields(whole.fields()) == whole
    assert whole.mean == pytest.approx(hajek_mean(x, p))
    one = WeightedSums().add(50.0, 0.25)
    assert one.fields() == WeightedSums.increments(50.0, 0.25)
    # equal probabilities: the unweighted figures
    eq = WeightedSums.of(x, 0.1)
    assert eq.mean == pytest.approx(x.mean()) and eq.effective_n == pytest.approx(400)
    assert eq.sd == pytest.approx(x.std(ddof=1))
    assert eq.variance() == pytest.approx(x.var() / 400)
    agg = eq.to_day_aggregate("2026-01-01")
    ref = sq.reference([agg], min_n=1)
    assert ref.mean == pytest.approx(x.mean()) and ref.sd == pytest.approx(x.std(ddof=1), rel=1e-6)
    assert math.isnan(WeightedSums().mean)
    with pytest.raises(ValueError):
        WeightedSums.of([1.0], [0.0])
