"""Backfill: judge a past window, resumable after Ctrl-C or a crash.

The window is cut into time slices, each a sampler pass of its own; a slice is recorded as done
in Redis once all its traces are enqueued. A rerun of the same backfill skips the done slices
and redoes at most the one that was interrupted (dedup makes its repeats free). The sampler
itself respects the budget caps, and its Langfuse client the fleet-wide rate limit.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

from samplers.sampler import PassReport, Sampler

MIN_SLICE = dt.timedelta(hours=1)
MAX_SLICES = 500
_DONE_TTL = 30 * 24 * 3600


def slices(since: dt.datetime, until: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """Equal slices of at least an hour, at most MAX_SLICES of them, covering [since, until)."""
    span = until - since
    count = max(1, min(MAX_SLICES, int(span / MIN_SLICE)))
    step = span / count
    edges = [since + step * i for i in range(count)] + [until]
    return list(zip(edges[:-1], edges[1:]))


def progress_key(since: dt.datetime, until: dt.datetime, rubric_keys: list[str]) -> str:
    """One progress record per window and rubric set: a different --rubric is a different backfill."""
    ident = hashlib.sha256("|".join([since.isoformat(), until.isoformat(), *sorted(rubric_keys)]).encode())
    return f"tracejudge:backfill:{ident.hexdigest()[:16]}"


def run_backfill(sampler: Sampler, since: dt.datetime, until: dt.datetime,
                 on_slice: Callable[[int, PassReport | None], None] | None = None) -> tuple[PassReport, int]:
    """Every slice not done yet, oldest first; returns (totals, slices skipped as already done).

    ``on_slice(index, report)`` is called after each slice (report None for a skipped one)."""
    key = progress_key(since, until, [r.key for r in sampler.rubrics])
    done = {int(i) for i in sampler.client.smembers(key)}
    total, skipped = PassReport(since, until), 0
    for index, (start, end) in enumerate(slices(since, until)):
        if index in done:
            skipped += 1
            if on_slice:
                on_slice(index, None)
            continue
        report = sampler.run_pass(start, end)
        sampler.client.sadd(key, index)
        sampler.client.expire(key, _DONE_TTL)
        for field in ("scanned", "excluded", "selected", "enqueued", "already_enqueued", "budget_held", "requests"):
            setattr(total, field, getattr(total, field) + getattr(report, field))
        total.per_rubric.update(report.per_rubric)
        if on_slice:
            on_slice(index, report)
    return total, skipped
