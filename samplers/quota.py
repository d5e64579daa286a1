"""Per-segment quota: a small segment's rate is raised so it still yields judged traces every day.

A rubric with ``sampling.min_per_segment: {key: tenant, per_day: 20}`` wants at least about
20 judged traces a day from every tenant. At a 1% rate a tenant with 300 traces a day would
get 3, too few for its drift cell ever to have data. So the sampler counts every scanned,
applicable trace per segment and UTC day in Redis, and the rate for a trace in segment ``s`` is

    effective = max(rate, min(1, per_day / expected_daily_traffic(s)))

The quota only ever raises the rate (DESIGN.md), and sampling is still the contract's
``u < effective``, so it is the same in every replica given the same counts, and the traces a
raised rate picks are a superset of those the base rate picks.

Expected daily traffic: the mean count of the days among the last 7 complete UTC days (before
the trace's own day) on which the segment had traffic — a day with no count is a day the
segment was quiet or the sampler was not running, not evidence of lower traffic. Only complete
days count, never today's count so far: that depends on the order traces are scanned in, so a
live pass and a later backfill of the same day would pick different traces. A new segment is
sampled at the base rate on its first day and gets its quota from the next.

Counts are HyperLogLogs of trace ids (PFADD), so re-scanning an overlap window or running a
backfill again never counts a trace twice, and a segment-day costs at most 12 kB of Redis.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable

import redis

from samplers.source import TraceRef
from worker.rubrics.fields import metadata_text
from worker.rubrics.rubric import Rubric

_PREFIX = "tracejudge:quota:"
HISTORY_DAYS = 7
TTL_SECONDS = (HISTORY_DAYS + 3) * 86400
# Complete days change only through late-ingested traces: re-read their counts this often.
HISTORY_CACHE_SECONDS = 600


class SegmentQuota:
    def __init__(self, client: redis.Redis, *, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.clock = clock
        self._history: dict[tuple[str, str, dt.date], tuple[float, float | None]] = {}

    def rate(self, rubric: Rubric, ref: TraceRef, base_rate: float) -> float:
        """The rate for ``ref`` under ``rubric``; records the trace in its segment's daily count.

        Call it once per scanned trace the rubric applies to (so every applicable trace is counted).
        """
        if not rubric.segment_key or rubric.min_per_segment_day <= 0 or base_rate <= 0:
            return base_rate  # a rate of 0 switches the rubric off, quota included
        value = ref.metadata.get(rubric.segment_key)
        if value is None or value == "":
            return base_rate  # traces without the key belong to no segment
        day = _day_of(ref)
        self.observe(rubric, metadata_text(value), day, ref.trace_id)
        expected = self.history_mean(rubric, metadata_text(value), day)
        if not expected:
            return base_rate  # no complete day seen yet: the quota starts tomorrow
        return max(base_rate, min(1.0, rubric.min_per_segment_day / expected))

    def observe(self, rubric: Rubric, value: str, day: dt.date, trace_id: str) -> None:
        """Adds the trace to the segment-day count (idempotent)."""
        key = _key(rubric, value, day)
        pipe = self.client.pipeline(transaction=False)
        pipe.pfadd(key, trace_id)
        pipe.expire(key, TTL_SECONDS)
        pipe.execute()

    def history_mean(self, rubric: Rubric, value: str, day: dt.date) -> float | None:
        """Mean traffic over the segment's active days among the 7 before ``day``; None if none."""
        cache_key = (rubric.key, value, day)
        cached = self._history.get(cache_key)
        now = self.clock()
        if cached is not None and now - cached[0] < HISTORY_CACHE_SECONDS:
            return cached[1]
        pipe = self.client.pipeline(transaction=False)
        for back in range(1, HISTORY_DAYS + 1):
            pipe.pfcount(_key(rubric, value, day - dt.timedelta(days=back)))
        counts = [int(c) for c in pipe.execute() if int(c) > 0]
        mean = sum(counts) / len(counts) if counts else None
        if len(self._history) > 50_000:  # many segments over many days: start over rather than grow
            self._history.clear()
        self._history[cache_key] = (now, mean)
        return mean


def _day_of(ref: TraceRef) -> dt.date:
    """The trace's own UTC day (a backfill counts past days as they were), else today."""
    stamp = ref.timestamp or dt.datetime.now(dt.timezone.utc)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.astimezone(dt.timezone.utc).date()


def _key(rubric: Rubric, value: str, day: dt.date) -> str:
    # Segment values are trace data: hash long ones so a key stays small and printable.
    if len(value) > 100:
        value = "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()
    return f"{_PREFIX}{rubric.key}:{rubric.segment_key}={value}:{day.isoformat()}"
