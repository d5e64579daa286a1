"""Late passes: traces ingested after the fresh window passed their timestamp, without re-listing.

The fresh window (Sampler.tick) lists each trace once, soon after it settles. A trace that
reaches Langfuse later than that (SDK batching, an offline client, a backfilled import) has a
timestamp already behind the cursor. Each late pass ``(delay, every)`` has its own cursor and,
every ``every`` seconds, lists the traces from that cursor up to ``now - delay``: every trace
once per pass, so a trace ingested up to the longest delay late is judged, and a trace is
listed 1 + len(passes) times in all (3 with the defaults: an hour late every 15 minutes, a day
late every 6 hours), where re-scanning an overlap window lists it once per tick.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator

import redis
from redis.commands.core import Script

from worker.redis_client import as_text

LATE_CURSOR = "tracejudge:sampler:late:"  # + delay seconds -> ISO time its pass has listed up to
LATE_RUN = "tracejudge:sampler:late-run:"  # + delay seconds -> when its pass last ran (epoch s)
START_KEY = "tracejudge:sampler:start"  # where continuous mode began: nothing before it is listed


@dataclasses.dataclass(frozen=True)
class LateWindow:
    delay: int
    since: dt.datetime
    until: dt.datetime
    now: dt.datetime

    def done(self, client: redis.Redis, advance: Script) -> None:
        """Record the window as listed (its cursor only moves forward), after it was enqueued."""
        advance(keys=[LATE_CURSOR + str(self.delay)], args=[utc_stamp(self.until)])
        client.set(LATE_RUN + str(self.delay), self.now.timestamp())


def due_late_windows(client: redis.Redis, passes: Iterable[tuple[int, int]], now: dt.datetime,
                     fresh_cursor: dt.datetime) -> Iterator[LateWindow]:
    """The late passes due at ``now``, each up to ``now - delay`` (never past the fresh cursor)."""
    start = _read(client, START_KEY)
    if start is None:
        return
    for delay, every in passes:
        last = client.get(LATE_RUN + str(delay))
        if last is not None and now.timestamp() - float(last) < every:
            continue
        since = _read(client, LATE_CURSOR + str(delay)) or start
        until = min(now - dt.timedelta(seconds=delay), fresh_cursor)
        if until > since:
            yield LateWindow(delay, since, until, now)


def _read(client: redis.Redis, key: str) -> dt.datetime | None:
    raw = client.get(key)
    return dt.datetime.fromisoformat(as_text(raw)) if raw else None


def utc_stamp(value: dt.datetime) -> str:
    """The cursors' format: UTC ISO 8601 with microseconds, so string order is time order."""
    return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
