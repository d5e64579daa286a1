"""Issue 24, item 5: the idle check reads many due sessions in one listing (v2's JSON filter
``sessionId any of [...]``, in chunks, paged by cursor), not one ``?sessionId=`` request each;
what it decides is what the per-session read decided (enqueued only when the newest trace is
really idle, put back when a turn the sampler has not listed yet is newer)."""
from __future__ import annotations

import datetime as dt
import json
import math

import dramatiq
import pytest

from samplers import sessions
from tests.helpers import copy_rubrics, hand_built_runtime, installed, sampler_for, utc, whole_window
from tests.test_targets_sessions import session, turn

RUBRIC = "conversation_resolution"
KEY = f"{RUBRIC}@v1"
LISTING = "GET v2/observations (listing)"


@pytest.fixture
def stack(settings, redis_client, tmp_path):
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=copy_rubrics(tmp_path, RUBRIC), sample_rate=1.0)
    with installed(rt):
        from worker.fleet.broker import build_broker

        broker = build_broker(rt.settings)
        dramatiq.set_broker(broker)
        yield rt, broker
        broker.close()


def _outline_reads(langfuse_emu, since: int) -> list[dict]:
    return [r for r in langfuse_emu.requests()[since:] if r["path"] == "/api/public/v2/observations"]


def test_due_sessions_cost_one_listing_per_chunk_and_decide_as_before(stack, langfuse_emu):
    rt, broker = stack
    idle = [f"sess-idle-{i:03d}" for i in range(120)]
    active = [f"sess-active-{i}" for i in range(7)]
    observations = [o for s in idle for o in session(s, 3, last_minutes_ago=120)]
    for s in active:  # the sampler saw the old turn; a newer one is in Langfuse but not listed yet
        observations += [turn(s, 1, 90), turn(s, 2, 5)]
    observations += session("sess-not-pending", 2, 120)
    langfuse_emu.load_observations(observations)
    sampler = sampler_for(rt.settings, rt, broker)
    sampler.run_pass(whole_window()[0], utc(minutes=60))
    rt.redis.zrem(sessions.PENDING + KEY, "sess-not-pending")
    rt.redis.zadd(sessions.PENDING + KEY, {"sess-gone": utc(minutes=500).timestamp()})  # no traces left

    before_counts, before = langfuse_emu.endpoint_counts(), len(langfuse_emu.requests())
    now = dt.datetime.now(dt.timezone.utc)
    report = sampler.sessions.tick(now)
    due = len(idle) + len(active) + 1
    assert report.checked == due and report.enqueued == len(idle) and report.still_active == len(active)
    reads = _outline_reads(langfuse_emu, before)
    assert len(reads) == math.ceil(due / sessions.OUTLINE_CHUNK) == 3  # was 128: one per session
    assert langfuse_emu.endpoint_counts()[LISTING] - before_counts.get(LISTING, 0) == 3
    listed = []
    for r in reads:
        assert "sessionId" not in r["query"] and r["query"]["isRootObservation"] == ["true"]
        (condition,) = json.loads(r["query"]["filter"][0])
        assert (condition["column"], condition["operator"], condition["type"]) == ("sessionId", "any of",
                                                                                  "stringOptions")
        assert len(condition["value"]) <= sessions.OUTLINE_CHUNK
        listed += condition["value"]
    assert sorted(listed) == sorted([*idle, *active, "sess-gone"])  # each due session listed once

    # the same decisions as the one-session read: idle ones enqueued with their turns, active put back
    for s in idle[:3]:
        assert sessions.read_state(rt.redis, rt.rubrics[KEY], s)["turns"] == 3
    pending = {k.decode(): v for k, v in rt.redis.zrange(sessions.PENDING + KEY, 0, -1, withscores=True)}
    assert set(pending) == set(active)  # put back with their true newest activity; the gone one dropped
    assert all(abs(pending[s] - utc(minutes=5).timestamp()) < 60 for s in active)
    assert sessions.read_state(rt.redis, rt.rubrics[KEY], "sess-gone") is None
    assert sampler.sessions.tick(now).checked == 0  # nothing due any more: no listing at all
    assert len(_outline_reads(langfuse_emu, before)) == 3
    assert langfuse_emu.violations() == []


def test_a_chunk_whose_turns_fill_several_pages_is_read_by_cursor(stack, langfuse_emu, monkeypatch):
    rt, broker = stack
    monkeypatch.setattr(sessions, "OUTLINE_PAGE", 40)
    ids = [f"sess-paged-{i:02d}" for i in range(60)]
    langfuse_emu.load_observations([o for s in ids for o in session(s, 3, last_minutes_ago=120)])
    sampler = sampler_for(rt.settings, rt, broker)
    sampler.run_pass(*whole_window())
    before = len(langfuse_emu.requests())
    report = sampler.sessions.tick()
    assert report.enqueued == 60
    reads = _outline_reads(langfuse_emu, before)
    # 50 sessions x 3 roots = 150 rows: pages of 40, 40, 40, 30; then 10 x 3 = 30 rows: one page
    assert len(reads) == 4 + 1
    assert [bool(r["query"].get("cursor")) for r in reads] == [False, True, True, True, False]
    assert all(sessions.read_state(rt.redis, rt.rubrics[KEY], s)["turns"] == 3 for s in ids)


def test_chunks_bound_both_the_count_and_the_filter_length():
    ids = [f"s{i}" for i in range(120)]
    assert [len(c) for c in sessions._chunks(ids)] == [50, 50, 20]
    long = ["x" * 3000, "y" * 3000, "z"]
    assert sessions._chunks(long) == [["x" * 3000], ["y" * 3000, "z"]]
    assert sessions._chunks([]) == []


def test_a_server_that_ignores_the_filter_is_read_one_session_at_a_time(stack, langfuse_emu, monkeypatch):
    """A listing that carries another session's turns (the filter ignored) is not trusted: those
    sessions are read with the ``sessionId`` parameter instead, and decide as before."""
    from emulators import langfuse_routes

    rt, broker = stack
    ids = [f"sess-due-{i}" for i in range(3)]
    langfuse_emu.load_observations([o for s in ids for o in session(s, 2, last_minutes_ago=120)]
                                   + session("sess-other", 2, 120))
    sampler = sampler_for(rt.settings, rt, broker)
    sampler.run_pass(*whole_window())
    rt.redis.zrem(sessions.PENDING + KEY, "sess-other")
    monkeypatch.setattr(langfuse_routes, "_matches_filter", lambda obs, cond: True)  # ignores the filter
    before = len(langfuse_emu.requests())
    report = sampler.sessions.tick()
    assert report.enqueued == 3
    reads = _outline_reads(langfuse_emu, before)
    assert len(reads) == 1 + 3 and sorted(r["query"]["sessionId"][0] for r in reads[1:]) == sorted(ids)
    assert all(sessions.read_state(rt.redis, rt.rubrics[KEY], s)["turns"] == 2 for s in ids)
