"""What attribution reads: each confirmed score with its slices, and when each value was first
seen per cell (issue 27, items 1 and 2). Written by ``DriftContribution.apply``
(worker/drift/contribution.py) in the confirmation's own transaction, so once per score::

    tracejudge:slices:<rubric|v<version>|<judge model>>   zset  entry JSON -> trace epoch
        {"m": bottom member, "o": observation id, "x": points, "g": [segments it counts in],
         "d": {dimension: value}}; entries older than LOG_DAYS, and all but the newest LOG_MAX,
        are trimmed as scores arrive
    tracejudge:slices:first:<cell>                          zset  "<dimension>=<value>" -> the
        earliest trace epoch a score of the cell had it (ZADD LT); a prompt version, release,
        version or judged model (EVENT_DIMENSIONS), each prompt and model of a combination apart
    tracejudge:slices:last:<cell>                           zset  the same values -> the latest
        trace epoch (ZADD GT): the daily sweep (``forget_unused``) drops values unseen for
        KEEP_SECONDS and keeps the FIRST_MAX most recently seen, so a long-standing value is
        never mistaken for a new one

The log is trimmed to LOG_DAYS against the clock and expires a day after its last write; the
first-seen keys expire KEEP_SECONDS after their last write.

A bounded log rather than per-slice aggregates: a slice search needs the scores on both sides
of the start the detector pins (to the second, not to a bucket), of single values and of pairs,
in any cell, and the lowest-scoring traces of the slice it names. Per-hour aggregates of every
value and pair of every cell cost ~435 increments per score and hundreds of MB per rubric; the
log costs one entry (~250 bytes) and a few first-seen updates per score (docs/sizing.md).
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from typing import cast

import redis
from redis.client import Pipeline

LOG = "tracejudge:slices:"
FIRST = "tracejudge:slices:first:"
LAST = "tracejudge:slices:last:"
LOG_DAYS = 21  # the before window (7 days) and two weeks of an open incident
LOG_MAX = 60_000  # per rubric version × judge model
FIRST_MAX = 500  # first-seen values kept per cell, the most recently seen
KEEP_SECONDS = 120 * 86400  # a value not seen this long is forgotten (as cell-days are)
EVENT_DIMENSIONS = ("prompt", "release", "version", "model")  # a value first seen in a cell is a change event


def log_key(cell: str) -> str:
    """The log of the rubric version × judge model a cell belongs to."""
    return LOG + "|".join(cell.split("|", 3)[:3])


def segment_of(cell: str) -> str:
    return cell.split("|", 3)[3]


@dataclasses.dataclass(frozen=True)
class Entry:
    member: str  # the trace id (or session:<id>)
    observation_id: str
    points: float
    epoch: float  # the trace's time
    segments: tuple[str, ...]  # the cells' segments it counts in ("all", "feature=x", ...)
    dims: Mapping[str, str]


def write(pipe: Pipeline, cells: tuple[str, ...], epoch: float, member: str, observation_id: str,
          points: float, dims: Mapping[str, str], now: float | None = None) -> None:
    """Queue one score's entry and its first-seen updates on ``pipe`` (MULTI mode). Trace times
    are the client's: the window is trimmed against ``now`` (default: the clock), never against a
    trace dated in the future, and an entry dated more than a day ahead is not kept."""
    now = time.time() if now is None else now
    if not cells or not dims or epoch > now + 86400:
        return
    key = log_key(cells[0])
    entry = json.dumps({"m": member, "o": observation_id, "x": points, "g": [segment_of(c) for c in cells],
                        "d": dict(sorted(dims.items()))}, ensure_ascii=False, separators=(",", ":"))
    pipe.zadd(key, {entry: epoch})
    pipe.zremrangebyscore(key, "-inf", f"({now - LOG_DAYS * 86400}")
    pipe.zremrangebyrank(key, 0, -LOG_MAX - 1)
    pipe.expire(key, (LOG_DAYS + 1) * 86400)  # a retired rubric version's log goes by itself
    # Each prompt and model a trace combines is its own value: a new mix is not a new version.
    seen = {f"{d}={part}": epoch for d, v in dims.items() if d in EVENT_DIMENSIONS for part in v.split("+")}
    if seen:
        for cell in cells:
            pipe.zadd(FIRST + cell, seen, lt=True)
            pipe.zadd(LAST + cell, seen, gt=True)
            pipe.expire(FIRST + cell, KEEP_SECONDS)
            pipe.expire(LAST + cell, KEEP_SECONDS)


def forget_unused(client: redis.Redis, cell: str, now: float) -> int:
    """Drop the values the cell has not seen for ``KEEP_SECONDS`` (seen again later, a value is
    then a change again), and beyond ``FIRST_MAX`` the least recently seen: the daily sweep."""
    # redis-py types these replies as one union for every decode_responses: ours are bytes.
    stale = cast(list[bytes], client.zrangebyscore(LAST + cell, "-inf", now - KEEP_SECONDS))
    extra = max(0, client.zcard(LAST + cell) - len(stale) - FIRST_MAX)
    if extra:
        stale += cast(list[bytes], client.zrange(LAST + cell, len(stale), len(stale) + extra - 1))
    if stale:
        client.zrem(FIRST + cell, *stale)
        client.zrem(LAST + cell, *stale)
    return len(stale)


def read(client: redis.Redis, cell: str, since: float, until: float = float("inf")) -> list[Entry]:
    """The cell's entries with trace time in [since, until], oldest first."""
    segment = segment_of(cell)
    rows: list[tuple[bytes, float]] = client.zrangebyscore(  # type: ignore[assignment]  # (bytes, float) pairs
        log_key(cell), since, "+inf" if until == float("inf") else until, withscores=True)
    out = []
    for raw, epoch in rows:
        try:
            e = json.loads(raw)
            if segment in e["g"]:
                out.append(Entry(str(e["m"]), str(e["o"]), float(e["x"]), float(epoch), tuple(e["g"]),
                                 {str(k): str(v) for k, v in e["d"].items()}))
        except (ValueError, KeyError, TypeError):
            continue  # not an entry this release wrote: skipped, never fatal
    return out


def first_seen(client: redis.Redis, cell: str) -> dict[tuple[str, str], float]:
    """(dimension, value) -> the earliest trace epoch the cell saw it."""
    rows: list[tuple[bytes, float]] = client.zrange(FIRST + cell, 0, -1, withscores=True)  # type: ignore[assignment]
    out = {}
    for raw, epoch in rows:
        dim, _, value = raw.decode().partition("=")
        out[(dim, value)] = float(epoch)
    return out
