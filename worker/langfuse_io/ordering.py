"""Observations in time order: the documented choice among observations of one name (the
earliest start, then the smallest id; traces.py), a trace's root, and the server's times read
as datetimes. Shared by the trace reader, the observation and session readers (subjects.py) and
the session sampler (samplers/sessions.py)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from worker.json_types import JSONDict


def first_by_start(observations: Iterable[JSONDict]) -> JSONDict | None:
    """The documented choice among observations of one name: earliest start, then smallest id."""
    return min(observations, key=start_key, default=None)


def earliest(observations: list[JSONDict]) -> JSONDict:
    """``first_by_start`` of a non-empty list (ValueError when it is empty)."""
    return min(observations, key=start_key)


def root_of(observations: list[JSONDict]) -> JSONDict:
    """The trace's root among its (non-empty) ``observations``: the earliest one flagged root or
    without a parent, else the earliest of all."""
    roots = [o for o in observations if o.get("isRootObservation") or not o.get("parentObservationId")]
    return earliest(roots or observations)


def start_key(obs: JSONDict) -> tuple[int, dt.datetime, str] | tuple[int]:
    """The sort key of observations in time order: start time, then id; those without a start
    time (hand-written traces) after the others, in their own order."""
    start = as_datetime(obs.get("startTime"))
    return (0, start, str(obs.get("id") or "")) if start is not None else (1,)


def as_datetime(value: object) -> dt.datetime | None:
    """A time as the server sends it (ISO 8601 text) or a datetime, naive read as UTC; else None."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    return None


def epoch_of(iso: str) -> float:
    """Epoch seconds of an ISO 8601 time we wrote (``as_datetime``); ValueError for anything else."""
    moment = as_datetime(iso)
    if moment is None:
        raise ValueError(f"not a time: {iso!r}")
    return moment.timestamp()


def iso_of(epoch: float, timespec: str = "seconds") -> str:
    """Epoch seconds as ISO 8601 UTC with ``Z`` (``epoch_of``'s inverse, to ``timespec``)."""
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")
