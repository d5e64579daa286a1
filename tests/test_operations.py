"""Operating the fleet: late output, the scheduler lease, dead letters, the spec checker."""
from __future__ import annotations

import dataclasses

import dramatiq
import pytest

from emulators.openapi_check import validate_request
from emulators.seed import MALFORMED, generate, late_output_update
from tests.helpers import drain, hand_built_runtime, installed, one_trace
from worker.errors import OutputNotYetArrived
from worker.fleet.broker import build_broker
from worker.fleet.queues import dead_letters, queue_depth, requeue_dead
from worker.fleet.scheduler import Lease
from worker.judging.pipeline import judge_one


def test_a_young_trace_without_output_waits_and_is_judged_on_its_final_output(runtime, langfuse_emu):
    trace_id = "c" * 32
    langfuse_emu.load_observations(one_trace(trace_id, None, minutes_ago=5))
    with pytest.raises(OutputNotYetArrived):
        judge_one(runtime, trace_id, "helpfulness@v1")
    assert runtime.outcomes.stats().get("unscored", 0) == 0
    langfuse_emu.load_observations(one_trace(trace_id, "Arrived late [[quality:1.0]]", minutes_ago=5))
    assert judge_one(runtime, trace_id, "helpfulness@v1").value == 5


def test_seeded_late_output_trace_gets_its_answer_by_upsert(langfuse_emu):
    observations = generate(5, seed=1)
    langfuse_emu.load_observations(observations)
    langfuse_emu.load_observations(late_output_update(observations))
    root = [o for o in langfuse_emu.store.trace_observations(MALFORMED["late_output"]) if o.get("isRootObservation")][0]
    assert "arrived late" in root["output"]["content"]


def test_only_one_scheduler_holds_the_lease(redis_client):
    first, second = Lease(redis_client, 60), Lease(redis_client, 60)
    assert first.hold() and not second.hold()
    assert first.hold()  # renewing our own lease
    first.release()
    assert second.hold() and not first.hold()


@pytest.mark.slow  # waits out dramatiq's real retry backoff
def test_exhausted_jobs_land_in_dead_letters_with_their_reason_and_can_be_retried(
        settings, redis_client, langfuse_emu, judge_emu):
    fast = dataclasses.replace(settings, max_job_retries=1)
    with installed(hand_built_runtime(fast, redis_client)) as rt:
        broker = build_broker(fast)
        dramatiq.set_broker(broker)
        trace_id = "d" * 32
        langfuse_emu.load_observations(one_trace(trace_id, "Answer [[judge:500]]"))
        from worker.jobs import judge_message

        broker.enqueue(judge_message(trace_id, "helpfulness@v1"))
        drain(broker, redis_client, timeout=90)
        [dead] = dead_letters(redis_client)
        assert dead["args"][0] == trace_id and "500" in dead["reason"]
        assert rt.outcomes.stats()["retries_exhausted"] == 1
        assert langfuse_emu.scores() == []

        langfuse_emu.load_observations(one_trace(trace_id, "Answer [[quality:0.5]]"))  # the cause is fixed
        assert requeue_dead(redis_client, None) == 1
        drain(broker, redis_client, timeout=60)
        assert queue_depth(redis_client).dead == 0 and len(langfuse_emu.scores()) == 1
        assert rt.outcomes.stats()["retries_exhausted"] == 0


def test_spec_checker_rejects_what_a_real_server_rejects():
    assert validate_request("GET", "/api/public/v2/observations", {"limit": ["1000"], "isRootObservation": ["true"],
                                                                   "fromStartTime": ["2026-11-01T00:00:00Z"]}, None) == []
    assert validate_request("GET", "/api/public/v2/observations", {"isRootObservation": ["yes"]}, None)
    assert validate_request("GET", "/api/public/v2/observations", {"fromStartTime": ["yesterday"]}, None)
    assert validate_request("GET", "/api/public/v2/observations", {"unknownParam": ["1"]}, None)
    assert validate_request("POST", "/api/public/scores", {}, {"value": 1, "traceId": "t"})  # no name
    assert validate_request("POST", "/api/public/scores", {}, {"name": "x", "value": 1, "dataType": "NOPE"})
    assert validate_request("POST", "/api/public/nonexistent", {}, {})


def test_drift_runs_when_due_and_not_again_until_the_interval_passed(redis_client):
    from worker.fleet.scheduler import DRIFT_LAST_RUN, drift_due

    assert drift_due(redis_client, 86400, now=1000.0)
    redis_client.set(DRIFT_LAST_RUN, 1000.0)
    assert not drift_due(redis_client, 86400, now=1000.0 + 3600)
    assert drift_due(redis_client, 86400, now=1000.0 + 86400)


def test_the_scheduler_runs_the_review_loop_once_per_interval_across_restarts(settings, runtime, broker, redis_client):
    import threading

    from tests.helpers import sampler_for
    from worker.fleet.scheduler import REVIEW_LAST_RUN, run_scheduler

    runs: list[float] = []
    for _ in range(2):  # two scheduler runs (a restart) inside one review interval
        stop = threading.Event()
        timer = threading.Timer(1.5, stop.set)
        timer.start()
        run_scheduler(sampler_for(settings, runtime, broker), 0.2, stop, review_tick=lambda: runs.append(1),
                      review_every=900)
        timer.cancel()
    assert len(runs) == 1 and redis_client.exists(REVIEW_LAST_RUN)
