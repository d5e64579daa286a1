"""Traffic per cell for power-aware rubrics: every applicable root trace the sampler lists is
counted once per UTC day in its *stratum*, the set of drift segments it belongs to ("all",
"feature=x", "tenant=y", "feature=x|tenant=y": worker/drift/contribution.py ``segments``). A
cell's traffic is the sum of the strata that contain it, and the strata are the finest partition
samplers/power.py's ``allocate`` needs to cost overlapping cells::

    tracejudge:plan:traffic:<rubric key>:<day>:<stratum id>   HyperLogLog of trace ids
    tracejudge:plan:strata:<rubric key>:<day>                 hash  stratum id -> JSON segments

HyperLogLogs (as the quota's, samplers/quota.py): the overlap window and the late passes list a
trace up to three times and it still counts once. One PFADD and one HSETNX per listed trace and
planned rubric, sent per page of 500 in one round trip; a stratum-day costs at most 12 kB.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping

import redis

from worker.drift.contribution import segments
from worker.redis_client import as_text

TRAFFIC = "tracejudge:plan:traffic:"
STRATA = "tracejudge:plan:strata:"
HISTORY_DAYS = 7  # complete days the traffic a day is the mean of
TTL_SECONDS = (HISTORY_DAYS + 3) * 86400
MAX_STRATA = 2000  # the largest strata a plan considers (allocate is O(cells × strata))
_FLUSH_EVERY = 500


def stratum_id(stratum: tuple[str, ...]) -> str:
    return hashlib.sha256(json.dumps(stratum).encode()).hexdigest()[:16]


def day_of(timestamp: dt.datetime | None) -> dt.date:
    stamp = timestamp or dt.datetime.now(dt.timezone.utc)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.astimezone(dt.timezone.utc).date()


class TrafficCounter:
    """Buffers the counts of one pass; ``flush()`` sends them (the sampler calls it at the end of
    a pass, and every ``_FLUSH_EVERY`` traces)."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self._pipe = client.pipeline(transaction=False)
        self._pending = 0

    def observe(self, rubric_key: str, trace_id: str, metadata: Mapping[str, object],
                timestamp: dt.datetime | None) -> tuple[str, ...]:
        """Counts the trace in its stratum for its day; returns the stratum (its segments)."""
        stratum = tuple(segments(metadata))
        sid, day = stratum_id(stratum), day_of(timestamp).isoformat()
        hll, strata = f"{TRAFFIC}{rubric_key}:{day}:{sid}", f"{STRATA}{rubric_key}:{day}"
        self._pipe.pfadd(hll, trace_id)
        self._pipe.expire(hll, TTL_SECONDS)
        self._pipe.hsetnx(strata, sid, json.dumps(stratum))
        self._pipe.expire(strata, TTL_SECONDS)
        self._pending += 1
        if self._pending >= _FLUSH_EVERY:
            self.flush()
        return stratum

    def flush(self) -> None:
        if self._pending:
            self._pipe.execute()
            self._pending = 0


def traffic_per_day(client: redis.Redis, rubric_key: str, today: dt.date,
                    days: int = HISTORY_DAYS) -> dict[tuple[str, ...], float]:
    """Each stratum's mean traces a day over the complete UTC days before ``today`` on which the
    rubric saw any traffic (a day without counts is a day the sampler did not run, not a quiet
    day); {} before the first complete day. The ``MAX_STRATA`` largest strata only."""
    back = [(today - dt.timedelta(days=i)).isoformat() for i in range(1, days + 1)]
    pipe = client.pipeline(transaction=False)
    for day in back:
        pipe.hgetall(f"{STRATA}{rubric_key}:{day}")
    listed = {day: {as_text(k): as_text(v) for k, v in raw.items()} for day, raw in zip(back, pipe.execute())}
    active = [day for day in back if listed[day]]
    if not active:
        return {}
    for day in active:
        for sid in listed[day]:
            pipe.pfcount(f"{TRAFFIC}{rubric_key}:{day}:{sid}")
    counts = iter(pipe.execute())
    totals: dict[tuple[str, ...], float] = {}
    for day in active:
        for raw in listed[day].values():
            stratum = tuple(str(s) for s in json.loads(raw))
            totals[stratum] = totals.get(stratum, 0.0) + int(next(counts))
    largest = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_STRATA]
    return {stratum: total / len(active) for stratum, total in largest if total > 0}
