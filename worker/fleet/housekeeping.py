"""The scheduler's daily housekeeping: the key families that the write paths cannot expire
themselves get their bound here, so months of uptime reach a memory plateau.

- drift aggregates: cell-days expire ``TTL_DAYS`` after their day, empty cells leave the set
  (worker/drift/retention.py);
- the exhausted log (jobs that used up their retries): kept ``EXHAUSTED_DAYS``, at most
  ``EXHAUSTED_MAX`` entries (dramatiq drops its dead letters after a week anyway);
- batch items of a rubric no scheduler loads any more (a retired version): after
  ``ORPHAN_BATCH_DAYS`` they are recorded as exhausted, with that reason, and dropped.

Outbox entries of removed sinks are bounded by the outbox itself (worker/alerts/outbox.py).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time

import redis

from worker.accounting.outcomes import EXHAUSTED, OutcomeLog
from worker.batching.store import ITEMS, BatchStore, Item
from worker.drift.retention import SweepSummary, sweep_aggregates
from worker.redis_client import as_text

EXHAUSTED_DAYS = 30
EXHAUSTED_MAX = 50_000
ORPHAN_BATCH_DAYS = 7
ORPHANS = "tracejudge:batch:orphaned"  # hash: score id -> when its rubric was first seen unloaded
log = logging.getLogger("tracejudge.housekeeping")


@dataclasses.dataclass
class Housekeeping:
    aggregates: SweepSummary
    exhausted_dropped: int
    batch_items_dropped: int


def housekeep(client: redis.Redis, loaded_rubric_keys: set[str], now: float | None = None,
              today: dt.date | None = None) -> Housekeeping:
    """``today``: the UTC date cell-days are aged against (default: now's)."""
    now = time.time() if now is None else now
    today = today or dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
    result = Housekeeping(sweep_aggregates(client, today), trim_exhausted(client, now),
                          drop_orphaned_batch_items(client, loaded_rubric_keys, now))
    log.info("housekeeping", extra={"cells": result.aggregates.cells,
                                    "cells_removed": result.aggregates.cells_removed,
                                    "cell_days_removed": result.aggregates.days_removed,
                                    "exhausted_dropped": result.exhausted_dropped,
                                    "batch_items_dropped": result.batch_items_dropped})
    return result


def trim_exhausted(client: redis.Redis, now: float, days: int = EXHAUSTED_DAYS, most: int = EXHAUSTED_MAX) -> int:
    entries = []
    for field, raw in client.hscan_iter(EXHAUSTED, count=1000):
        try:
            at = float(json.loads(raw).get("at") or 0)
        except (ValueError, AttributeError):
            at = 0.0
        entries.append((at, field))
    entries.sort(reverse=True)  # newest first
    drop = [f for i, (at, f) in enumerate(entries) if i >= most or now - at > days * 86400]
    for start in range(0, len(drop), 1000):
        client.hdel(EXHAUSTED, *drop[start:start + 1000])
    return len(drop)


def drop_orphaned_batch_items(client: redis.Redis, loaded: set[str], now: float,
                              days: int = ORPHAN_BATCH_DAYS) -> int:
    store, outcomes = BatchStore(client), OutcomeLog(client)
    seen = {as_text(k): float(v) for k, v in client.hgetall(ORPHANS).items()}
    dropped = 0
    for field, raw in client.hscan_iter(ITEMS, count=500):
        score_id = as_text(field)
        item = Item.loads(raw)
        if item.rubric_key in loaded or item.batch_id is not None:
            if score_id in seen:
                client.hdel(ORPHANS, score_id)  # its rubric is back (or it is in a provider's batch)
            continue
        first = seen.get(score_id)
        if first is None:
            client.hsetnx(ORPHANS, score_id, now)
        elif now - first > days * 86400:
            outcomes.exhausted(score_id, item.trace_id, item.rubric_key,
                               f"batch request dropped: rubric {item.rubric_key} not loaded for {days} days")
            store.forget(score_id)
            client.hdel(ORPHANS, score_id)
            dropped += 1
    for stale in set(seen) - {as_text(f) for f in client.hkeys(ITEMS)}:
        client.hdel(ORPHANS, stale)
    return dropped
