"""Per-day aggregates per rubric × version × judge model × segment, bucketed by the trace's
own timestamp (a backfill lands in the right week).

Written inside the same Redis script that counts the outcome, so each score id is added
exactly once. Values are stored in quality points: 0–100 where higher is better, whatever
the rubric's scale and direction, so the drift test needs no rescaling.
"""
from __future__ import annotations

import datetime as dt

import redis

from worker.accounting.outcomes import Op
from worker.rubrics.fields import metadata_text
from worker.rubrics.rubric import Rubric

PREFIX = "tracejudge:agg:"
CELLS = PREFIX + "cells"
PENDING = "tracejudge:seq:pending:"  # + cell: the sequential detector's reorder buffer (drift/detection.py)
DAYS = PREFIX + "days:"  # + cell: zset of the days it has aggregates for (score: the day's epoch)
DEFAULT_SEGMENT_KEYS = ("feature", "tenant")
BOTTOM_N = 20
# A cell-day is kept this long after its day (drift/retention.py expires it): past the rebuild's
# 90-day reach and the report's longest window, and bounded, so Redis reaches a plateau.
TTL_DAYS = 120


def quality_points(rubric: Rubric, value) -> float:
    scale = rubric.scale
    if scale.kind == "numeric":
        points = (float(value) - scale.minimum) / (scale.maximum - scale.minimum) * 100
    elif scale.kind == "categorical":
        values = [v for _, v in scale.labels]
        lo, hi = min(values), max(values)
        points = (dict(scale.labels)[value] - lo) / (hi - lo) * 100
    else:
        points = float(value) * 100
    return points if scale.higher_is_better else 100 - points


def passed(rubric: Rubric, value) -> bool:
    """Pass/fail rubrics: the best label (or true, for a boolean) counts as a pass."""
    return quality_points(rubric, value) >= 100 - 1e-9


def segments(metadata: dict, keys: tuple[str, ...] = DEFAULT_SEGMENT_KEYS, only_key: str | None = None) -> list[str]:
    """The cells a trace counts in. ``only_key``: a trace picked only because its segment's quota
    raised the rate counts in that segment's cells alone; in the all-traffic and feature cells
    it would over-weight small segments and turn a change in who is sampled into a "drop"."""
    present = [(k, metadata_text(metadata[k])) for k in keys
               if isinstance(metadata.get(k), (str, int, float)) and metadata_text(metadata[k])]
    cells = ["all"] + [f"{k}={v}" for k, v in present]
    if len(present) >= 2:
        cells.append("|".join(f"{k}={v}" for k, v in present[:2]))
    if only_key is not None:
        cells = [c for c in cells if any(part.startswith(f"{only_key}=") for part in c.split("|"))]
    return cells


def cell_key(rubric: Rubric, segment: str) -> str:
    return f"{rubric.name}|v{rubric.version}|{rubric.judge.model}|{segment}"


def day_of(timestamp: dt.datetime | None) -> str:
    return (timestamp or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).date().isoformat()


def day_key(cell: str, day: str) -> str:
    return f"{PREFIX}{cell}:{day}"


def bottom_key(cell: str, day: str) -> str:
    return f"{PREFIX}bottom:{cell}:{day}"


def days_key(cell: str) -> str:
    return DAYS + cell


def day_epoch(day: str) -> int:
    return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc).timestamp())


def _indexed(cell: str, day: str) -> list[Op]:
    """The cell in the cell set and its day in the cell's day index: what retention walks."""
    return [("sadd", CELLS, cell, ""), ("zadd", days_key(cell), day, day_epoch(day))]


def scored_ops(rubric: Rubric, trace_id: str, metadata: dict, timestamp, value, cost_microusd: int,
               only_key: str | None = None) -> list[Op]:
    points = quality_points(rubric, value)
    day = day_of(timestamp)
    member = bottom_member(trace_id, metadata)
    # One member per score of the cell (a trace's observations each have one): read once by the
    # sequential detector, in trace-time order.
    pending_member = f"{member}|{metadata.get('observation_id') or ''}|{points!r}"
    stamp = (timestamp or dt.datetime.now(dt.timezone.utc)).timestamp()
    ops: list[Op] = []
    for segment in segments(metadata, only_key=only_key):
        cell = cell_key(rubric, segment)
        key = day_key(cell, day)
        ops += [*_indexed(cell, day),
                ("hincrby", key, "n", 1),
                ("hincrbyfloat", key, "sum", repr(points)),
                ("hincrbyfloat", key, "sumsq", repr(points * points)),
                ("hincrby", key, "cost_microusd", cost_microusd),
                ("keep_lowest", bottom_key(cell, day), member, repr(points)),
                ("zadd", PENDING + cell, pending_member, stamp)]
        if rubric.scale.kind != "numeric":
            ops += [("hincrby", key, "passes", 1 if passed(rubric, value) else 0),
                    ("hincrby", key, f"label:{value}", 1)]
    return ops


SESSION_MEMBER = "session:"


def bottom_member(trace_id: str | None, metadata: dict) -> str:
    """What a bottom list names: the trace (trace and observation scores, which carry their
    trace), or ``session:<id>`` for a session score (which has no trace)."""
    if trace_id is not None:
        return trace_id
    return SESSION_MEMBER + str(metadata.get("session_id"))


def unscored_ops(rubric: Rubric, metadata: dict, timestamp, reason: str, only_key: str | None = None) -> list[Op]:
    day = day_of(timestamp)
    ops: list[Op] = []
    for segment in segments(metadata, only_key=only_key):
        cell = cell_key(rubric, segment)
        ops += [*_indexed(cell, day), ("hincrby", day_key(cell, day), "unscored", 1),
                ("hincrby", day_key(cell, day), f"unscored:{reason}", 1)]
    return ops


def read_days(client: redis.Redis, cell: str, days: list[str]) -> dict[str, dict[str, float]]:
    pipe = client.pipeline()
    for day in days:
        pipe.hgetall(day_key(cell, day))
    out = {}
    for day, raw in zip(days, pipe.execute()):
        out[day] = {k.decode(): float(v) for k, v in raw.items()}
    return out


def bottom(client: redis.Redis, cell: str, days: list[str], n: int = BOTTOM_N) -> list[tuple[str, float]]:
    merged: dict[str, float] = {}
    for day in days:
        for member, score in client.zrange(bottom_key(cell, day), 0, n - 1, withscores=True):
            merged[member.decode()] = score
    return sorted(merged.items(), key=lambda kv: (kv[1], kv[0]))[:n]
