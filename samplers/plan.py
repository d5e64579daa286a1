"""A power-aware rubric's rate plan, as every sampler replica reads it from Redis, and the rates a
trace gets from it (issue 27, item 4).

    tracejudge:plan:<rubric key>   JSON: ``RatePlan.to_json`` (samplers/planner.py writes it)

A trace's cells are its drift segments; each cell's rate is the plan's (the rubric's base rate
for a cell the plan does not know yet), raised by the per-segment quota in the quota's segment
cells. The trace is judged when the contract's u < p, p = the max of its cells' rates: its known
inclusion probability (worker/drift/weighting.py ``Weighting``), the weight 1/p of its score in the drift
aggregates' weighted sums. The cells whose *own* rate picked it (u < rate) are those it counts
in unweighted (n/sum/sumsq, the detector's stream): each cell's unweighted stream stays a
uniform sample of the cell, so a boosted child never shifts its parent's plain mean either.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable

import redis

from worker.redis_client import as_text

PLAN = "tracejudge:plan:"
PLAN_TTL_SECONDS = 7 * 86400  # a plan nobody refreshes for a week is dropped: the base rate again


@dataclasses.dataclass(frozen=True)
class PlannedCell:
    """One cell of a plan: its rate and what it achieves (samplers/power.py ``CellRate``)."""
    segment: str
    rate: float
    traffic_per_day: float
    sd: float
    priority: float
    judged_per_day: float
    needed_per_day: float | None  # None: unreachable at any n
    achieved_hours: float | None  # None: never (too few judged a day for a reference)
    meets_target: bool
    boosted: bool
    reason: str | None  # None | "traffic" | "budget"
    note: str


@dataclasses.dataclass(frozen=True)
class RatePlan:
    rubric_key: str
    computed_at: float  # epoch seconds
    base_rate: float
    target: str  # "5 points within 72 h"
    budget_judged: float | None  # the day's cap in judged traces (None: unlimited)
    judged_per_day: float  # what the plan expects to judge a day
    usd_per_day: float | None
    over_budget: bool  # the base rate alone costs more than the budget (it is kept)
    cells: tuple[PlannedCell, ...]

    @property
    def rates(self) -> dict[str, float]:
        return {c.segment: c.rate for c in self.cells}

    @property
    def unmet(self) -> tuple[PlannedCell, ...]:
        return tuple(c for c in self.cells if not c.meets_target)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> RatePlan:
        data = json.loads(raw)
        cells = tuple(PlannedCell(**c) for c in data.pop("cells"))
        return cls(**data, cells=cells)


def finite(x: float) -> float | None:
    """JSON has no infinity: None stands for it."""
    return x if math.isfinite(x) else None


def save(client: redis.Redis, plan: RatePlan) -> None:
    client.set(PLAN + plan.rubric_key, plan.to_json(), ex=PLAN_TTL_SECONDS)


def load(client: redis.Redis, rubric_key: str) -> RatePlan | None:
    """The rubric's plan; None when there is none (or it is of a shape this release does not read)."""
    return load_all(client, [rubric_key]).get(rubric_key)


def load_all(client: redis.Redis, rubric_keys: Iterable[str]) -> dict[str, RatePlan]:
    keys = list(rubric_keys)
    if not keys:
        return {}
    out = {}
    for key, raw in zip(keys, client.mget([PLAN + k for k in keys])):
        if raw is not None:
            try:
                out[key] = RatePlan.from_json(as_text(raw))
            except (ValueError, TypeError, KeyError):
                continue
    return out


def trace_rates(segments: Iterable[str], base_rate: float, plan: RatePlan | None = None,
                quota_key: str | None = None, quota_rate: float | None = None,
                override: float | None = None) -> dict[str, float]:
    """The rate of each of a trace's cells (segment -> rate): the plan's, else ``base_rate``;
    in the cells of the quota's segment (``quota_key=value``), at least ``quota_rate``.
    ``override`` (TRACEJUDGE_SAMPLE_RATE): that one rate in every cell, plan and quota aside."""
    if override is not None:
        return dict.fromkeys(segments, min(1.0, override))
    planned = plan.rates if plan is not None else {}
    out = {}
    for segment in segments:
        rate = max(base_rate, planned.get(segment, base_rate))
        if quota_key and quota_rate is not None and any(p.startswith(f"{quota_key}=") for p in segment.split("|")):
            rate = max(rate, quota_rate)
        out[segment] = min(1.0, rate)
    return out
