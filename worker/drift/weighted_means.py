"""Means read from the drift aggregates' cell-days: Hájek (weighted by 1/p, worker/drift/weighting.py)
where the cell-days carry weights (a power-aware rubric's: worker/drift/contribution.py), the
plain mean where they do not (every other rubric, exactly as before). The weekly summary
(check.py), the report and the planner read them through here."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from worker.drift.stats import WeekRate, WeekStats
from worker.drift.weighting import FIELD_PREFIX, WEIGHTED_PASSES, WeightedSums

Row = Mapping[str, float]  # one cell-day's hash (aggregates.read_days)


def weighted(rows: Iterable[Row]) -> WeightedSums | None:
    """The rows' weighted sums; None when none of them has weights (a rubric without a target)."""
    found = [WeightedSums.from_fields(r) for r in rows if r.get(FIELD_PREFIX + "sw", 0.0) > 0]
    return WeightedSums.combine(found) if found else None


def mean(rows: Iterable[Row]) -> float | None:
    """The Hájek mean of the rows where they have weights, else the plain mean; None when empty."""
    rows = list(rows)
    sums = weighted(rows)
    if sums is not None:
        return sums.mean
    n = sum(r.get("n", 0.0) for r in rows)
    return sum(r.get("sum", 0.0) for r in rows) / n if n else None


def week_stats(rows: Iterable[Row]) -> WeekStats | None:
    """A week of weighted scores as the Welch test reads it: Kish's effective n with the Hájek mean
    and the weighted SD (as ``WeightedSums.to_day_aggregate``); None without weights."""
    sums = weighted(rows)
    if sums is None:
        return None
    day = sums.to_day_aggregate("")
    return WeekStats(day.n, day.total, day.total_sq)


def week_rate(rows: Iterable[Row]) -> WeekRate | None:
    """A week's weighted pass rate (Σw over passes / Σw) at Kish's effective n; None without weights."""
    rows = list(rows)
    sums = weighted(rows)
    if sums is None or sums.sw <= 0:
        return None
    n = int(round(sums.effective_n))
    rate = sum(r.get(WEIGHTED_PASSES, 0.0) for r in rows) / sums.sw
    return WeekRate(n, int(round(rate * n)))
