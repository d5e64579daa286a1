"""Every trace's signals (issue 27, item 3; worker/drift/signals.py): output tokens, latency and
errors per segment, hour and slice value, counted once per window from Langfuse's listing, for
the judged and the unjudged traces alike."""
from __future__ import annotations

import datetime as dt
import random

from emulators.seed import _answer, _trace
from worker.drift import signals
from worker.langfuse_io.client import build_langfuse_api


def observations(now: dt.datetime, n: int = 40) -> list[dict]:
    rng, out = random.Random(2), []
    for i in range(n):
        start = now - dt.timedelta(hours=3, minutes=i)
        trace = _trace(rng, "%032x" % rng.getrandbits(128), start, "summarize", "acme", "production",
                       _answer(rng, "summarize", 0.8))
        v13 = i % 2 == 0
        trace[1].update(promptName="summarize", promptVersion=13 if v13 else 12,
                        usageDetails={"input": 500, "output": 80 if v13 else 200},
                        level="ERROR" if i % 10 == 0 else "DEFAULT")
        out += trace
    return out


def test_tally_counts_each_trace_in_its_segments_and_slices():
    now = dt.datetime(2026, 12, 7, 12, 30, tzinfo=dt.timezone.utc)
    obs = observations(now, 4)
    roots = [o for o in obs if o["isRootObservation"]]
    gens = {o["traceId"]: [o] for o in obs if o["type"] == "GENERATION"}
    counts = signals.tally(roots, gens)
    assert {k.split(":")[2] for k in counts} == {"all", "feature=summarize", "tenant=acme",
                                                 "feature=summarize|tenant=acme"}
    hour = next(iter(counts.values()))
    assert hour["*=*|n"] == 4 and hour["prompt=summarize@13|n"] == 2 and hour["prompt=summarize@13|out"] == 160
    assert hour["prompt=summarize@12|out"] == 400 and hour["*=*|err"] == 1 and hour["input_tokens=<1k|n"] == 4
    assert hour["release=2026.11.3|n"] == 4 and hour["*=*|lat"] > 0


def test_collect_lists_every_trace_once_and_read_compares_two_slices(langfuse_emu, settings, redis_client):
    now = dt.datetime.now(dt.timezone.utc)
    langfuse_emu.load_observations(observations(now))
    api = build_langfuse_api(settings)
    assert signals.catch_up(api, redis_client, now.timestamp()) == 40
    assert signals.catch_up(api, redis_client, now.timestamp()) == 0  # the cursor moved: nothing twice
    since, until = now.timestamp() - 86400, now.timestamp()
    new = signals.read(redis_client, "tenant=acme", ("prompt", "summarize@13"), since, until)
    old = signals.read(redis_client, "tenant=acme", ("prompt", "summarize@12"), since, until)
    assert (new.n, new.out, new.err) == (20, 1600, 4) and (old.n, old.out, old.err) == (20, 4000, 0)
    text = signals.compare(old, new)
    assert text is not None and text.startswith("output tokens 200 → 80 (−60%), latency ")
    assert text.endswith("errors 0.0% → 20.0%")
    assert signals.compare(signals.Totals(), new) is None
    assert signals.read(redis_client, "tenant=globex", ("*", "*"), since, until).n == 0


def test_a_root_at_a_windows_end_keeps_a_generation_started_after_it(langfuse_emu, settings, redis_client):
    now = dt.datetime.now(dt.timezone.utc)
    redis_client.set(signals.CURSOR, repr(now.timestamp() - signals.LAG_S - signals.MAX_WINDOW_S - 3600))
    until = now - dt.timedelta(seconds=signals.LAG_S + 3600)  # the first window's end
    trace = observations(until + dt.timedelta(hours=3, seconds=-2), 1)  # its root 2 s before it
    trace[1].update(startTime=(until + dt.timedelta(seconds=30)).isoformat().replace("+00:00", "Z"))
    langfuse_emu.load_observations(trace)
    api = build_langfuse_api(settings)
    assert signals.collect(api, redis_client, now.timestamp()) == 1
    assert signals.collect(api, redis_client, now.timestamp()) == 0  # the next window: its root is not there
    got = signals.read(redis_client, "all", ("prompt", "summarize@13"), now.timestamp() - 86400, now.timestamp())
    assert (got.n, got.out) == (1, 80)
