"""The cause of an open incident, from the slice log: which slice and which change (issue 27,
item 2), and the traces that show it (item 3).

``find_cause`` reads the alerting cell's log entries (worker/drift/slice_log.py) from
``BEFORE_DAYS`` before the incident's estimated start until now, builds attribution's input
(the whole cell, each single value and each pair of values of two dimensions, before and after
the start; each dimension bounded to its ``TOP_K`` values and ``other``; the change events whose
first sighting in the cell falls in the start interval ± ``EVENT_SLACK_S``, reaching further back
in a sparse cell: as far as it takes to judge ``EVENT_LAG_SCORES`` traces), runs
worker/drift/attribution.py and keeps the result as the incident's ``cause``: what the alert,
``drift``, ``status`` and the report show. While the data cannot tell, its status is
``unknown`` and its reason says "cause not yet known, n = …"; each detector check tries again.

The dimensions are the trace's (worker/drift/dimensions.py) and the drift segment keys the cell
does not fix (``feature``, ``tenant``). The cell's own before/after figures here are those of
the log, which holds the scores confirmed since slices were recorded: the detector's figures
(the reference, the effect) stay the alert's headline.
"""
from __future__ import annotations

import dataclasses
import itertools
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping

import redis

from worker.drift import signals, slice_log
from worker.drift.attribution import (Attribution, CellData, ChangeEvent, EventFinding, Item, Moments, NamedSlice,
                                      Settings, SliceData, SliceKey, attribute, describe, label, slice_key)
from worker.drift.cause_records import CauseRecord, EventJSON, ExampleJSON, NamedSliceJSON
from worker.drift.records import IncidentRecord
from worker.drift.slice_log import EVENT_DIMENSIONS, Entry
from worker.langfuse_io.ordering import epoch_of, iso_of

BEFORE_DAYS = 7
TOP_K = 12  # values kept per dimension; the rest are "other"
EVENT_SLACK_S = 3 * 3600  # a change first judged this long outside the start interval still counts
EVENT_LAG_SCORES = 24  # ... or this many of the cell's judged traces before it, when that is longer
EVIDENCE_N = 5
OTHER = "other"


def find_cause(client: redis.Redis, cell: str, incident: IncidentRecord, now: float) -> CauseRecord:
    """The incident's cause from the cell's slice log, as of ``now`` (see the module doc)."""
    started = float(incident["started_epoch"])
    lo, hi = (epoch_of(x) for x in incident["started_between"])
    entries = slice_log.read(client, cell, started - BEFORE_DAYS * 86400, now)
    segment = slice_log.segment_of(cell)
    found = cause_of(entries, slice_log.first_seen(client, cell), segment, started, (lo, hi), now)
    found["signals"] = traffic_signals(client, segment, found, started, now)
    found["lines"] += [f"SIGNALS {line}" for line in found["signals"]]
    return found


def traffic_signals(client: redis.Redis, segment: str, found: CauseRecord, started: float, now: float) -> list[str]:
    """Every trace's output tokens, latency and errors (worker/drift/signals.py), not only the
    judged ones': for the first change event, its new value since the start against the old value
    (on the same days while the old one still has traffic, else before the start); for a named
    single slice, the slice since the start against before it."""
    before_since = started - BEFORE_DAYS * 86400
    now += 3600  # the current hour counts
    lines = []
    for event in found["events"][:1]:
        if event["dimension"] not in signals.DIMENSIONS:
            continue
        new = signals.read(client, segment, (event["dimension"], event["value"]), started, now)
        if event["previous"] is not None:
            old_item = (event["dimension"], event["previous"])
            old = signals.read(client, segment, old_item, started, now)
            when = "on the same days"
            if old.n < 20:
                old, when = signals.read(client, segment, old_item, before_since, started), "(old: before the start)"
            versus = f"{event['value']} against {event['previous']} {when}"
        else:
            whole = signals.read(client, segment, ("*", "*"), started, now)
            old = dataclasses.replace(whole, n=whole.n - new.n, out=whole.out - new.out, lat=whole.lat - new.lat,
                                      err=whole.err - new.err)
            versus = f"{event['value']} against the rest on the same days"
        text = signals.compare(old, new)
        if text:
            lines.append(f"{event['dimension']} {versus}, every trace (n {old.n:,.0f} vs {new.n:,.0f}): {text}")
    for named in found["slices"][:1]:
        dim, _, value = named["slice"].partition("=")
        if " & " in named["slice"] or dim not in signals.DIMENSIONS:
            continue
        text = signals.compare(signals.read(client, segment, (dim, value), before_since, started),
                               signals.read(client, segment, (dim, value), started, now))
        if text:
            lines.append(f"{named['slice']} since the start against before it, every trace: {text}")
    return lines


def cause_of(entries: list[Entry], first: Mapping[tuple[str, str], float], segment: str, started: float,
             interval: tuple[float, float], now: float) -> CauseRecord:
    """``find_cause`` on entries already read: pure."""
    fixed = {part.split("=", 1)[0] for part in segment.split("|") if "=" in part}
    rows = [(e, _dims(e, fixed)) for e in entries]
    kept = _top_values(d for _, d in rows)
    rows = [(e, {k: v if v in kept[k] else OTHER for k, v in d.items()}) for e, d in rows]
    # A change is first *judged* some traces after it began, and a sparse cell's start estimate
    # can be hours late: the events searched reach back as far as the cell takes to judge
    # EVENT_LAG_SCORES traces (at least EVENT_SLACK_S).
    span = max(now - (started - BEFORE_DAYS * 86400), 3600.0)
    lag = max(EVENT_SLACK_S, EVENT_LAG_SCORES * span / max(len(rows), 1))
    data = _cell_data(rows, started, (interval[0] - lag + EVENT_SLACK_S, interval[1]), first, kept)
    found = attribute(data, Settings(event_slack_s=EVENT_SLACK_S))
    after, before = _evidence(found, rows, started)
    return {"status": found.status, "reason": found.reason, "lines": describe(found),
            "slices": [_named_json(s) for s in found.slices], "events": [_event_json(f) for f in found.events],
            "after": after, "before": before, "n_before": found.n_before, "n_after": found.n_after,
            "computed_at": iso_of(now), "signals": []}


def _dims(e: Entry, fixed: set[str]) -> dict[str, str]:
    """An entry's dimensions: its own, and the segment keys its cell does not fix."""
    out = dict(e.dims)
    for seg in e.segments:
        if seg != "all" and "|" not in seg:
            key, _, value = seg.partition("=")
            out[key] = value
    return {k: v for k, v in out.items() if k not in fixed}


def _top_values(all_dims: Iterable[Mapping[str, str]]) -> dict[str, Counter[str]]:
    """Per dimension its TOP_K values by traffic, with their counts (the rest become ``other``)."""
    counts: dict[str, Counter[str]] = {}
    for dims in all_dims:
        for k, v in dims.items():
            counts.setdefault(k, Counter())[v] += 1
    return {k: Counter(dict(c.most_common(TOP_K))) for k, c in counts.items()}


def _cell_data(rows: list[tuple[Entry, dict[str, str]]], started: float, interval: tuple[float, float],
               first: Mapping[tuple[str, str], float], kept: Mapping[str, Counter[str]]) -> CellData:
    acc: dict[SliceKey, list[list[float]]] = {}
    whole = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    for e, dims in rows:
        side = 1 if e.epoch >= started else 0
        x = e.points
        items = sorted(dims.items())
        keys: list[SliceKey] = [(item,) for item in items]
        keys += [slice_key(a, b) for a, b in itertools.combinations(items, 2)]
        for moments in [whole] + [acc.setdefault(k, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]) for k in keys]:
            m = moments[side]
            m[0] += 1
            m[1] += x
            m[2] += x * x
    slices = tuple(SliceData(k, _moments(v[0]), _moments(v[1])) for k, v in acc.items())
    return CellData(_moments(whole[0]), _moments(whole[1]), slices, _events(first, interval, kept), interval)


def _moments(m: list[float]) -> Moments:
    return Moments(int(m[0]), m[1], m[2])


def _events(first: Mapping[tuple[str, str], float], interval: tuple[float, float],
            kept: Mapping[str, Counter[str]]) -> tuple[ChangeEvent, ...]:
    """The change events in the start interval (± the slack): a prompt version, release, version
    or judged model first seen in the cell then. First sightings are kept per prompt and model,
    a trace's combination split (``a@1+b@2``); an event names the slice value (the combination)
    with most traffic that holds it. A prompt's previous value is the same prompt's latest
    version seen before it, as its slice value."""
    lo, hi = interval[0] - EVENT_SLACK_S, interval[1] + EVENT_SLACK_S

    def slice_value(dim: str, element: str) -> str | None:
        holding = [(n, v) for v, n in kept.get(dim, Counter()).items() if element in v.split("+")]
        return max(holding)[1] if holding else None

    out, named = [], set()
    for (dim, element), seen in sorted(first.items(), key=lambda kv: kv[1]):
        value = slice_value(dim, element) if dim in EVENT_DIMENSIONS and lo <= seen <= hi else None
        if value is None or (dim, value) in named:
            continue
        previous = None
        if dim == "prompt":
            name = element.rsplit("@", 1)[0]
            older = [(t, v) for (d, v), t in first.items()
                     if d == "prompt" and v != element and t < seen and v.rsplit("@", 1)[0] == name]
            previous = slice_value(dim, max(older)[1]) if older else None
        named.add((dim, value))
        out.append(ChangeEvent(dim, value, seen, previous if previous != value else None))
    return tuple(out)


def _evidence(found: Attribution, rows: list[tuple[Entry, dict[str, str]]],
              started: float) -> tuple[list[ExampleJSON], list[ExampleJSON]]:
    """The named slice's lowest-scoring traces since the start, and comparable ones before it:
    the same slice, a new value (a change event's) read as the value it replaced, around that
    slice's median. Without a named slice: the new value of the first change event."""
    items: tuple[Item, ...] = ()
    if found.slices:
        items = found.slices[0].key
    elif found.events:
        items = ((found.events[0].event.dimension, found.events[0].event.value),)
    if not items:
        return [], []
    replaced = {(f.event.dimension, f.event.value): f.old_value for f in found.events if f.old_value is not None}
    before_items = tuple((d, replaced.get((d, v), v)) for d, v in items)
    after = sorted((e for e, d in rows if e.epoch >= started and _matches(d, items)), key=lambda e: e.points)
    before = [e for e, d in rows if e.epoch < started and _matches(d, before_items)]
    if before:
        median = statistics.median(e.points for e in before)
        before = sorted(before, key=lambda e: (abs(e.points - median), e.member))
    return [_example(e) for e in after[:EVIDENCE_N]], [_example(e) for e in before[:EVIDENCE_N]]


def _matches(dims: Mapping[str, str], items: Iterable[Item]) -> bool:
    return all(dims.get(d) == v for d, v in items)


def _example(e: Entry) -> ExampleJSON:
    return {"trace_id": e.member, "observation_id": e.observation_id, "points": round(e.points, 1),
            "at": iso_of(e.epoch)}


def _named_json(s: NamedSlice) -> NamedSliceJSON:
    return {"slice": label(s.key), "share_of_drop": round(s.share_of_drop, 3), "before_mean": round(s.before_mean, 1),
            "after_mean": round(s.after_mean, 1), "n_before": s.n_before, "n_after": s.n_after,
            "share_after": round(s.share_after, 3), "effect": round(s.effect, 1),
            "effect_interval": [round(s.effect_low, 1), round(s.effect_high, 1)]}


def _event_json(f: EventFinding) -> EventJSON:
    e = f.event
    return {"dimension": e.dimension, "value": e.value, "previous": f.old_value, "first_seen": iso_of(e.first_seen),
            "old_mean": None if f.old_mean is None else round(f.old_mean, 1),
            "new_mean": None if f.new_mean is None else round(f.new_mean, 1), "old_n": f.old_n, "new_n": f.new_n,
            "same_days": f.same_days, "share_of_drop": round(f.share_of_drop, 3)}
