"""Retention of the drift aggregates: every cell-day expires ``TTL_DAYS`` after its day, and a
cell with no day left leaves the cell set (and its alert state), so Redis reaches a plateau and
every drift run and report walks only the cells that still have data.

The write path (the outcome script) cannot set expiries; it indexes each cell's days instead
(``aggregates.days_key``), and this sweep, run with the daily drift check, gives every indexed
day its expiry and drops the days past it. Each cell is swept by one script, atomic with the
writes, so a score landing during the sweep is never half removed.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import time

import redis

from worker.drift import aggregates as agg
from worker.drift import detection
from worker.drift import slice_log
from worker.drift.check import STATE

# KEYS: days zset, cell set, alert state; ARGV: cell, cutoff epoch, ttl seconds, key prefix, now
# (relative expiries from ``now``, so a sweep dated another day, as the soak benchmark runs it,
# means what it says)
_SWEEP = """
local cell, cutoff, ttl, prefix, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff)
for _, day in ipairs(old) do
  redis.call('DEL', prefix .. cell .. ':' .. day, prefix .. 'bottom:' .. cell .. ':' .. day)
end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff) end
local keep = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
if #keep == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], cell)
  redis.call('HDEL', KEYS[3], cell)
  return {#old, 0, 1}
end
local last = 1
for i = 1, #keep, 2 do
  local day, left = keep[i], math.max(1, math.floor(tonumber(keep[i + 1]) + 86400 + ttl - now))
  redis.call('EXPIRE', prefix .. cell .. ':' .. day, left)
  redis.call('EXPIRE', prefix .. 'bottom:' .. cell .. ':' .. day, left)
  if left > last then last = left end
end
redis.call('EXPIRE', KEYS[1], last)
return {#old, #keep / 2, 0}
"""


@dataclasses.dataclass
class SweepSummary:
    cells: int = 0
    cells_removed: int = 0
    days_kept: int = 0
    days_removed: int = 0


def sweep_aggregates(client: redis.Redis, today: dt.date | None = None, ttl_days: int = agg.TTL_DAYS) -> SweepSummary:
    """Expire every indexed cell-day ``ttl_days`` after its day ends, as seen on ``today``
    (default: the real date; a past date is aged as if it were now)."""
    now = time.time()
    if today is None:
        today = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
    else:
        now = agg.day_epoch(today.isoformat()) + now % 86400
    cutoff = agg.day_epoch((today - dt.timedelta(days=ttl_days)).isoformat())
    script = client.register_script(_SWEEP)
    summary = SweepSummary()
    for raw in client.sscan_iter(agg.CELLS, count=500):
        cell = raw.decode()
        summary.cells += 1
        if not client.exists(agg.days_key(cell)):
            _index_unindexed(client, cell, today, ttl_days)
        removed, kept, gone = script(keys=[agg.days_key(cell), agg.CELLS, STATE],
                                     args=[cell, cutoff, ttl_days * 86400, agg.PREFIX, now])
        summary.days_removed += removed
        summary.days_kept += kept
        summary.cells_removed += gone
        if gone:  # the detector's state, buffer and flagged days go with the cell's last day
            client.delete(agg.PENDING + cell, detection.STATE + cell, detection.FLAGGED + cell,
                          slice_log.FIRST + cell, slice_log.LAST + cell)
        else:
            slice_log.forget_unused(client, cell, now)
    return summary


def _index_unindexed(client: redis.Redis, cell: str, today: dt.date, ttl_days: int) -> None:
    """A cell written before the day index existed: index the days it has within retention.
    (Older days of such a cell are not found here; they are what ``TTL_DAYS`` would have removed.)"""
    days = [(today - dt.timedelta(days=i)).isoformat() for i in range(-1, ttl_days + 1)]
    pipe = client.pipeline(transaction=False)
    for day in days:
        pipe.exists(agg.day_key(cell, day), agg.bottom_key(cell, day))
    found = {day: agg.day_epoch(day) for day, n in zip(days, pipe.execute()) if n}
    if found:
        client.zadd(agg.days_key(cell), found)
