"""Power-aware sampling (issue 27, item 4): each cell's sampling rate is what its detection target
needs, allocated by priority within the rubric's daily judge budget. Pure functions and frozen
dataclasses: no Redis, no I/O, no clock (the caller passes ``now``).

The pieces, in the order ``allocate`` uses them:

* **Target** (``DetectionTarget``): "a drop of ``drop`` points detected within ``hours``", at the
  detector's false-alarm budget (``cell_years`` per false alarm, as worker/drift/sequential.py's
  ``design`` takes it). ``needed_judged_per_day(sd, target)`` inverts the detector: the judged
  traces a day n at which ``sequential.expected_delay_hours`` of the design built on a reference
  with that SD (``reference_days`` days at the same n a day, so its size and its false-alarm
  budget follow n like a real cell's) equals the target hours; at least the n whose reference
  reaches ``sequential.MIN_REFERENCE_N`` (below it the detector never alarms). The delay falls
  with n (about log(n)/n), so the root is unique.
* **Traffic floor**: a cell whose traffic a day is below its needed n cannot meet the target even
  at 100% (reason ``"traffic"``): the floor is ``needed_judged_per_day`` itself, per SD.
* **Allocation** (``allocate``): every cell starts at the rubric's base rate (the floor: never
  lower, even over budget; that is today's behaviour). Then, with what the budget leaves:
    1. targets, by priority (highest first; equal priorities cheapest first, so more cells meet
       theirs, then smaller cells first): each cell that can meet its target and does not already
       (through overlapping cells' rates: its Kish effective n, below) is raised to its needed
       rate, or as far as the budget allows (reason ``"budget"``);
    2. boosts: a cell with a change event (a new prompt version or release first seen at
       ``Cell.changed_at``) less than ``boost_hours`` ago is raised to ``boost_factor`` × its
       target rate (capped at 1), by priority, within the budget: the targets are the promise, a
       boost is faster detection on top;
    3. best effort (``Policy.best_effort``): cells under their traffic floor are raised towards
       100% with what is left, by priority; they are still reported as not meeting the target.
  The budget is judged traces a day, or USD a day through a per-judgement cost (the lower of the
  two when both are given).
* **Cells overlap.** A cell is a segment (all traffic, a feature, a tenant, a feature × tenant
  pair); a trace belongs to several cells, so it is judged when ``u < p`` with p = the **max** of
  its cells' rates (``inclusion_probability``): p is the trace's known inclusion probability, the
  one the weighted means (worker/drift/weighting.py) divide by. The budget counts traces, not
  cells: given the finest partition of the traffic (``Stratum``: traffic a day and the cells it
  belongs to), a day costs Σ_strata traffic × max(rates of its cells); without strata the cells
  are taken as disjoint (Σ_cells traffic × rate), an upper bound when they overlap. A cell's
  achieved target uses its Kish effective n under those inclusion probabilities, N² / Σ N_s/p_s,
  which is at least rate × traffic; with ``Policy.count_overlap`` False (what the planner,
  samplers/planner.py, uses: a cell's detector reads only what its own rate picks) it is
  rate × traffic, and step 1 never counts a cell as served by the others' rates.
* **Deterministic**: ``selected`` is the contract's ``sample_point(trace_id) < p`` (DESIGN.md,
  samplers/hashing.py) with the cell's rate as the threshold, so a trace picked at rate r is
  picked at every rate ≥ r: a boost or a raised target only adds traces, and every replica and
  re-run picks the same ones for the same rates.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence


from samplers.inclusion import (DEFAULT_BOOST_HOURS, boost_active, effective_n, inclusion_probability,
                                selected)
from samplers.power_targets import DetectionTarget, delay_hours, needed_judged_per_day

__all__ = ["DEFAULT_BOOST_FACTOR", "DEFAULT_BOOST_HOURS", "Allocation", "Budget", "Cell", "CellRate",
           "DetectionTarget", "Policy", "REASON_BUDGET", "REASON_TRAFFIC", "Stratum", "allocate",
           "boost_active", "delay_hours", "effective_n", "inclusion_probability", "needed_judged_per_day",
           "selected"]

DEFAULT_BOOST_FACTOR = 10.0
_BISECT_STEPS = 60

REASON_TRAFFIC = "traffic"  # even 100% of the cell's traffic is too slow for the target
REASON_BUDGET = "budget"  # the cell could meet it, the budget (after higher priorities) could not


@dataclasses.dataclass(frozen=True)
class Budget:
    """A rubric's daily judge budget: judged traces a day, or USD a day at ``usd_per_judgement``
    (the lower when both are given); neither: unlimited."""
    judged_per_day: float | None = None
    usd_per_day: float | None = None
    usd_per_judgement: float | None = None

    def __post_init__(self) -> None:
        if self.usd_per_day is not None and not self.usd_per_judgement:
            raise ValueError("a USD budget needs the cost of one judgement")
        if any(v is not None and v < 0 for v in (self.judged_per_day, self.usd_per_day, self.usd_per_judgement)):
            raise ValueError("budgets and costs cannot be negative")

    @property
    def judged_cap(self) -> float:
        """The judged traces a day the budget allows (inf when unlimited)."""
        caps = [math.inf]
        if self.judged_per_day is not None:
            caps.append(self.judged_per_day)
        if self.usd_per_day is not None and self.usd_per_judgement:
            caps.append(self.usd_per_day / self.usd_per_judgement)
        return min(caps)

    def usd(self, judged_per_day: float) -> float | None:
        """What ``judged_per_day`` costs a day, when the per-judgement cost is known."""
        return None if self.usd_per_judgement is None else judged_per_day * self.usd_per_judgement


@dataclasses.dataclass(frozen=True)
class Policy:
    """A rubric's power-aware sampling: its target, budget and base rate (the floor)."""
    target: DetectionTarget
    budget: Budget
    base_rate: float = 0.01
    boost_factor: float = DEFAULT_BOOST_FACTOR
    boost_hours: float = DEFAULT_BOOST_HOURS
    best_effort: bool = True  # spend what is left on cells under their traffic floor
    # A cell's n counts the traces its overlapping cells' rates pick too (Kish effective n), or
    # (False) only those its own rate picks: the stream its sequential detector reads, which a
    # child's boost must not bias (worker/drift/contribution.py), so what the planner uses.
    count_overlap: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.base_rate <= 1 or self.boost_factor < 1 or self.boost_hours < 0:
            raise ValueError("base rate in [0, 1], boost factor ≥ 1, boost hours ≥ 0")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell's inputs: its traffic (traces a day, judged or not), its scores' SD (points; floored
    at stats.MIN_SD like the detector's reference), its priority (higher is served first) and the
    trace time (epoch seconds) its latest change event (new prompt version, release) was first seen."""
    key: str
    traffic_per_day: float
    sd: float = 20.0
    priority: float = 1.0
    changed_at: float | None = None


@dataclasses.dataclass(frozen=True)
class Stratum:
    """A piece of the finest partition of the traffic (e.g. one feature × tenant pair) and every
    cell its traces belong to (the pair, its feature, its tenant, all traffic)."""
    traffic_per_day: float
    cells: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CellRate:
    """A cell's allocated rate and what it achieves."""
    key: str
    rate: float  # the cell's threshold: its traces are judged when u < max(rates of their cells)
    judged_per_day: float  # expected judged traces a day from the cell (its effective n with strata)
    needed_per_day: float  # judged a day the target needs (inf: unreachable at any n)
    needed_rate: float  # needed_per_day / traffic, uncapped (> 1: under the traffic floor)
    achieved_hours: float  # expected hours to detect the target drop at judged_per_day
    meets_target: bool
    boosted: bool
    reason: str | None  # None when it meets the target, else REASON_TRAFFIC or REASON_BUDGET
    note: str  # one line for status and the report


@dataclasses.dataclass(frozen=True)
class Allocation:
    """``allocate``'s answer: per-cell rates and the day's expected cost."""
    cells: tuple[CellRate, ...]
    judged_per_day: float  # expected judged traces a day (strata-aware when strata were given)
    budget_judged: float  # the cap (inf: unlimited)
    usd_per_day: float | None
    over_budget: bool  # the base rate alone costs more than the budget (it is kept anyway)

    @property
    def rates(self) -> dict[str, float]:
        return {c.key: c.rate for c in self.cells}

    @property
    def unmet(self) -> tuple[CellRate, ...]:
        return tuple(c for c in self.cells if not c.meets_target)

    def cell(self, key: str) -> CellRate:
        for c in self.cells:
            if c.key == key:
                return c
        raise KeyError(key)


# --- allocation ----------------------------------------------------------------------------------

class _Cost:
    """Expected judged traces a day for a set of rates: Σ traffic × max(rates of its cells)."""

    def __init__(self, cells: Sequence[Cell], strata: Sequence[Stratum] | None, count_overlap: bool = True):
        keys = {c.key for c in cells}
        self.traffic = {c.key: c.traffic_per_day for c in cells}
        self.count_overlap = count_overlap
        if strata is None:
            self.strata = [Stratum(c.traffic_per_day, (c.key,)) for c in cells]
        else:
            unknown = {k for s in strata for k in s.cells} - keys
            if unknown:
                raise ValueError(f"strata name cells that were not given: {sorted(unknown)}")
            covered = {k for s in strata for k in s.cells}
            # A cell in no stratum is its own stratum (disjoint from the rest).
            self.strata = list(strata) + [Stratum(c.traffic_per_day, (c.key,)) for c in cells if c.key not in covered]
        self.of_cell: dict[str, list[int]] = {k: [] for k in keys}
        for i, s in enumerate(self.strata):
            for k in s.cells:
                self.of_cell[k].append(i)

    def p(self, i: int, rates: Mapping[str, float]) -> float:
        return min(1.0, max(rates[k] for k in self.strata[i].cells))

    def total(self, rates: Mapping[str, float]) -> float:
        return sum(s.traffic_per_day * self.p(i, rates) for i, s in enumerate(self.strata))

    def cell_cost(self, key: str, rates: Mapping[str, float]) -> float:
        """The part of the total that depends on ``key``'s rate."""
        return sum(self.strata[i].traffic_per_day * self.p(i, rates) for i in self.of_cell[key])

    def cell_n(self, key: str, rates: Mapping[str, float]) -> float:
        if not self.count_overlap:
            return self.traffic[key] * min(1.0, rates[key])
        return effective_n((self.strata[i].traffic_per_day, self.p(i, rates)) for i in self.of_cell[key])


def _raise_to(rates: dict[str, float], key: str, goal: float, cost: _Cost, spent: float, cap: float) -> float:
    """Raise ``key``'s rate towards ``goal`` as far as ``cap`` allows; returns the new spend."""
    start = rates[key]
    if goal <= start:
        return spent
    before = cost.cell_cost(key, rates)

    def spend_at(r: float) -> float:
        trial = dict(rates)
        trial[key] = r
        return spent - before + cost.cell_cost(key, trial)

    slack = 1e-9 * max(1.0, cap)
    if spend_at(goal) <= cap + slack:
        rates[key] = goal
    else:
        lo, hi = start, goal
        for _ in range(_BISECT_STEPS):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if spend_at(mid) <= cap + slack else (lo, mid)
        rates[key] = lo
    return spend_at(rates[key])


def allocate(policy: Policy, cells: Sequence[Cell], *, now: float | None = None,
             strata: Sequence[Stratum] | None = None) -> Allocation:
    """Each cell's rate for the day (module docstring: base floor, then targets by priority,
    boosts, best effort, within the budget). ``now`` (epoch seconds, the same clock as
    ``Cell.changed_at``) decides which boosts are active; None: none. ``strata``: the finest
    partition of the traffic, for cells that overlap; None: the cells are disjoint."""
    if len({c.key for c in cells}) != len(cells):
        raise ValueError("cell keys must be unique")
    target = policy.target
    cost = _Cost(cells, strata, policy.count_overlap)
    cap = policy.budget.judged_cap
    base = min(1.0, policy.base_rate)
    rates = {c.key: base for c in cells}
    spent = cost.total(rates)
    over_budget = spent > cap * (1 + 1e-9)
    if over_budget:
        cap = spent  # the base rate is the floor; nothing more is spent

    need = {c.key: needed_judged_per_day(c.sd, target) for c in cells}
    need_rate = {c.key: need[c.key] / c.traffic_per_day if c.traffic_per_day > 0 else math.inf for c in cells}
    meetable = [c for c in cells if need_rate[c.key] <= 1.0]
    floored = [c for c in cells if need_rate[c.key] > 1.0]

    def order(cs: Iterable[Cell]) -> list[Cell]:
        # Equal priorities: cheapest first, then the smaller cell (with strata, children before
        # their parents, which their raised rates may already serve).
        return sorted(cs, key=lambda c: (-c.priority, need[c.key], c.traffic_per_day, c.key))

    wanted = {k: max(base, min(1.0, r)) for k, r in need_rate.items()}
    for c in order(meetable):  # 1. targets
        if cost.cell_n(c.key, rates) >= need[c.key]:
            continue  # already met through the higher rates of cells that overlap it
        spent = _raise_to(rates, c.key, wanted[c.key], cost, spent, cap)
    boosted = {c.key for c in cells if boost_active(c.changed_at, now, policy.boost_hours)}
    for c in order(c for c in cells if c.key in boosted):  # 2. boosts
        spent = _raise_to(rates, c.key, min(1.0, wanted[c.key] * policy.boost_factor), cost, spent, cap)
    if policy.best_effort:  # 3. cells under their traffic floor
        for c in order(floored):
            spent = _raise_to(rates, c.key, 1.0, cost, spent, cap)

    out = []
    for c in cells:
        n = cost.cell_n(c.key, rates) if c.traffic_per_day > 0 else 0.0
        hours = delay_hours(n, c.sd, target) if n > 0 else math.inf
        meets = hours <= target.hours * (1 + 1e-4)  # the n a day is rounded into the reference's size
        reason = None if meets else (REASON_TRAFFIC if c.key not in {m.key for m in meetable} else REASON_BUDGET)
        out.append(CellRate(c.key, rates[c.key], n, need[c.key], need_rate[c.key], hours, meets,
                            c.key in boosted, reason, _note(c, target, n, need[c.key], hours, reason)))
    judged = cost.total(rates)
    return Allocation(tuple(out), judged, policy.budget.judged_cap, policy.budget.usd(judged), over_budget)


def _hours(hours: float) -> str:
    if math.isinf(hours):
        return "never (too few for a reference)"
    return f"~{hours:.0f} h" if hours < 96 else f"~{hours:.0f} h ({hours / 24:.0f} days)"


def _note(c: Cell, target: DetectionTarget, n: float, need: float, hours: float, reason: str | None) -> str:
    """One line: "meets 5 points within 72 h: ~61 h at 90 judged a day" or why it does not."""
    if reason is None:
        return f"meets {target.label}: {_hours(hours)} at {n:.0f} judged a day"
    if reason == REASON_TRAFFIC:
        best = delay_hours(c.traffic_per_day, c.sd, target) if c.traffic_per_day > 0 else math.inf
        return (f"cannot meet {target.label}: traffic floor, needs {need:.0f} judged a day, the cell has "
                f"{c.traffic_per_day:.0f} traces a day (even 100%: {_hours(best)}); now {_hours(hours)}")
    return (f"cannot meet {target.label}: budget, needs {need:.0f} judged a day, gets {n:.0f} "
            f"({_hours(hours)})")
