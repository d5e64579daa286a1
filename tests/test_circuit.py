"""Errors that cannot heal pause the work instead of failing every job (issue 11, item 5): a
revoked judge key, a retired model, Langfuse's 403 "ingestion suspended"; and a job for a
rubric this worker has not loaded waits for one that has (that one, how a paused job keeps its
retries and the one alert of the job that opens a breaker: tests/test_failure_classification.py)."""
from __future__ import annotations

import dramatiq
import pytest

from tests.helpers import one_trace
from worker.accounting.outcomes import EXHAUSTED
from worker.fleet import actors
from worker.judges import judge_key
from worker.rate_limits.circuit import LANGFUSE, PREFIX, Breaker, open_circuits

KEY = "helpfulness@v1"


def _traces(langfuse_emu, n: int) -> list[str]:
    ids = [f"{i + 1:032x}" for i in range(n)]
    for trace_id in ids:
        langfuse_emu.load_observations(one_trace(trace_id, "Reset it under Settings. [[quality:0.8]]"))
    return ids


def _probe_due(redis_client, name: str) -> None:
    """As if the probe delay had passed."""
    redis_client.hset(PREFIX + name, "probe_at", 0)


def _paused(trace_id: str) -> dramatiq.Retry:
    with pytest.raises(dramatiq.Retry) as info:
        actors.judge_trace(trace_id, KEY)
    return info.value


@pytest.mark.parametrize("fault, counter", [({"revoked_keys": ["test-key"]}, "revoked:anthropic"),
                                            ({"retired_models": ["claude-sonnet-4-6"]}, "retired:claude-sonnet-4-6")],
                         ids=["revoked-key", "retired-model"])
def test_a_permanent_judge_error_pauses_that_judge_and_a_probe_resumes_it(runtime, langfuse_emu, judge_emu,
                                                                          redis_client, fault, counter):
    rubric = runtime.rubrics[KEY]
    if "retired_models" in fault:
        fault = {"retired_models": [rubric.judge.model]}
        counter = f"retired:{rubric.judge.model}"
    ids = _traces(langfuse_emu, 4)
    judge_emu.configure(**fault)
    first = _paused(ids[0])
    assert "paused" in str(first) and first.delay > 0
    calls = judge_emu.stats()["counts"][counter]
    assert calls == 1  # the first failure opens the breaker: one call, not eight retries
    for trace_id in ids[1:]:
        _paused(trace_id)  # waiting: nothing is called, nothing paid
    assert judge_emu.stats()["counts"][counter] == calls and runtime.outcomes.stats().get("judge_calls", 0) == 0
    assert judge_key(rubric) in open_circuits(redis_client)

    _probe_due(redis_client, judge_key(rubric))
    _paused(ids[1])  # the probe: still broken, the breaker stays open
    assert judge_emu.stats()["counts"][counter] == calls + 1
    assert float(Breaker(redis_client, judge_key(rubric)).state()["wait"]) == 60  # the next probe waits twice as long

    judge_emu.configure(revoked_keys=[], retired_models=[])  # restored
    _probe_due(redis_client, judge_key(rubric))
    for trace_id in ids:
        actors.judge_trace(trace_id, KEY)  # the probe closes the breaker; the rest flow again
    assert runtime.outcomes.stats()["scored"] == 4 and not open_circuits(redis_client)
    assert not redis_client.hlen(EXHAUSTED)


def test_suspended_langfuse_ingestion_pauses_jobs_before_the_judge_is_paid(runtime, langfuse_emu, judge_emu,
                                                                            redis_client):
    ids = _traces(langfuse_emu, 3)
    langfuse_emu.configure(ingestion_suspended=True)
    _paused(ids[0])  # judged, then the write answers 403: the breaker opens
    paid = judge_emu.stats()["total_requests"]
    assert paid == 1 and LANGFUSE in open_circuits(redis_client)
    assert "suspended" in open_circuits(redis_client)[LANGFUSE]["reason"]
    for trace_id in ids[1:]:
        _paused(trace_id)
    assert judge_emu.stats()["total_requests"] == paid  # nothing more paid while suspended

    langfuse_emu.configure(ingestion_suspended=False)
    _probe_due(redis_client, LANGFUSE)
    for trace_id in ids:
        actors.judge_trace(trace_id, KEY)
    assert sorted(s["traceId"] for s in langfuse_emu.scores()) == sorted(ids)
    assert not open_circuits(redis_client)
