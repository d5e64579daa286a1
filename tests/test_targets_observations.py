"""Issue 14: observation rubrics end to end on the local stack (redis-server, the dramatiq
worker, the real SDKs over HTTP against the emulators): the sampler lists only the matching
observations through v2 filters, picks them by the contract's hash of the observation id, and
each gets one score attached to it (traceId + observationId), confirmed by read-back."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid

import dramatiq
import pytest

from tests.helpers import copy_rubrics, contract_sampled, drain, hand_built_runtime, installed, sampler_for, spy_on, utc, whole_window
from worker.jobs import Subject
from worker.langfuse_io.scores import score_id_for

RATE = 0.5
RUBRIC = "tool_call_quality"


def _iso(minutes_ago: float) -> str:
    return utc(minutes=minutes_ago).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _id(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def agent_run(i: int, *, environment: str = "production", minutes_ago: float = 180) -> list[dict]:
    """One agent trace: root span → GENERATION 'plan' (calls a tool) → TOOL 'search_kb', a
    GENERATION 'answer' without tool calls, and a SPAN 'retrieval' (not a listed type)."""
    trace_id = hashlib.sha256(f"agent-trace-{i}-{environment}".encode()).hexdigest()[:32]
    root, plan, tool, answer, span = (_id(trace_id, k) for k in ("root", "plan", "tool", "answer", "span"))
    common = {"traceId": trace_id, "environment": environment, "level": "DEFAULT", "traceName": "support-agent",
              "tags": ["prod"]}
    question = f"Can I get a refund on order {i}?"
    return [
        {**common, "id": root, "type": "AGENT", "name": "support-agent", "parentObservationId": None,
         "isRootObservation": True, "startTime": _iso(minutes_ago), "metadata": {"feature": "agent", "tenant": "acme"},
         "input": [{"role": "user", "content": question}],
         "output": {"role": "assistant", "content": f"Yes, order {i} is refundable. [[quality:0.8]]"}},
        {**common, "id": plan, "type": "GENERATION", "name": "plan", "parentObservationId": root,
         "startTime": _iso(minutes_ago - 0.1), "providedModelName": "gpt-4o-mini-2024-07-18",
         "input": [{"role": "user", "content": question}],
         "output": {"role": "assistant", "tool_calls": [
             {"id": f"call_{i}", "type": "function",
              "function": {"name": "search_kb", "arguments": json.dumps({"query": f"refund order {i}"})}}]}},
        {**common, "id": tool, "type": "TOOL", "name": "search_kb", "parentObservationId": plan,
         "startTime": _iso(minutes_ago - 0.2), "input": {"query": f"refund order {i}"},
         "output": [{"doc": "Annual plans can be refunded within 30 days."}]},
        {**common, "id": answer, "type": "GENERATION", "name": "answer", "parentObservationId": root,
         "startTime": _iso(minutes_ago - 0.3), "providedModelName": "gpt-4o-mini-2024-07-18",
         "input": [{"role": "user", "content": question}],
         "output": {"role": "assistant", "content": f"Yes, order {i} is refundable."}},
        {**common, "id": span, "type": "SPAN", "name": "retrieval", "parentObservationId": root,
         "startTime": _iso(minutes_ago - 0.4), "output": "docs"},
    ]


@pytest.fixture
def observation_rubrics(tmp_path):
    return copy_rubrics(tmp_path, RUBRIC)


@pytest.fixture
def stack(settings, redis_client, langfuse_emu, observation_rubrics):
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=observation_rubrics, sample_rate=RATE)
    with installed(rt):
        from worker.fleet.broker import build_broker

        broker = build_broker(rt.settings)
        dramatiq.set_broker(broker)
        yield rt, broker
        broker.close()


def test_observation_rubric_scores_exactly_the_hash_selected_observations_once_each(stack, redis_client,
                                                                                      langfuse_emu, judge_emu):
    rt, broker = stack
    observations = [o for i in range(40) for o in agent_run(i, minutes_ago=180 + i)]
    internal = [o for i in range(5) for o in agent_run(i, environment="langfuse-evaluation")]
    langfuse_emu.load_observations(observations + internal)
    listed = [o for o in observations if o["type"] in ("TOOL", "GENERATION")]
    picked = [o for o in listed if contract_sampled(o["id"], RATE)]  # the hash runs on the observation id
    calls_tools = [o for o in picked if o["type"] == "TOOL" or o["name"] == "plan"]
    assert len(calls_tools) > 15 and len(picked) > len(calls_tools), "the seed should exercise both cases"
    seen = spy_on(judge_emu)

    before = len(langfuse_emu.requests())
    report = sampler_for(rt.settings, rt, broker).run_pass(*whole_window())
    listings = [r for r in langfuse_emu.requests()[before:]
                if r["path"] == "/api/public/v2/observations" and "traceId" not in r["query"]]
    # listed through v2 filters: only TOOL and GENERATION observations, never every observation
    assert report.observations_scanned == len(listed) + sum(o["type"] in ("TOOL", "GENERATION") for o in internal)
    assert any("TOOL" in (r["query"].get("filter") or [""])[0] for r in listings)
    assert report.enqueued == len(picked) and report.excluded >= 5
    drain(broker, redis_client, timeout=120)

    scores = [s for s in langfuse_emu.scores() if s["name"] == RUBRIC]
    attached = [(s["traceId"], s["observationId"]) for s in scores]
    assert len(attached) == len(set(attached)), "an observation got two scores for one version"
    assert set(attached) == {(o["traceId"], o["id"]) for o in calls_tools}  # attached to the right observation
    for score in scores:
        subject = Subject.observation(score["traceId"], score["observationId"])
        assert score["id"] == score_id_for(str(subject), RUBRIC, 1)
        assert score["id"] == str(uuid.uuid5(uuid.UUID("6f1c0b52-2a55-4d0e-9a53-7d5f3c1e2b10"),
                                             f"{score['traceId']}|{score['observationId']}|{RUBRIC}|v1"))
        assert score["metadata"]["observation_id"] == score["observationId"]
        assert score["metadata"]["feature"] == "agent"  # the segment is the trace's
        assert 1 <= score["value"] <= 5
    stats = rt.outcomes.stats()
    assert stats["scored"] == len(calls_tools) == stats["confirmed"]  # each read back from Langfuse
    assert stats["not_applicable"] == len(picked) - len(calls_tools)  # generations that call no tool
    assert langfuse_emu.violations() == []

    # the judge saw the step, its caller (the parent) and the trace's request and answer
    tool_prompts = [json.dumps(b) for b in seen if "search_kb" in json.dumps(b) and 'type=\\"TOOL\\"' in json.dumps(b)]
    assert tool_prompts and all('called_by=\\"plan\\"' in p and "Can I get a refund" in p for p in tool_prompts)

    again = sampler_for(rt.settings, rt, broker).run_pass(*whole_window())
    assert again.enqueued == 0 and again.already_enqueued == len(picked)


def test_an_observation_job_survives_as_a_plain_judge_trace_message(stack, redis_client, langfuse_emu):
    """The subject travels in judge_trace's first argument: an old-style trace job and an
    observation job share one actor, and the budget/dead-letter tools see ordinary args."""
    rt, broker = stack
    run = agent_run(99)
    langfuse_emu.load_observations(run)
    from worker.jobs import judge_message

    tool = next(o for o in run if o["type"] == "TOOL")
    message = judge_message(Subject.observation(tool["traceId"], tool["id"]), f"{RUBRIC}@v1")
    assert message.actor_name == "judge_trace" and message.args[1] == f"{RUBRIC}@v1"
    assert Subject.parse(message.args[0]) == Subject.observation(tool["traceId"], tool["id"])
    assert Subject.parse("0af7651916cd43dd8448eb211c80319c") == Subject.trace("0af7651916cd43dd8448eb211c80319c")
    broker.enqueue(message)
    drain(broker, redis_client)
    (score,) = [s for s in langfuse_emu.scores() if s["name"] == RUBRIC]
    assert (score["traceId"], score["observationId"]) == (tool["traceId"], tool["id"])
    assert dataclasses.asdict(rt.settings)["sample_rate"] == RATE


def test_observation_jobs_backfill_and_park_under_a_budget_like_trace_jobs(stack, redis_client, langfuse_emu):
    from samplers.backfill import run_backfill
    from worker.accounting.budget import Budget
    from worker.fleet.actors import park
    from worker.fleet.scheduler import budget_tick
    from worker.jobs import judge_message

    rt, broker = stack
    runs = [agent_run(i, minutes_ago=180 + i) for i in range(12)]
    langfuse_emu.load_observations([o for run in runs for o in run])
    picked = {(o["traceId"], o["id"]) for run in runs for o in run
              if o["type"] in ("TOOL", "GENERATION") and contract_sampled(o["id"], RATE)}
    sampler = sampler_for(rt.settings, rt, broker)
    report, skipped = run_backfill(sampler, utc(hours=6), utc(minutes=0))
    assert report.enqueued == len(picked) and skipped == 0  # the backfill lists observation rubrics too
    again, _ = run_backfill(sampler_for(rt.settings, rt, broker), utc(hours=6), utc(minutes=0))
    assert again.enqueued == 0  # resumable: finished slices (and enqueued observations) are not redone

    # a job parked by the budget keeps its observation subject and comes back as the same job
    tool = next(o for o in runs[0] if o["type"] == "TOOL")
    subject = str(Subject.observation(tool["traceId"], tool["id"]))
    capped = hand_built_runtime(rt.settings, redis_client, daily_budget_usd=5.0)
    rubric = capped.rubrics[f"{RUBRIC}@v1"]
    redis_client.delete("dramatiq:judge", "dramatiq:judge.msgs")  # the backfill's jobs are not what this checks
    assert park(capped, rubric, subject, held_by="global")
    assert Budget(redis_client, None).parked()[rubric.key] == 1
    assert budget_tick(sampler_for(rt.settings, rt, broker), rt) == 1
    (raw,) = [m for m in redis_client.hvals("dramatiq:judge.msgs")]
    assert json.loads(raw)["args"] == json.loads(json.dumps(judge_message(subject, rubric.key).args))
