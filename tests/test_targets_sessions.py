"""Issue 14: session rubrics end to end on the local stack: a session (its traces in time
order, read through v2 observations' sessionId filter) is judged once it has been idle, never
before; a session that resumes after its verdict is judged again once idle, its score upserted
under the same id with the turns judged; re-judges are bounded; the turn budget shows a marker."""
from __future__ import annotations

import datetime as dt
import hashlib
import json

import dramatiq
import pytest

from tests.helpers import copy_rubrics, contract_sampled, drain, hand_built_runtime, installed, sampler_for, spy_on, utc, whole_window
from worker.jobs import Subject
from worker.langfuse_io.scores import score_id_for

RATE = 0.5
RUBRIC = "conversation_resolution"
KEY = f"{RUBRIC}@v1"


def turn(session_id: str, n: int, minutes_ago: float, *, environment: str = "production") -> dict:
    trace_id = hashlib.sha256(f"{session_id}:{n}".encode()).hexdigest()[:32]
    start = utc(minutes=minutes_ago).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"id": trace_id[:16], "traceId": trace_id, "type": "SPAN", "name": "support-chat",
            "traceName": "support-chat", "startTime": start, "endTime": start, "parentObservationId": None,
            "isRootObservation": True, "environment": environment, "sessionId": session_id, "tags": ["prod"],
            "metadata": {"feature": "support-chat", "tenant": "globex"},
            "input": [{"role": "user", "content": f"turn {n} question of {session_id}"}],
            "output": {"role": "assistant", "content": f"turn {n} answer [[quality:0.9]]"}}


def session(session_id: str, turns: int, last_minutes_ago: float, **kw) -> list[dict]:
    return [turn(session_id, n, last_minutes_ago + 3 * (turns - n), **kw) for n in range(1, turns + 1)]


@pytest.fixture
def stack(settings, redis_client, tmp_path):
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=copy_rubrics(tmp_path, RUBRIC), sample_rate=RATE)
    with installed(rt):
        from worker.fleet.broker import build_broker

        broker = build_broker(rt.settings)
        dramatiq.set_broker(broker)
        yield rt, broker
        broker.close()


def _scores(langfuse_emu) -> dict[str, dict]:
    return {s["sessionId"]: s for s in langfuse_emu.scores() if s["name"] == RUBRIC}


def test_sessions_are_judged_once_idle_never_before_and_rejudged_once_when_they_resume(
        stack, redis_client, langfuse_emu, judge_emu):
    rt, broker = stack
    idle = [f"sess-idle-{i}" for i in range(30)]
    active = [f"sess-active-{i}" for i in range(8)]
    observations = [o for s in idle for o in session(s, 3, last_minutes_ago=120)]
    observations += [o for s in active for o in session(s, 3, last_minutes_ago=5)]
    observations += session("sess-internal", 3, 120, environment="langfuse-evaluation")
    observations += session("sess-long-1", 25, 200)
    langfuse_emu.load_observations(observations)
    chosen_idle = {s for s in [*idle, "sess-long-1"] if contract_sampled(s, RATE)}  # the hash runs on the session id
    chosen_active = {s for s in active if contract_sampled(s, RATE)}
    assert len(chosen_idle) > 10 and chosen_active and "sess-long-1" in chosen_idle
    seen = spy_on(judge_emu)

    sampler = sampler_for(rt.settings, rt, broker)
    now = dt.datetime.now(dt.timezone.utc)
    sampler.run_pass(*whole_window())
    first = sampler.sessions.tick(now)
    assert first.enqueued == len(chosen_idle)  # the active sessions wait: never judged before idle
    drain(broker, redis_client, timeout=120)
    scores = _scores(langfuse_emu)
    assert set(scores) == chosen_idle
    for sid, score in scores.items():
        assert score["traceId"] is None and score["id"] == score_id_for(str(Subject.session(sid, 1)), RUBRIC, 1)
        assert score["value"] in ("resolved", "partial", "unresolved")
        assert score["metadata"]["judgement"] == 1 and score["metadata"]["feature"] == "support-chat"
        assert score["metadata"]["turns_judged"] == (20 if sid == "sess-long-1" else 3)
    assert sampler.sessions.tick(now).enqueued == 0  # the active ones are still not idle
    later = sampler.sessions.tick(now + dt.timedelta(minutes=31))
    assert later.enqueued == len(chosen_active)
    drain(broker, redis_client, timeout=120)
    assert set(_scores(langfuse_emu)) == chosen_idle | chosen_active

    # the turn budget: first 10 and last 10 turns, a marker between
    prompt = next(json.dumps(b) for b in seen if "sess-long-1" in json.dumps(b))
    assert "5 turns (11 to 15) left out" in prompt and "turn 1 question" in prompt and "turn 25 answer" in prompt
    assert "turn 13 question" not in prompt

    # a judged session resumes: seen by the next pass, judged again only once idle, upserted
    resumed = sorted(chosen_idle - {"sess-long-1"})[0]
    sid_score = scores[resumed]["id"]
    langfuse_emu.load_observations([turn(resumed, 4, 1)])
    sampler.run_pass(utc(minutes=10), utc(seconds=0))
    assert sampler.sessions.tick(now).enqueued == 0  # active again: not before idle
    rejudge = sampler.sessions.tick(now + dt.timedelta(minutes=45))
    assert rejudge.enqueued == 1 and rejudge.rejudges == 1
    drain(broker, redis_client, timeout=60)
    after = _scores(langfuse_emu)[resumed]
    assert after["id"] == sid_score and langfuse_emu.score_writes()[sid_score] == 2  # upserted, one score
    assert after["metadata"]["judgement"] == 2 and after["metadata"]["turns_judged"] == 4
    assert len([s for s in langfuse_emu.scores() if s.get("sessionId") == resumed]) == 1
    assert sampler.sessions.tick(now + dt.timedelta(hours=2)).enqueued == 0  # nothing new: judged once
    stats = rt.outcomes.stats()
    assert stats["scored"] == len(chosen_idle | chosen_active) + 1
    assert langfuse_emu.violations() == []


def test_a_session_that_keeps_resuming_is_judged_at_most_three_times(stack, redis_client, langfuse_emu):
    rt, broker = stack
    sid = next(s for s in (f"sess-chatty-{i}" for i in range(50)) if contract_sampled(s, RATE))
    langfuse_emu.load_observations(session(sid, 2, last_minutes_ago=600))
    sampler = sampler_for(rt.settings, rt, broker)
    now = dt.datetime.now(dt.timezone.utc)
    sampler.run_pass(*whole_window())
    judged = [sampler.sessions.tick(now).enqueued]
    for n in range(3, 6):  # three resumes, each idle again an hour later
        langfuse_emu.load_observations([turn(sid, n, 400 - 60 * n)])
        sampler.run_pass(*whole_window())
        tick = sampler.sessions.tick(now)
        judged.append(tick.enqueued)
    assert judged == [1, 1, 1, 0] and tick.capped == 1
    assert {Subject.parse(k.decode().split(":", 3)[3]).judgement
            for k in redis_client.scan_iter(f"tracejudge:enqueued:{KEY}:*")} == {1, 2, 3}
