"""Nothing lost, nothing twice: a worker SIGKILLed mid-run, and 10% of calls failing."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess

import pytest

from emulators.seed import generate
from tests.helpers import start_worker_command, wait_until, drain, expected_pairs, make_env, sampled_roots, sampler_for, score_pairs, whole_window
from worker.fleet.queues import queue_depth

RATE = 0.1


def start_worker(env: dict, log_path) -> subprocess.Popen:
    return start_worker_command(env, log_path, processes=1, threads=16)


@pytest.mark.slow  # two worker fleet subprocesses
def test_sigkill_mid_run_then_restart_gives_exactly_one_score_per_trace(
        settings, runtime, broker, redis_client, langfuse_emu, judge_emu, redis_url, tmp_path, test_rubrics):
    observations = generate(1500, include_malformed=False, seed=11)
    langfuse_emu.load_observations(observations)
    judge_emu.configure(latency_ms=300)
    settings = dataclasses.replace(settings, sample_rate=RATE)
    expected = expected_pairs(observations, RATE)
    assert sampler_for(settings, runtime, broker).run_pass(*whole_window()).enqueued == 2 * sampled_roots(observations, RATE)

    env = make_env(langfuse_emu, judge_emu, redis_url, test_rubrics, TRACEJUDGE_HEARTBEAT_TIMEOUT_SECONDS=5,
                   TRACEJUDGE_SAMPLE_RATE=RATE)
    log_path = tmp_path / "worker.log"
    stats = runtime.outcomes.stats
    first = start_worker(env, log_path)
    wait_until(lambda: stats().get("scored", 0) >= 25, 60, "some scores before the kill", first, log_path)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = stats().get("scored", 0)
    assert killed_at < len(expected), "the kill came too late to test anything"

    second = start_worker(env, log_path)
    try:
        wait_until(lambda: queue_depth(redis_client).outstanding == 0
                   and stats().get("scored", 0) + stats().get("not_applicable", 0) >= 2 * sampled_roots(observations, RATE),
                   150, "the restarted worker to finish", second, log_path)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(30)
    pairs = score_pairs(langfuse_emu.scores())
    assert len(pairs) == len(set(pairs)), "duplicate scores"
    assert set(pairs) == expected
    assert stats()["scored"] == len(expected) and stats().get("unscored", 0) == 0


def test_ten_percent_of_langfuse_and_judge_calls_failing_loses_and_duplicates_nothing(
        settings, runtime, broker, redis_client, langfuse_emu, judge_emu):
    observations = generate(1000, include_malformed=False, seed=13)
    langfuse_emu.load_observations(observations)
    langfuse_emu.configure(fault_rate_500=0.05, fault_rate_429=0.05, retry_after=0)
    judge_emu.configure(fault_rate_500=0.05, fault_rate_429=0.05, retry_after=0)
    settings = dataclasses.replace(settings, sample_rate=RATE)
    expected = expected_pairs(observations, RATE)
    sampler_for(settings, runtime, broker).run_pass(*whole_window())
    drain(broker, redis_client, threads=16, timeout=120)
    pairs = score_pairs(langfuse_emu.scores())
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == expected
    lf, judge = langfuse_emu.stats(), judge_emu.stats()["counts"]
    # faults were really injected (the run makes ~150 Langfuse requests: a trace read is one request)
    assert lf.get("fault 500", 0) > 0 and lf.get("fault 429", 0) > 0 and lf["fault 500"] + lf["fault 429"] > 5, lf
    assert judge.get("fault:500", 0) > 0 and judge.get("fault:429", 0) > 0, judge
    assert runtime.outcomes.stats()["scored"] == len(expected)
