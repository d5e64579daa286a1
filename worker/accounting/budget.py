"""Daily judge spend caps, global and per rubric, kept in Redis per UTC day.

Spend is counted once per score id (a redelivered job adds nothing). A rubric is *held* once
its next job would likely cross a cap: spent + in flight + that rubric's typical job cost > cap
(each running job reserves its typical cost, so many threads cannot overshoot together). While held,
the sampler enqueues nothing for it and workers park its queued jobs (``park``) instead of
judging them; ``unpark`` puts them back on the queue when a new UTC day starts or a cap was
raised. Amounts are integer micro-USD in Redis so increments are exact.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Literal

import redis

from worker.alerts import outbox
from worker.alerts.kinds import BudgetHeld
from worker.alerts.sinks import Sink
from worker.redis_client import as_text
from worker.rubrics.rubric import Rubric

log = logging.getLogger("tracejudge.budget")

SPENT = "tracejudge:budget:spent:"  # + YYYY-MM-DD: hash {"*": fleet total, rubric name: total,
#                                     "reserved:*" / "reserved:<name>": what jobs in flight hold}
TYPICAL = "tracejudge:budget:typical"  # hash {rubric name: micro-USD, moving average of a job}
PARKED = "tracejudge:budget:parked"  # hash {score id: json job}; a hash, so parking twice is once
ALERTED = "tracejudge:budget:alerted:"  # + day:rubric, set when that day's alert was queued
_COUNTED = "tracejudge:budget:counted:"  # + score id
ALL = "*"
_SPENT_TTL = 8 * 86400  # a week of history for `budget show --day`
_COUNTED_TTL = 3 * 86400
_TYPICAL_WEIGHT = 0.2  # of the newest job in the moving average

# KEYS: counted marker, the day's spend hash, typical hash. ARGV: ttl of the marker, micro-USD,
# rubric name, ttl of the day's hash, weight of the newest job in the moving average.
_RECORD = """
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) == false then return 0 end
local cost = tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[2], '*', cost)
redis.call('HINCRBY', KEYS[2], ARGV[3], cost)
redis.call('EXPIRE', KEYS[2], ARGV[4])
local old = redis.call('HGET', KEYS[3], ARGV[3])
local w = tonumber(ARGV[5])
local new = cost
if old then new = tonumber(old) * (1 - w) + cost * w end
redis.call('HSET', KEYS[3], ARGV[3], tostring(new))
return 1
"""

# Hold back a job's typical cost while it runs, so N jobs in flight cannot all pass the check
# against the same spend and overshoot the cap together. KEYS: the day's spend hash. ARGV:
# rubric name, micro-USD to reserve, global cap, rubric cap (-1: none), ttl of the hash.
_RESERVE = """
local function num(field) return tonumber(redis.call('HGET', KEYS[1], field) or '0') end
local want, gcap, rcap = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local fleet = num('*') + num('reserved:*')
local mine = num(ARGV[1]) + num('reserved:' .. ARGV[1])
if gcap >= 0 and (fleet >= gcap or fleet + want > gcap) then return 'global' end
if rcap >= 0 and (mine >= rcap or mine + want > rcap) then return 'rubric' end
redis.call('HINCRBY', KEYS[1], 'reserved:*', want)
redis.call('HINCRBY', KEYS[1], 'reserved:' .. ARGV[1], want)
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 'ok'
"""
_RESERVED = "reserved:"


def utc_day(now: float | None = None) -> str:
    return dt.datetime.fromtimestamp(time.time() if now is None else now, dt.timezone.utc).date().isoformat()


def _usd(micro: int | float) -> float:
    return round(micro / 1_000_000, 6)


def _micro(usd: float | None) -> int:
    return -1 if usd is None else int(round(usd * 1_000_000))


@dataclasses.dataclass(frozen=True)
class Reservation:
    """A job's typical cost held back while it runs; released when it ends (a crashed job's
    reservation lapses with its UTC day)."""

    day: str
    rubric: str
    micro_usd: int


HeldBy = Literal["global", "rubric"]  # which cap holds a rubric: the fleet's or its own


@dataclasses.dataclass(frozen=True)
class Held:
    """A job that must not run: the cap ``held_by`` would likely be crossed by it (``Budget.admit``)."""

    held_by: HeldBy


@dataclasses.dataclass
class BudgetState:
    rubric: str
    spent_usd: float
    cap_usd: float | None
    global_spent_usd: float
    global_cap_usd: float | None
    typical_job_usd: float
    held_by: HeldBy | None
    reserved_usd: float = 0.0  # held back by this rubric's jobs in flight

    @property
    def left_usd(self) -> float | None:
        lefts = [cap - spent for cap, spent in ((self.cap_usd, self.spent_usd),
                                                (self.global_cap_usd, self.global_spent_usd)) if cap is not None]
        return max(0.0, round(min(lefts), 6)) if lefts else None


class Budget:
    def __init__(self, client: redis.Redis, global_cap_usd: float | None) -> None:
        self.client = client
        self.global_cap = global_cap_usd
        self._record = client.register_script(_RECORD)
        self._reserve = client.register_script(_RESERVE)

    # -- spend ---------------------------------------------------------------------------
    def record(self, score_id: str, rubric_name: str, cost: Decimal | float, now: float | None = None) -> bool:
        """Add one job's judge cost to today's spend; False when this score id was counted already."""
        micro = int((Decimal(str(cost)) * 1_000_000).to_integral_value())
        if micro <= 0:
            return False
        return bool(self._record(keys=[_COUNTED + score_id, SPENT + utc_day(now), TYPICAL],
                                 args=[_COUNTED_TTL, micro, rubric_name, _SPENT_TTL, _TYPICAL_WEIGHT]))

    def spent(self, day: str | None = None) -> dict[str, float]:
        """USD spent on ``day`` (default today, UTC): ``"*"`` is the fleet total, else per rubric."""
        return {k: v for k, v in self.day_fields(day).items() if not k.startswith(_RESERVED)}

    def day_fields(self, day: str | None = None) -> dict[str, float]:
        raw = self.client.hgetall(SPENT + (day or utc_day()))
        return {as_text(k): _usd(int(v)) for k, v in raw.items()}

    def admit(self, rubric: Rubric) -> Reservation | Held:
        """Hold back this rubric's typical job cost for a job about to run (the Reservation), or
        say which cap holds the rubric (Held): then the job must not run."""
        day = utc_day()
        want = max(0, int(round(self.typical_job_usd(rubric.name) * 1_000_000)))
        verdict = as_text(self._reserve(keys=[SPENT + day], args=[rubric.name, want, _micro(self.global_cap),
                                                                   _micro(rubric.daily_budget_usd), _SPENT_TTL]))
        if verdict == "ok":
            return Reservation(day, rubric.name, want)
        if verdict == "global":
            return Held("global")
        if verdict == "rubric":
            return Held("rubric")
        raise ValueError(f"unexpected answer of the budget's reserve script: {verdict!r}")

    def release(self, reservation: Reservation) -> None:
        if reservation.micro_usd:
            pipe = self.client.pipeline()
            for field in (_RESERVED + ALL, _RESERVED + reservation.rubric):
                pipe.hincrby(SPENT + reservation.day, field, -reservation.micro_usd)
            pipe.execute()

    def typical_job_usd(self, rubric_name: str) -> float:
        raw = self.client.hget(TYPICAL, rubric_name)
        return _usd(float(raw)) if raw else 0.0

    def state(self, rubric: Rubric, day_fields: dict[str, float] | None = None) -> BudgetState:
        """Spend, caps and whether the rubric is held now (jobs in flight count as spent)."""
        fields = self.day_fields() if day_fields is None else day_fields
        typical = self.typical_job_usd(rubric.name)
        mine, fleet = fields.get(rubric.name, 0.0), fields.get(ALL, 0.0)
        mine_reserved = max(0.0, fields.get(_RESERVED + rubric.name, 0.0))
        fleet_reserved = max(0.0, fields.get(_RESERVED + ALL, 0.0))
        held: HeldBy | None = None
        if _over(fleet + fleet_reserved, typical, self.global_cap):
            held = "global"
        elif _over(mine + mine_reserved, typical, rubric.daily_budget_usd):
            held = "rubric"
        return BudgetState(rubric.name, mine, rubric.daily_budget_usd, fleet, self.global_cap, typical, held,
                           mine_reserved)

    def held(self, rubrics: Iterable[Rubric]) -> dict[str, BudgetState]:
        """The held rubrics among ``rubrics``, by key (one read of today's spend for all)."""
        spent = self.day_fields()
        states = {r.key: self.state(r, spent) for r in rubrics}
        return {key: s for key, s in states.items() if s.held_by}

    # -- parked jobs ---------------------------------------------------------------------
    def park(self, score_id: str, trace_id: str, rubric_key: str) -> None:
        self.client.hset(PARKED, score_id, json.dumps(
            {"trace_id": trace_id, "rubric": rubric_key, "at": time.time()}))

    def parked(self) -> Counter[str]:
        """Parked jobs per rubric key."""
        counts: Counter[str] = Counter()
        for _, raw in self.client.hscan_iter(PARKED, count=1000):
            counts[json.loads(raw)["rubric"]] += 1
        return counts

    def unpark(self, rubrics: dict[str, Rubric], enqueue: Callable[[str, str], None]) -> int:
        """Put parked jobs of rubrics no longer held back on the queue; returns how many.

        Enqueued before the parked entry is deleted: a crash between the two enqueues a job
        twice, and the second run is skipped by the outcome's done marker, so nothing is lost
        and nothing judged twice. A job of a rubric this process does not load is unparked too
        (only the global cap can hold it here; the worker records it unscored if nobody loads it).
        """
        if not self.client.hlen(PARKED):
            return 0
        spent = self.day_fields()
        global_held = _over(spent.get(ALL, 0.0), 0.0, self.global_cap)
        held = {key: bool(self.state(r, spent).held_by) for key, r in rubrics.items()}
        moved = 0
        for score_id, raw in list(self.client.hscan_iter(PARKED, count=1000)):
            job = json.loads(raw)
            if held.get(job["rubric"], global_held):
                continue
            enqueue(job["trace_id"], job["rubric"])
            self.client.hdel(PARKED, score_id)
            moved += 1
        if moved:
            log.info("unparked jobs", extra={"count": moved})
        return moved

    # -- alerts --------------------------------------------------------------------------
    def alert_once(self, state: BudgetState, sinks: list[Sink], now: float | None = None) -> BudgetHeld | None:
        """Queue the day's "budget held" alert for this rubric once fleet-wide; None if already sent."""
        day = utc_day(now)
        if not self.client.set(f"{ALERTED}{day}:{state.rubric}", 1, nx=True, ex=2 * 86400):
            return None
        alert = budget_alert(state, day)
        outbox.enqueue(self.client, alert, sinks)
        log.warning("budget cap reached; jobs are parked", extra={"rubric": state.rubric, "held_by": state.held_by,
                                                                 "spent_usd": state.spent_usd})
        return alert


def _over(spent: float, typical: float, cap: float | None) -> bool:
    """The next job would likely cross the cap (or it is spent: a cap of 0 judges nothing)."""
    return cap is not None and (spent >= cap or spent + typical > cap)


def budget_alert(state: BudgetState, day: str) -> BudgetHeld:
    cap = state.global_cap_usd if state.held_by == "global" else state.cap_usd
    if cap is None:  # held by a cap means that cap is set
        raise ValueError(f"{state.rubric}: no daily budget holds it ({state.held_by or 'not held'})")
    spent = state.global_spent_usd if state.held_by == "global" else state.spent_usd
    scope = "the fleet's daily budget" if state.held_by == "global" else f"{state.rubric}'s daily budget"
    title = (f"{state.rubric}: judging paused for {day} (UTC): ${spent:.4f} of {scope} of ${cap:.4f} spent; "
             f"queued jobs are parked until the next UTC day or a raised cap")
    return BudgetHeld(id=hashlib.sha256(f"budget|{state.rubric}|{day}".encode()).hexdigest()[:20], title=title,
                      cell=f"budget:{state.rubric}", rubric=state.rubric, owner="unowned", route=None, day=day,
                      held_by=state.held_by or "rubric", spent_usd=spent, cap_usd=cap,
                      typical_job_usd=state.typical_job_usd)
