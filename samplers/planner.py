"""The rate plan of each power-aware rubric (``sampling.detection_target``), computed from what
Redis knows and kept there for every sampler replica (samplers/plan.py; issue 27, item 4).

Per rubric version, every ``PLAN_EVERY_SECONDS`` (the scheduler's "rate plan" phase; ``sample
--once`` too when the plan is older): its inputs, then samplers/power.py's ``allocate``:

* traffic: each stratum's traces a day (samplers/traffic.py), summed into each cell's;
* each cell's score SD: the drift aggregates of the last 28 trace-days (the weighted SD where the
  cell-days have weights), 20 points until the cell has ``MIN_SD_N`` scores;
* change events: the newest first-seen prompt version, release, version or judged model of the
  cell (worker/drift/slice_log.py ``first_seen``, read only) that is not the first value its
  dimension had there: a change, boosted ``boost.factor``× for ``boost.hours``;
* the budget: ``sampling.daily_budget_judged`` and ``budget.daily_usd`` at the cost per judged
  trace of the last 7 days (a USD budget counts once that cost is known);
* the priorities of ``sampling.priority``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Iterable

import redis

from samplers import plan as plans
from samplers.plan import PlannedCell, RatePlan, finite
from samplers.power import Budget, Cell, DetectionTarget, Policy, Stratum, allocate
from samplers.traffic import traffic_per_day
from worker.drift.aggregates import cell_key, read_days
from worker.drift.slice_log import EVENT_DIMENSIONS, first_seen
from worker.drift.stats import WeekStats
from worker.drift.weighting import WeightedSums
from worker.rubrics.rubric import Rubric

PLAN_EVERY_SECONDS = 900
SD_DAYS = 28
COST_DAYS = 7
MIN_SD_N = 30  # scores before a cell's own SD replaces the default
DEFAULT_SD = 20.0
log = logging.getLogger("tracejudge.planner")


def refresh_plans(client: redis.Redis, rubrics: Iterable[Rubric], now: float, *, cell_years: float = 1.0,
                  every: float = PLAN_EVERY_SECONDS) -> list[RatePlan]:
    """Recompute the plans of the power-aware ``rubrics`` (trace targets) that are missing or
    older than ``every`` seconds; returns the plans written."""
    power = [r for r in rubrics if r.power is not None and r.target == "trace"]
    current = plans.load_all(client, [r.key for r in power])
    written = []
    for rubric in power:
        old = current.get(rubric.key)
        if old is not None and now - old.computed_at < every:
            continue
        plan = plan_rubric(client, rubric, now, cell_years=cell_years)
        plans.save(client, plan)
        written.append(plan)
        log.info("rate plan", extra={"rubric": rubric.key, "cells": len(plan.cells), "unmet": len(plan.unmet),
                                     "judged_per_day": round(plan.judged_per_day)})
    return written


def plan_rubric(client: redis.Redis, rubric: Rubric, now: float, *, cell_years: float = 1.0) -> RatePlan:
    """One rubric version's plan at ``now`` (epoch seconds)."""
    spec = rubric.power
    if spec is None:
        raise ValueError(f"{rubric.key} states no detection target")
    today = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
    strata = traffic_per_day(client, rubric.key, today)
    traffic: dict[str, float] = {}
    for stratum, n in strata.items():
        for segment in stratum:
            traffic[segment] = traffic.get(segment, 0.0) + n
    cost = cost_per_judgement(client, rubric, today)
    target = DetectionTarget(spec.drop_points, spec.within_hours, cell_years=cell_years)
    budget = Budget(judged_per_day=spec.daily_budget_judged,
                    usd_per_day=rubric.daily_budget_usd if cost else None, usd_per_judgement=cost)
    # A cell's detector reads the scores its own rate picked (a trace picked by a child's rate
    # counts in the parent's weighted means only): its target is met by its own rate.
    policy = Policy(target, budget, base_rate=rubric.sampling_rate, boost_factor=spec.boost_factor,
                    boost_hours=spec.boost_hours, count_overlap=False)
    cells = [Cell(segment, n, cell_sd(client, rubric, segment, today), spec.priority(segment),
                  changed_at(first_seen(client, cell_key(rubric, segment))))
             for segment, n in sorted(traffic.items())]
    allocation = allocate(policy, cells, now=now, strata=[Stratum(n, s) for s, n in strata.items()])
    by_key = {c.key: c for c in cells}
    planned = tuple(PlannedCell(
        segment=c.key, rate=c.rate, traffic_per_day=by_key[c.key].traffic_per_day, sd=by_key[c.key].sd,
        priority=by_key[c.key].priority, judged_per_day=c.judged_per_day, needed_per_day=finite(c.needed_per_day),
        achieved_hours=finite(c.achieved_hours), meets_target=c.meets_target, boosted=c.boosted, reason=c.reason,
        note=c.note) for c in allocation.cells)
    return RatePlan(rubric.key, now, rubric.sampling_rate, spec.label, finite(budget.judged_cap),
                    allocation.judged_per_day, allocation.usd_per_day, allocation.over_budget, planned)


def changed_at(first: dict[tuple[str, str], float]) -> float | None:
    """The newest change event of a cell: per event dimension, the first-seen time of each value
    after the dimension's first (the first value a cell ever sees is where it starts, not a change)."""
    latest = None
    for dimension in EVENT_DIMENSIONS:
        times = sorted(epoch for (dim, _), epoch in first.items() if dim == dimension)
        if len(times) >= 2:
            latest = times[-1] if latest is None else max(latest, times[-1])
    return latest


def _days(today: dt.date, count: int) -> list[str]:
    return [(today - dt.timedelta(days=i)).isoformat() for i in range(count)]


def cell_sd(client: redis.Redis, rubric: Rubric, segment: str, today: dt.date) -> float:
    """The cell's score SD over its last 28 trace-days (weighted where it has weights), rounded to
    half a point (the allocation's inversion is cached per SD); the default below ``MIN_SD_N``."""
    rows = read_days(client, cell_key(rubric, segment), _days(today, SD_DAYS)).values()
    weighted = WeightedSums.combine(WeightedSums.from_fields(r) for r in rows)
    if weighted.n >= MIN_SD_N:
        sd = weighted.sd
    else:
        n = sum(r.get("n", 0.0) for r in rows)
        if n < MIN_SD_N:
            return DEFAULT_SD
        sd = math.sqrt(WeekStats(int(n), sum(r.get("sum", 0.0) for r in rows),
                                 sum(r.get("sumsq", 0.0) for r in rows)).variance)
    return max(0.5, round(sd * 2) / 2) if math.isfinite(sd) else DEFAULT_SD


def cost_per_judgement(client: redis.Redis, rubric: Rubric, today: dt.date) -> float | None:
    """USD per judged trace over the last 7 days of the all-traffic cell; None before any."""
    rows = read_days(client, cell_key(rubric, "all"), _days(today, COST_DAYS)).values()
    n = sum(r.get("n", 0.0) for r in rows)
    cost = sum(r.get("cost_microusd", 0.0) for r in rows) / 1e6
    return cost / n if n and cost > 0 else None


def describe(plan: RatePlan) -> list[str]:
    """``status``'s and the report's lines for a plan: the summary, then one line per cell."""
    budget = "no cap" if plan.budget_judged is None else f"budget {plan.budget_judged:.0f} judged a day"
    met = sum(c.meets_target for c in plan.cells)
    when = dt.datetime.fromtimestamp(plan.computed_at, dt.timezone.utc).isoformat(timespec="seconds")
    head = (f"{plan.rubric_key}: target {plan.target}, {budget}, plans {plan.judged_per_day:.0f} judged a day"
            + (f" (${plan.usd_per_day:.2f})" if plan.usd_per_day is not None else "")
            + (", over budget at the base rate alone" if plan.over_budget else "")
            + f"; {met} of {len(plan.cells)} cells meet it (planned {when})")
    if not plan.cells:
        head += "; no complete day of traffic counted yet: every cell at the base rate"
    return [head] + [f"  {c.segment}: rate {c.rate:.2%}{' (boosted)' if c.boosted else ''}, {c.note}"
                     for c in sorted(plan.cells, key=lambda c: (c.meets_target, -c.priority, c.segment))]


def plan_lines(client: redis.Redis, rubric: Rubric) -> tuple[RatePlan | None, list[str]]:
    """A power-aware rubric's plan and the lines ``status`` and the report show for it
    (``describe``; before the first plan, one line that says so)."""
    plan = plans.load(client, rubric.key)
    if plan is not None:
        return plan, describe(plan)
    label = rubric.power.label if rubric.power is not None else "none"
    return None, [f"{rubric.key}: target {label}: no rate plan yet (the scheduler or `sample --once` computes it): "
                  "every cell at the base rate"]
