"""Reading the per-day drift aggregates per rubric × version × judge model × segment.

worker/drift/contribution.py names their keys and says what one judged trace adds to them
(``DriftContribution``, ``UnscoredContribution``); its names are re-exported here, where the
drift check, the detector, retention, the report and status have always found them.
"""
from __future__ import annotations

from typing import cast

import redis

from worker.drift.contribution import (BOTTOM_N, CELLS, DAYS, DEFAULT_SEGMENT_KEYS, PENDING, PREFIX, SESSION_MEMBER,
                                       bottom_key, bottom_member, cell_key, day_epoch, day_key, day_of, days_key,
                                       passed, quality_points, segments)

__all__ = ["BOTTOM_N", "CELLS", "DAYS", "DEFAULT_SEGMENT_KEYS", "PENDING", "PREFIX", "SESSION_MEMBER", "TTL_DAYS",
           "bottom", "bottom_key", "bottom_member", "cell_key", "day_epoch", "day_key", "day_of", "days_key",
           "passed", "quality_points", "read_days", "segments"]

# A cell-day is kept this long after its day (drift/retention.py expires it): past the rebuild's
# 90-day reach and the report's longest window, and bounded, so Redis reaches a plateau.
TTL_DAYS = 120

def read_days(client: redis.Redis, cell: str, days: list[str]) -> dict[str, dict[str, float]]:
    pipe = client.pipeline()
    for day in days:
        pipe.hgetall(day_key(cell, day))
    out: dict[str, dict[str, float]] = {}
    for day, raw in zip(days, pipe.execute()):
        out[day] = {k.decode(): float(v) for k, v in raw.items()}
    return out


def bottom(client: redis.Redis, cell: str, days: list[str], n: int = BOTTOM_N) -> list[tuple[str, float]]:
    merged: dict[str, float] = {}
    for day in days:
        rows = client.zrange(bottom_key(cell, day), 0, n - 1, withscores=True)
        for member, score in cast(list[tuple[bytes, float]], rows):
            merged[member.decode()] = score
    return sorted(merged.items(), key=lambda kv: (kv[1], kv[0]))[:n]
