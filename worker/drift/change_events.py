"""The change events of an attribution: which changes (a prompt version, release, version or
judged model first seen in the cell) fall in the start interval, and how their new value compares.

Each event is listed with the traffic still on the old value against the new on the same days
(the after window): "prompt summarize@12 73.4, summarize@13 35.2 on the same days", ranked by
the part of the drop the new value's traffic explains, w₁(new)·(μ₁(new) − μ₁(old)): an event
whose new value is in the named slice first (``named_first``), then those whose same-days
comparison is clearly worse (z ≤ −``Z_EVENT``), then the rest (a full rollout leaves only a
before/after comparison, confounded with anything else that changed then). A new value has no
scores before the start: its baseline (and its pairs') is its previous value's, or the whole
cell's when the previous value is not known.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from worker.drift.attribution_index import CellIndex
from worker.drift.attribution_types import CellData, EventFinding, Item, Settings

Z_EVENT = 2.0  # a same-days comparison this many SEs worse ranks an event ahead of before/after ones


def rank_events(cell: CellData, settings: Settings = Settings()) -> tuple[EventFinding, ...]:
    """The change events inside the start interval (± ``event_slack_s``), each with its old and
    new value compared — on the same days when the old value still has traffic after the start,
    else the old value's scores before it — ranked by the part of the drop the new value's
    traffic explains (most first). Events outside the interval are not listed."""
    ix = CellIndex(cell, settings)
    lo, hi = cell.start_interval
    drop = cell.after.mean - cell.before.mean if cell.after.n and cell.before.n else math.nan
    floor = 0.25 * max(cell.before.variance, 1.0)
    n1 = cell.after.n
    out: list[EventFinding] = []
    for e in cell.events:
        if not lo - settings.event_slack_s <= e.first_seen <= hi + settings.event_slack_s:
            continue
        new = ix.single((e.dimension, e.value))
        old_value = ix.previous.get((e.dimension, e.value))
        prev = ix.single((e.dimension, old_value)) if old_value is not None else None
        if new is None or new.after.n == 0 or n1 == 0 or (old_value is not None and prev is None):
            out.append(EventFinding(e, old_value, None, new.after.mean if new and new.after.n else None,
                                    0, new.after.n if new else 0, False, 0.0, 0.0, math.nan))
            continue
        # The old traffic: the previous value's, or (previous unknown) every other value's.
        old_after = prev.after if prev is not None else cell.after - new.after
        old_before = prev.before if prev is not None else cell.before - new.before
        same_days = old_after.n >= settings.min_slice_after
        ref = old_after if same_days else old_before
        if ref.n == 0:
            out.append(EventFinding(e, old_value, None, new.after.mean, 0, new.after.n, False, 0.0,
                                    0.0, math.nan))
            continue
        diff = new.after.mean - ref.mean
        contribution = new.after.n / n1 * diff
        z = diff / math.sqrt(max(new.after.variance, floor) / new.after.n + max(ref.variance, floor) / ref.n)
        out.append(EventFinding(e, old_value, ref.mean, new.after.mean, ref.n, new.after.n, same_days,
                                contribution, contribution / drop if drop < 0 else 0.0, z))
    # Same-days evidence first (old and new side by side, the new clearly worse): a before/after
    # comparison of a full rollout is confounded with everything else that changed then.
    out.sort(key=lambda f: (not (f.same_days and f.z <= -Z_EVENT), f.contribution))
    return tuple(out)


def named_first(events: tuple[EventFinding, ...], key: Sequence[Item]) -> tuple[EventFinding, ...]:
    """The events whose new value is in the named slice first (a stable reorder)."""
    inside = {item for item in key}
    return tuple(sorted(events, key=lambda f: (f.event.dimension, f.event.value) not in inside))
