"""Attribution's inputs (issue 27, item 1): a trace's slices (worker/drift/dimensions.py), the
bounded slice log and first-seen values its confirmed score writes (worker/drift/slice_log.py),
and the cause read back from them (worker/drift/cause.py), on a real Redis."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random

import pytest

from worker.drift import slice_log
from worker.drift.cause import cause_of
from worker.drift.contribution import SLICES_KEY, ContributionFormatError, DriftContribution
from worker.drift.dimensions import dimensions_of, metadata_keys, token_bucket
from worker.langfuse_io.traces import Trace, trace_of
from worker.rubrics.fields import Variable

NOW = dt.datetime(2026, 12, 7, 12, tzinfo=dt.timezone.utc)


def agent_trace(**root_extra) -> Trace:
    root = {"id": "r", "name": "summarize", "startTime": NOW.isoformat(), "input": "x" * 4000, "output": "ok",
            "metadata": {"feature": "summarize", "tenant": "acme", "tier": "pro"}, "environment": "production",
            "release": "2026.12.1", "version": "app-v43", **root_extra}
    steps = [root,
             {"id": "g1", "name": "draft", "type": "GENERATION", "model": "gpt-4o", "promptName": "summarize",
              "promptVersion": 13, "usageDetails": {"input": 3500, "output": 200}},
             {"id": "g2", "name": "polish", "type": "GENERATION", "model": "gpt-4o-mini", "promptName": "polish",
              "promptVersion": 2, "usageDetails": {"input": 800}},
             {"id": "t1", "name": "search", "type": "TOOL"}, {"id": "t2", "name": "calc", "type": "TOOL"},
             {"id": "t3", "name": "search", "type": "TOOL"}]
    return trace_of("t", root, [root], outline=steps)


def test_a_traces_slices_read_its_judged_generations_release_tools_and_named_metadata(rubric):
    with_tier = dataclasses.replace(rubric, variables=(*rubric.variables, Variable("tier", "metadata", ("$.tier",))))
    assert metadata_keys(with_tier) == ("tier",)
    every = dimensions_of(agent_trace(), with_tier)
    assert every == {"prompt": "polish@2+summarize@13", "release": "2026.12.1", "version": "app-v43",
                     "environment": "production", "model": "gpt-4o+gpt-4o-mini", "input_tokens": "3k-10k",
                     "tool": "calc+search", "meta.tier": "pro"}
    # The steps the rubric reads are the judged generations: their prompt, model and tokens only.
    named = dimensions_of(agent_trace(), rubric, judged_names=("polish",))
    assert (named["prompt"], named["model"], named["input_tokens"]) == ("polish@2", "gpt-4o-mini", "<1k")


def test_without_usage_the_tokens_are_estimated_from_the_input_and_values_are_bounded(rubric):
    trace = trace_of("t", {"id": "r", "input": "y" * 20_000, "release": "r" * 500}, [])
    dims = dimensions_of(trace, rubric)
    assert dims["input_tokens"] == "3k-10k" and dims["tool"] == "none" and "prompt" not in dims
    assert dims["release"] == "r" * 80
    assert [token_bucket(x) for x in (0, 999, 1000, 2999, 3000, 9999, 10_000)] == [
        "<1k", "<1k", "1k-3k", "1k-3k", "3k-10k", "3k-10k", "≥10k"]


def contribution(rubric, trace_id, when, value, dims, **metadata):
    meta = {"feature": "summarize", "tenant": "acme", **metadata, SLICES_KEY: dims}
    return DriftContribution.of_score(rubric, trace_id, meta, when, value, 1000)


def apply(client, c: DriftContribution) -> None:
    pipe = client.pipeline(transaction=True)
    c.apply(pipe)
    pipe.execute()


def test_a_confirmed_score_writes_its_entry_and_the_earliest_first_seen(redis_client, rubric):
    late = contribution(rubric, "t2", NOW, 5, {"prompt": "s@13", "input_tokens": "<1k"})
    early = contribution(rubric, "t1", NOW - dt.timedelta(hours=3), 2, {"prompt": "s@13", "input_tokens": "3k-10k"})
    apply(redis_client, late)
    apply(redis_client, early)  # confirmed later, traced earlier: first seen moves back
    cell = late.cells[-1]
    assert cell.endswith("feature=summarize|tenant=acme")
    assert slice_log.first_seen(redis_client, cell) == {("prompt", "s@13"): early.trace_epoch}
    entries = slice_log.read(redis_client, cell, 0)
    assert [(e.member, e.points, e.dims["input_tokens"]) for e in entries] == [("t1", 25.0, "3k-10k"),
                                                                              ("t2", 100.0, "<1k")]
    # Another segment's cell does not see them; "all" does.
    assert slice_log.read(redis_client, cell.replace("acme", "globex"), 0) == []
    assert len(slice_log.read(redis_client, late.cells[0], 0)) == 2
    # An entry this release cannot read is skipped, never fatal.
    redis_client.zadd(slice_log.log_key(cell), {b"\xff not json": NOW.timestamp()})
    assert len(slice_log.read(redis_client, cell, 0)) == 2


def test_the_log_keeps_its_window_and_its_size_against_the_clock(redis_client, rubric, monkeypatch):
    monkeypatch.setattr(slice_log, "LOG_MAX", 5)
    now = dt.datetime.now(dt.timezone.utc)
    for i in range(8):
        apply(redis_client, contribution(rubric, f"t{i}", now - dt.timedelta(minutes=i), 4, {"release": "r"}))
    everything = contribution(rubric, "x", now, 4, {}).cells[0]
    assert [e.member for e in slice_log.read(redis_client, everything, 0)] == ["t4", "t3", "t2", "t1", "t0"]
    # A trace dated far ahead (its time is the client's) is not kept and trims nothing; one older
    # than the window is trimmed at once.
    apply(redis_client, contribution(rubric, "future", now + dt.timedelta(days=30), 4, {"release": "r"}))
    apply(redis_client, contribution(rubric, "old", now - dt.timedelta(days=slice_log.LOG_DAYS + 1), 4,
                                     {"release": "r"}))
    assert [e.member for e in slice_log.read(redis_client, everything, 0)] == ["t4", "t3", "t2", "t1", "t0"]
    assert 0 < redis_client.ttl(slice_log.log_key(everything)) <= (slice_log.LOG_DAYS + 1) * 86400


def test_first_seen_splits_combinations_and_forgets_the_least_recently_seen(redis_client, rubric, monkeypatch):
    now = dt.datetime.now(dt.timezone.utc)
    for i, combo in enumerate(["a@1+b@1", "a@1+b@2", "a@1"]):
        apply(redis_client, contribution(rubric, f"t{i}", now - dt.timedelta(days=10 - i), 4, {"prompt": combo}))
    cell = contribution(rubric, "x", now, 4, {}).cells[0]
    first = slice_log.first_seen(redis_client, cell)
    assert sorted(v for _, v in first) == ["a@1", "b@1", "b@2"]  # a new mix is not a new version
    assert first[("prompt", "a@1")] == (now - dt.timedelta(days=10)).timestamp()
    # Beyond FIRST_MAX, the value seen least recently goes, however long-standing the others.
    monkeypatch.setattr(slice_log, "FIRST_MAX", 2)
    assert slice_log.forget_unused(redis_client, cell, now.timestamp()) == 1
    assert sorted(v for _, v in slice_log.first_seen(redis_client, cell)) == ["a@1", "b@2"]


def test_slices_survive_the_pending_record_and_a_record_without_them_still_reads(rubric):
    c = contribution(rubric, "t", NOW, 3, {"prompt": "s@13", "tool": "none"})
    assert c.slices == (("prompt", "s@13"), ("tool", "none"))
    back = DriftContribution.from_json(json.loads(json.dumps(c.to_json())))
    assert back == c
    older = c.to_json()
    older.pop("slices")
    assert DriftContribution.from_json(older).slices == ()
    with pytest.raises(ContributionFormatError, match="slices"):
        DriftContribution.from_json({**c.to_json(), "slices": [["prompt"]]})


def entries(n_days: int, per_day: int, started: float, effect, seed: int = 3, share=lambda t: 0.5):
    """Log entries of one cell: a tenant dimension (acme's share ``share(t)``), prompt v12 → v13 at
    ``started``; ``effect(tenant, t)`` points off."""
    rng, out, t = random.Random(seed), [], started - n_days * 86400
    while t < started + 3 * 86400:
        t += rng.expovariate(per_day / 86400)
        tenant = "acme" if rng.random() < share(t) else "globex"
        base = 85 if tenant == "acme" else 60
        x = min(100.0, max(0.0, rng.gauss(base, 12) - effect(tenant, t)))
        dims = {"prompt": "s@13" if t >= started else "s@12", "release": "r1"}
        out.append(slice_log.Entry(f"tr{len(out)}", "", x, t, ("all", f"tenant={tenant}"), dims))
    return out


def test_a_traffic_mix_decoy_is_not_named_as_a_slice():
    started = NOW.timestamp() - 3 * 86400
    # globex (scoring lower) goes from 20% to 70% of the traffic; nobody's score changes.
    rows = entries(7, 400, started, lambda tenant, t: 0.0, share=lambda t: 0.8 if t < started else 0.3)
    found = cause_of(rows, {}, "all", started, (started - 1800, started + 1800), started + 3 * 86400)
    assert found["status"] == "mix" and "traffic mix" in found["reason"] and found["slices"] == [], found["reason"]


def test_a_slice_is_named_with_the_event_and_examples_and_too_few_scores_say_so():
    started = NOW.timestamp() - 3 * 86400
    rows = entries(7, 400, started, lambda tenant, t: 30.0 if tenant == "acme" and t >= started else 0.0)
    first = {("prompt", "s@12"): started - 30 * 86400, ("prompt", "s@13"): started + 600,
             ("release", "r1"): started - 30 * 86400}
    found = cause_of(rows, first, "all", started, (started - 1800, started + 1800), started + 3 * 86400)
    assert found["status"] == "slice" and found["slices"][0]["slice"] == "tenant=acme", found["reason"]
    assert [(e["value"], e["previous"]) for e in found["events"]] == [("s@13", "s@12")]
    assert len(found["after"]) == 5 and all(e["at"] >= dt.datetime.fromtimestamp(started, dt.timezone.utc)
                                            .isoformat()[:16] for e in found["after"])
    assert max(e["points"] for e in found["after"]) < min(e["points"] for e in found["before"])
    early = [r for r in rows if r.epoch < started + 3 * 3600]  # three hours after the start: ~50 scores
    unknown = cause_of(early, first, "all", started, (started - 1800, started + 1800), started + 3 * 3600)
    assert unknown["status"] == "unknown" and unknown["reason"].startswith("cause not yet known, n = ")
    assert unknown["slices"] == []
