"""A judge job's failures are classified in one place (worker/fleet/failures.py) and acted on by
the broker's Retries middleware (issue 26, item 4): a free delay re-enqueues the job without
counting a retry, a counted retry is dramatiq's, giving up records the job and acks it; the
actor only raises typed errors."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message

from tests.helpers import RecordingBroker, hand_built_runtime, installed, one_trace
from worker.accounting.outcomes import EXHAUSTED, STATS
from worker.alerts.outbox import OUTBOX
from worker.errors import CircuitOpen, OutputNotYetArrived, RubricNotLoaded, TransientError, Unscored
from worker.fleet import failures
from worker.fleet.broker import build_broker
from worker.fleet.failures import (
    FREE_DELAYS,
    JITTER,
    MAX_FREE_DELAYS,
    MAX_UNLOADED_DELAYS,
    OUTPUT_WAIT_SECONDS,
    UNLOADED_DELAY_SECONDS,
    UNLOADED_DELAYS,
    UNLOADED_STAT,
    Expected,
    Handling,
    classify,
)
from worker.fleet.queues import queue_depth
from worker.jobs import JUDGE_ACTOR, JUDGE_QUEUE, judge_message
from worker.judges import judge_key
from worker.runtime import Runtime
from worker.rate_limits import RateLimitWait
from worker.settings import Settings

FREE, COUNTED, GIVE_UP = Handling.FREE_DELAY, Handling.COUNTED, Handling.GIVE_UP
INFO, WARNING, ERROR = logging.INFO, logging.WARNING, logging.ERROR
KEY = "helpfulness@v1"

# failure, the job's message options -> handling, delay (ms, before jitter), jitter, log level,
# job metric outcome, the option counting the delay
TABLE: list[tuple[str, BaseException, dict[str, int], Handling, int | None, float, int, str | None, str | None]] = [
    ("circuit-open", CircuitOpen("judge:anthropic:m", "authentication failed", retry_after=42.5), {},
     FREE, 42_500, 1.0, INFO, "paused", None),
    ("circuit-open-however-long", CircuitOpen("langfuse", "ingestion suspended", retry_after=600),
     {FREE_DELAYS: MAX_FREE_DELAYS, "retries": 3}, FREE, 600_000, 1.0, INFO, "paused", None),
    ("rubric-not-loaded", RubricNotLoaded("brand_new@v1"), {},
     FREE, UNLOADED_DELAY_SECONDS * 1000, 1.0, INFO, "requeued", UNLOADED_DELAYS),
    ("rubric-not-loaded-for-a-day", RubricNotLoaded("brand_new@v1"), {UNLOADED_DELAYS: MAX_UNLOADED_DELAYS},
     GIVE_UP, None, 1.0, ERROR, None, None),
    ("rate-limit-full", RateLimitWait("rate limit for judge:a:m: next slot in 90s", retry_after=90), {},
     FREE, 90_000, JITTER, INFO, "rate_limited", FREE_DELAYS),
    ("rate-limit-full-past-the-bound", RateLimitWait("rate limit for judge:a:m", retry_after=90),
     {FREE_DELAYS: MAX_FREE_DELAYS}, COUNTED, 90_000, JITTER, WARNING, "rate_limited", None),
    ("output-not-arrived", OutputNotYetArrived("trace t: no output yet"), {FREE_DELAYS: MAX_FREE_DELAYS - 1},
     FREE, OUTPUT_WAIT_SECONDS * 1000, JITTER, INFO, "retried", FREE_DELAYS),
    ("output-not-arrived-past-the-bound", OutputNotYetArrived("trace t: no output yet"),
     {FREE_DELAYS: MAX_FREE_DELAYS}, COUNTED, OUTPUT_WAIT_SECONDS * 1000, JITTER, WARNING, "retried", None),
    ("transient-with-retry-after", TransientError("HTTP 503 from Langfuse", retry_after=30), {},
     COUNTED, 30_000, JITTER, WARNING, "retried", None),
    ("transient", TransientError("ConnectError: connection failed or timed out"), {},
     COUNTED, None, JITTER, WARNING, "retried", None),
    ("unexpected", KeyError("a bug"), {}, COUNTED, None, 1.0, ERROR, None, None),
]


@pytest.mark.parametrize("error, options, handling, delay_ms, jitter, level, outcome, counter",
                         [case[1:] for case in TABLE], ids=[case[0] for case in TABLE])
def test_each_failure_is_classified_as_intended(error: BaseException, options: dict[str, int], handling: Handling,
                                                delay_ms: int | None, jitter: float, level: int, outcome: str | None,
                                                counter: str | None) -> None:
    for raised in (error, Expected(error)) if isinstance(error, failures.EXPECTED) else (error,):
        failure = classify(raised, options)
        assert failure.error is error
        assert (failure.handling, failure.delay_ms, failure.jitter, failure.level, failure.outcome,
                failure.counter) == (handling, delay_ms, jitter, level, outcome, counter)
        # the one line about it: ours, except for an unexpected error (dramatiq's worker logs
        # that one at ERROR with its traceback)
        assert (failure.event is None) == (not isinstance(error, failures.EXPECTED))
        if delay_ms is not None:
            assert failure.delay(lambda low, high: high) == int(delay_ms * jitter)
            assert failure.delay(lambda low, high: low) == delay_ms


def test_giving_up_keeps_a_reason_and_only_the_opening_job_alerts() -> None:
    gone = classify(RubricNotLoaded("brand_new@v1"), {UNLOADED_DELAYS: MAX_UNLOADED_DELAYS})
    assert "brand_new@v1 was not loaded" in gone.reason and gone.stat == UNLOADED_STAT
    opened = CircuitOpen("langfuse", "ingestion suspended (HTTP 403)", retry_after=30, opened=True)
    assert classify(opened, {}).alert and not classify(CircuitOpen("langfuse", "x", retry_after=30), {}).alert
    assert (opened.circuit, opened.reason, str(opened)) == ("langfuse", "ingestion suspended (HTTP 403)",
                                                            "langfuse paused: ingestion suspended (HTTP 403)")


def test_only_the_typed_failures_pass_dramatiqs_worker_as_expected() -> None:
    """dramatiq's worker logs any exception but a Retry at ERROR with its traceback: the typed
    failures are carried as ``Expected`` (a Retry), anything else is left for it to log."""
    for error in (CircuitOpen("langfuse", "x", retry_after=5), RubricNotLoaded("r@v1"), OutputNotYetArrived("t"),
                  RateLimitWait("full", retry_after=2), TransientError("HTTP 500 from Anthropic")):
        with pytest.raises(Expected) as info, failures.expected_failures():
            raise error
        assert isinstance(info.value, dramatiq.Retry) and info.value.error is error
        assert info.value.__cause__ is None and info.value.__suppress_context__  # an SDK's text stays out
    for other in (KeyError("bug"), Unscored("no_output")):
        with pytest.raises(type(other)), failures.expected_failures():
            raise other


# -- the middleware, with a broker that records what it is asked --------------------------------

ACTOR_OPTIONS = {"max_retries": 1000, "min_backoff": 2_000, "max_backoff": 600_000}


def _fail(broker: RecordingBroker, message: dramatiq.MessageProxy, error: BaseException) -> None:
    """One failure of ``message``, as dramatiq's worker hands it to the middleware."""
    from worker.fleet.durable_retries import DurableRetries

    try:
        with failures.expected_failures():
            raise error
    except BaseException as raised:
        DurableRetries(max_retries=1000).after_process_message(broker, message, exception=raised)  # type: ignore[arg-type]


def _judge_proxy(**options: Any) -> dramatiq.MessageProxy:
    return dramatiq.MessageProxy(Message(queue_name=JUDGE_QUEUE, actor_name=JUDGE_ACTOR, args=("t" * 32, KEY),
                                         kwargs={}, options=dict(options)))


def test_the_middleware_counts_no_retry_for_a_free_delay_and_one_for_a_counted_failure() -> None:
    broker, message = RecordingBroker(ACTOR_OPTIONS), _judge_proxy()
    _fail(broker, message, CircuitOpen("langfuse", "ingestion suspended", retry_after=30))
    assert message.options.get("retries", 0) == 0 and broker.delays == [30_000]
    _fail(broker, message, RateLimitWait("full", retry_after=10))
    assert message.options.get("retries", 0) == 0 and message.options[FREE_DELAYS] == 1
    assert 10_000 <= (broker.delays[-1] or 0) <= 10_000 * JITTER
    _fail(broker, message, TransientError("HTTP 503 from Langfuse"))
    assert message.options["retries"] == 1 and message.options[FREE_DELAYS] == 1
    _fail(broker, message, KeyError("a bug"))
    assert message.options["retries"] == 2 and len(broker.delays) == 4 and not message.failed


def test_a_job_for_an_unloaded_rubric_waits_a_day_and_is_then_recorded(runtime: Runtime,
                                                                         redis_client: redis.Redis) -> None:
    broker, message = RecordingBroker(ACTOR_OPTIONS), _judge_proxy(retries=0)
    _fail(broker, message, RubricNotLoaded("brand_new_rubric@v1"))
    assert broker.delays == [UNLOADED_DELAY_SECONDS * 1000]
    assert message.options["retries"] == 0 and message.options[UNLOADED_DELAYS] == 1
    assert int(redis_client.hget(STATS, UNLOADED_STAT) or 0) == 1
    message.options[UNLOADED_DELAYS] = MAX_UNLOADED_DELAYS
    _fail(broker, message, RubricNotLoaded("brand_new_rubric@v1"))  # a day of that: recorded, acked, not dead-lettered
    assert len(broker.delays) == 1 and not message.failed
    assert "not loaded" in json.loads(redis_client.hget(EXHAUSTED, redis_client.hkeys(EXHAUSTED)[0]) or "")["reason"]
    assert int(redis_client.hget(STATS, UNLOADED_STAT) or 0) == 2


# -- through a real dramatiq worker on the real Redis -------------------------------------------

def _delayed_options(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """The options of every delayed judge job, by its trace id."""
    raw = client.hvals(f"dramatiq:{JUDGE_QUEUE}.DQ.msgs")
    return {message["args"][0]: message["options"] for message in map(json.loads, raw)}


@pytest.fixture
def working(broker: RedisBroker) -> Iterator[RedisBroker]:
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        yield broker
    finally:
        worker.stop()


def _until(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_through_a_real_worker_a_free_delay_uses_no_retry_and_a_counted_failure_uses_one(
        runtime: Runtime, langfuse_emu: Any, redis_client: redis.Redis, broker: RedisBroker,
        caplog: pytest.LogCaptureFixture) -> None:
    young, bounded, failing = "a" * 32, "b" * 32, "c" * 32
    langfuse_emu.load_observations(one_trace(young, None, minutes_ago=1))  # its output has not arrived yet
    langfuse_emu.load_observations(one_trace(bounded, None, minutes_ago=1))
    langfuse_emu.load_observations(one_trace(failing, "Answer [[judge:500]]"))  # the judge fails: transient
    broker.enqueue(judge_message(young, KEY))
    broker.enqueue(judge_message(bounded, KEY).copy(options={FREE_DELAYS: MAX_FREE_DELAYS}))  # its free delays used
    broker.enqueue(judge_message(failing, KEY))
    caplog.set_level(logging.INFO)
    worker = dramatiq.Worker(broker, worker_threads=3, worker_timeout=50)
    worker.start()
    try:  # the counted retry's backoff is 2-4 s: read the three as soon as they are all delayed
        _until(lambda: len(_delayed_options(redis_client)) == 3)
        delayed = _delayed_options(redis_client)
    finally:
        worker.stop()
    assert delayed[young].get("retries", 0) == 0 and delayed[young][FREE_DELAYS] == 1  # free: no retry used
    assert delayed[bounded]["retries"] == 1 and delayed[bounded][FREE_DELAYS] == MAX_FREE_DELAYS  # past the bound
    assert delayed[failing]["retries"] == 1 and delayed[failing].get(FREE_DELAYS, 0) == 0  # counted
    assert "TransientError: HTTP 500" in delayed[failing]["traceback"]
    assert delayed[young]["eta"] - delayed[young]["requeue_timestamp"] >= OUTPUT_WAIT_SECONDS * 1000 - 1000
    assert queue_depth(redis_client).dead == 0
    levels = {(r.name, r.levelno) for r in caplog.records if r.name.startswith(("tracejudge.failures", "dramatiq.worker"))}
    assert ("tracejudge.failures", INFO) in levels and ("tracejudge.failures", WARNING) in levels
    assert not [r for r in caplog.records if r.levelno >= ERROR]  # none is an unhandled exception to dramatiq


def test_through_a_real_worker_an_unloaded_rubric_waits_and_a_days_wait_is_recorded(
        runtime: Runtime, redis_client: redis.Redis, working: RedisBroker) -> None:
    waiting, given_up = "d" * 32, "e" * 32
    working.enqueue(judge_message(waiting, "brand_new_rubric@v1"))
    working.enqueue(judge_message(given_up, "brand_new_rubric@v1").copy(options={UNLOADED_DELAYS: MAX_UNLOADED_DELAYS}))
    _until(lambda: redis_client.hlen(EXHAUSTED) == 1 and len(_delayed_options(redis_client)) == 1)
    _until(lambda: queue_depth(redis_client).unacked == 0)
    delayed = _delayed_options(redis_client)
    assert list(delayed) == [waiting] and delayed[waiting][UNLOADED_DELAYS] == 1
    assert delayed[waiting].get("retries", 0) == 0
    assert "not loaded" in json.loads(redis_client.hvals(EXHAUSTED)[0])["reason"]
    depth = queue_depth(redis_client)
    assert (depth.ready, depth.dead) == (0, 0)  # the given-up job is acked, not dead-lettered
    assert int(redis_client.hget(STATS, UNLOADED_STAT) or 0) == 2


def test_through_a_real_worker_the_job_that_opens_a_breaker_sends_the_one_alert(
        settings: Settings, redis_client: redis.Redis, langfuse_emu: Any, judge_emu: Any) -> None:
    rt = hand_built_runtime(settings, redis_client, alert_webhook_url="http://127.0.0.1:9/hook")  # a dead sink
    ids = [f"{i + 1:032x}" for i in range(3)]
    for trace_id in ids:
        langfuse_emu.load_observations(one_trace(trace_id, "Reset it under Settings. [[quality:0.8]]"))
    judge_emu.configure(revoked_keys=["test-key"])
    with installed(rt):
        broker = build_broker(settings)
        dramatiq.set_broker(broker)
        for trace_id in ids:
            broker.enqueue(judge_message(trace_id, KEY))
        worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
        worker.start()
        try:
            _until(lambda: len(_delayed_options(redis_client)) == 3)
        finally:
            worker.stop()
            broker.close()
    delayed = _delayed_options(redis_client)
    assert all(options.get("retries", 0) == 0 for options in delayed.values())  # paused: no retry used
    paused = [json.loads(v) for v in redis_client.hvals(OUTBOX)]  # kept until the sink takes it
    assert [(a["kind"], a["circuit"]) for a in paused] == [("work_paused", judge_key(rt.rubrics[KEY]))]
    assert "401" in paused[0]["reason"] or "revoked" in paused[0]["reason"]
