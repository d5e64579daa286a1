"""Signals of *every* trace, not only the judged ones (issue 27, item 3): output tokens, latency
and errors per cell segment, hour and slice value, so a cause can say "output tokens −58% on
summarize@13" from all the traffic.

``collect`` lists a window of Langfuse's v2 observations twice, lean (no input or output): the
roots (their metadata gives the cell segments, their release/version/environment, their
latency and level) and the generations (their prompt ``name@version``, model, input and output
tokens, level). Per trace it adds, in each of its segments and the hour of its start::

    tracejudge:signals:<segment>:<hour epoch>   hash  "<dimension>=<value>|n"   +1
                                                      "<dimension>=<value>|out" +output tokens
                                                      "<dimension>=<value>|lat" +latency ms
                                                      "<dimension>=<value>|err" +1 when the root or
                                                      a generation has level ERROR
    tracejudge:signals:cursor                   the end of the last window counted

for the dimensions ``prompt``, ``release``, ``version``, ``environment``, ``model``,
``input_tokens`` (read as worker/drift/dimensions.py reads a judged trace, of every generation;
no bucket without the server's token counts) and ``*=*`` (the segment's whole traffic). Traces
ingested after their window was counted (``LAG_S``) are not; a generation counts with its root,
listed up to ``LAG_S`` past the roots' window (a root at a window's end keeps its generations;
one started later than that after its root is not counted). The window's counts and the cursor
are written in one transaction, so a window counts once; a window is at most ``MAX_WINDOW_S``
and ends ``LAG_S`` before now (ingestion lag). Kept ``KEEP_DAYS``. The scheduler runs
``catch_up`` with the detector, a day of traffic a tick at most (worker/fleet/scheduler.py);
``drift --once`` runs it to the end.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping

import redis
from langfuse.api import LangfuseAPI

from worker.drift.contribution import segments
from worker.drift.dimensions import MAX_VALUE_CHARS, generation_dims
from worker.json_types import JSONDict
from worker.langfuse_io.observations import walk_v2_plain
from worker.langfuse_io.ordering import as_datetime, iso_of
from worker.langfuse_io.steps import step_of, text_or_none

PREFIX = "tracejudge:signals:"
CURSOR = PREFIX + "cursor"
KEEP_DAYS = 21
LAG_S = 600
MAX_WINDOW_S = 2 * 3600  # bounds what a window holds in memory (lean roots and generations)
FIRST_BACK_S = 8 * 86400  # the first run counts from this far back: a week before a start, and the day after
DIMENSIONS = ("prompt", "release", "version", "environment", "model", "input_tokens")
FIELDS = ("n", "out", "lat", "err")
ROOT_FIELDS = "core,basic,metadata,trace_context"
GENERATION_FIELDS = "core,basic,model,usage,prompt"


@dataclasses.dataclass
class Totals:
    """One slice's sums over some hours: traces, output tokens, latency (ms), errors."""
    n: float = 0.0
    out: float = 0.0
    lat: float = 0.0
    err: float = 0.0

    def add(self, other: Mapping[str, float]) -> None:
        self.n += other.get("n", 0.0)
        self.out += other.get("out", 0.0)
        self.lat += other.get("lat", 0.0)
        self.err += other.get("err", 0.0)


def catch_up(api: LangfuseAPI, client: redis.Redis, now: float, max_windows: int | None = None) -> int:
    """``collect`` window after window until the cursor is ``LAG_S`` behind ``now`` (or after
    ``max_windows``: the scheduler spreads a long catch-up over its ticks); the traces counted."""
    counted, windows = 0, 0
    while max_windows is None or windows < max_windows:
        n = collect(api, client, now)
        if n is None:
            return counted
        counted, windows = counted + n, windows + 1
    return counted


def collect(api: LangfuseAPI, client: redis.Redis, now: float) -> int | None:
    """Count the next window of traffic (from the cursor; the first run starts FIRST_BACK_S
    back); the traces counted, or None when the cursor is already LAG_S behind ``now``."""
    raw = client.get(CURSOR)
    since = float(raw) if raw is not None else now - FIRST_BACK_S
    until = min(since + MAX_WINDOW_S, now - LAG_S)
    if until <= since:
        return None
    window = {"fromStartTime": iso_of(since, "milliseconds"), "toStartTime": iso_of(until, "milliseconds")}
    roots = {o["traceId"]: o for o in walk_v2_plain(api, {**window, "isRootObservation": "true"},
                                                    fields=ROOT_FIELDS, limit=1000) if o.get("traceId")}
    generations: dict[str, list[JSONDict]] = defaultdict(list)
    # ends at most at now
    spill = {**window, "toStartTime": iso_of(until + LAG_S, "milliseconds"), "type": "GENERATION"}
    for g in walk_v2_plain(api, spill, fields=GENERATION_FIELDS, limit=1000):
        if g.get("traceId") in roots:
            generations[g["traceId"]].append(g)
    counts = tally(roots.values(), generations)
    pipe = client.pipeline(transaction=True)
    for key, fields in counts.items():
        for field, value in fields.items():
            pipe.hincrbyfloat(key, field, value)
        pipe.expire(key, KEEP_DAYS * 86400)
    pipe.set(CURSOR, repr(until))
    pipe.execute()
    return len(roots)


def tally(roots: Iterable[JSONDict], generations: Mapping[str, list[JSONDict]]) -> dict[str, dict[str, float]]:
    """Per key and field, what the traces of ``roots`` (with their ``generations``) add: pure."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for root in roots:
        start = as_datetime(root.get("startTime"))
        if start is None:
            continue
        gens = [step_of(g) for g in generations.get(root["traceId"], [])]
        dims = _dims(root, gens)
        figures = {"n": 1.0, "out": float(sum(g["output_tokens"] or 0 for g in gens)),
                   "lat": _latency_ms(root), "err": float(any(o.get("level") == "ERROR" for o in [root, *gens]))}
        hour = int(start.timestamp() // 3600 * 3600)
        metadata = root.get("metadata")
        for segment in segments(metadata if isinstance(metadata, dict) else {}):
            fields = out[f"{PREFIX}{segment}:{hour}"]
            for item in ["*=*", *(f"{d}={v}" for d, v in dims.items())]:
                for name, value in figures.items():
                    fields[f"{item}|{name}"] += value
    return out


def read(client: redis.Redis, segment: str, item: tuple[str, str], since: float, until: float) -> Totals:
    """A slice's sums over the hours that lie wholly in [since, until]: the hour a start falls in
    is on neither side of it (pass ``until`` an hour past now to include the current hour)."""
    totals = Totals()
    hours = range(-int(-since // 3600) * 3600, int(until) - 3600 + 1, 3600)
    pipe = client.pipeline()
    for hour in hours:
        pipe.hmget(f"{PREFIX}{segment}:{hour}", [f"{item[0]}={item[1]}|{f}" for f in FIELDS])
    for values in pipe.execute():
        totals.add({f: float(v) for f, v in zip(FIELDS, values) if v is not None})
    return totals


def compare(before: Totals, after: Totals) -> str | None:
    """"output tokens 212 → 89 (−58%), latency 2.10 → 1.40 s (−33%), errors 0.2% → 0.3%", or None
    without traffic on either side."""
    if before.n == 0 or after.n == 0:
        return None
    parts = []
    for name, a, b, unit in (("output tokens", before.out / before.n, after.out / after.n, ""),
                             ("latency", before.lat / before.n / 1000, after.lat / after.n / 1000, " s")):
        change = f" ({(b - a) / a:+.0%})" if a > 0 else ""
        parts.append(f"{name} {a:,.{2 if unit else 0}f} → {b:,.{2 if unit else 0}f}{unit}{change}")
    parts.append(f"errors {before.err / before.n:.1%} → {after.err / after.n:.1%}")
    return ", ".join(parts).replace("-", "−")


def _dims(root: JSONDict, gens: list[JSONDict]) -> dict[str, str]:
    """The trace's slice values, as worker/drift/dimensions.py reads a judged trace's (of every
    generation: a rubric's named steps are not known here)."""
    dims = generation_dims(gens)
    for name in ("release", "version", "environment"):
        text = text_or_none(root.get(name))
        if text:
            dims[name] = text[:MAX_VALUE_CHARS]
    return dims


def _latency_ms(root: JSONDict) -> float:
    start, end = as_datetime(root.get("startTime")), as_datetime(root.get("endTime"))
    return max(0.0, (end - start).total_seconds() * 1000) if start and end else 0.0
