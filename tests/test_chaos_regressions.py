"""Regressions found by the chaos benchmark (python -m benchmarks.chaos), on a real Redis."""
from __future__ import annotations

import time

import httpx
import pytest

from worker.errors import CircuitOpen
from worker.rate_limits.circuit import MAX_PROBE_AFTER, PROBE_AFTER, Breaker


def _revoked() -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://judge.invalid/v1/messages")
    return httpx.HTTPStatusError("401", request=request, response=httpx.Response(401, request=request))


def test_calls_in_flight_when_a_breaker_opens_do_not_push_its_first_probe_out(redis_client):
    """Found in the chaos run: with a key revoked for 40 s, the judge was not probed for 120 s,
    and work resumed ~80 s after the key was back. Every call already in flight failed the same
    way and doubled the probe delay (a 2 x 32 fleet: 600 s). Only a failed probe may do that."""
    breaker, now = Breaker(redis_client, "anthropic:claude-sonnet-4-6"), time.time()
    first = breaker.failed(_revoked(), service="judge", probing=False, now=now)
    assert isinstance(first, CircuitOpen) and first.opened
    for _ in range(63):  # the rest of a 2 x 32 fleet's calls, answered 401 a moment later
        again = breaker.failed(_revoked(), service="judge", probing=False, now=now + 0.5)
        assert isinstance(again, CircuitOpen) and not again.opened
    state = breaker.state()
    assert float(state["wait"]) == PROBE_AFTER
    assert float(state["probe_at"]) == pytest.approx(now + PROBE_AFTER)
    assert breaker.before_call(now=now + PROBE_AFTER) is True  # the probe goes out on time


def test_a_failed_probe_still_backs_off_and_keeps_its_lock_from_other_calls(redis_client):
    breaker, now = Breaker(redis_client, "openai:gpt-4.1-2025-04-14"), time.time()
    breaker.failed(_revoked(), service="judge", probing=False, now=now)
    assert breaker.before_call(now=now + PROBE_AFTER) is True
    # a straggler from before the opening fails while the probe is out: the probe's lock stays
    breaker.failed(_revoked(), service="judge", probing=False, now=now + PROBE_AFTER + 0.1)
    with pytest.raises(CircuitOpen):
        breaker.before_call(now=now + PROBE_AFTER + 0.2)  # no second probe at once
    breaker.failed(_revoked(), service="judge", probing=True, now=now + PROBE_AFTER + 1)
    state = breaker.state()
    assert float(state["wait"]) == 2 * PROBE_AFTER
    assert float(state["probe_at"]) == pytest.approx(now + 3 * PROBE_AFTER + 1)
    for i in range(10):  # failed probes: doubling, capped
        breaker.failed(_revoked(), service="judge", probing=True, now=now + 1000 * (i + 2))
    assert float(breaker.state()["wait"]) == MAX_PROBE_AFTER


@pytest.mark.slow  # a worker fleet subprocess
def test_a_process_group_sigterm_lets_a_worker_finish_its_job_in_flight(
        broker, redis_client, langfuse_emu, judge_emu, redis_url, test_rubrics, tmp_path):
    """Found in the chaos run: honcho stops a Procfile process by SIGTERM to its process group, so
    each dramatiq worker process got SIGTERM twice (the group's, and its main process forwarding
    it) and took the second as "kill now": its in-flight jobs were dropped at every stop, and
    judged (and paid) again after the heartbeat timeout."""
    import os
    import signal

    from tests.helpers import make_env, one_trace, start_worker_command, wait_until
    from worker.jobs import judge_message

    trace_id = "c" * 32
    langfuse_emu.load_observations(one_trace(trace_id, "Reset it under Settings. [[quality:0.8]]"))
    judge_emu.configure(latency_ms=3000)
    env = make_env(langfuse_emu, judge_emu, redis_url, test_rubrics, TRACEJUDGE_METRICS_PORT=0)
    log_path = tmp_path / "worker.log"
    proc = start_worker_command(env, log_path, processes=1, threads=2)
    try:
        broker.enqueue(judge_message(trace_id, "helpfulness@v1"))
        wait_until(lambda: judge_emu.stats()["total_requests"] != 0, 60, "the judge call in flight", proc, log_path,
                   interval=0.05)
        os.killpg(proc.pid, signal.SIGTERM)  # what honcho does to stop the Procfile's worker
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = log_path.read_text()
    assert "Killing worker process" not in log
    assert [s["traceId"] for s in langfuse_emu.scores()] == [trace_id], log[-3000:]


def test_a_call_that_read_the_state_before_a_probe_failed_does_not_probe_again(redis_client, monkeypatch):
    """Found in the chaos run: two probes 0.3 s apart. The second job read the breaker before
    the first probe failed (pushing probe_at out, freeing the lock) and took the freed lock: one
    more call to a revoked key, and one more doubling of the pause."""
    breaker, now = Breaker(redis_client, "anthropic:claude-sonnet-4-6"), time.time()
    breaker.failed(_revoked(), service="judge", probing=False, now=now)
    stale = redis_client.hgetall(breaker.key)  # what the second job read, probe due
    assert breaker.before_call(now=now + PROBE_AFTER) is True
    breaker.failed(_revoked(), service="judge", probing=True, now=now + PROBE_AFTER + 0.1)
    monkeypatch.setattr(redis_client, "hgetall", lambda key: stale)
    with pytest.raises(CircuitOpen):
        Breaker(redis_client, breaker.name).before_call(now=now + PROBE_AFTER + 0.3)
