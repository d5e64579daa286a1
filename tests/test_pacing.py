"""Pacing that finds a provider's limit and holds it: the judge emulator's provider-limit mode
(a token bucket answering 429 + Retry-After), and the real Anthropic SDK behind the fleet-wide
limiter against it, from many threads."""
from __future__ import annotations

import threading
import time

import anthropic
import pytest

from emulators.judge_limits import LimitedJudgeEmulator
from worker.judges.anthropic_judge import AnthropicJudge
from worker.judges.base import JudgeRequest
from worker.rate_limits import Limit, RateLimitedJudge, RateLimiter, RedisBackend, judge_limit_key

MODEL = "claude-sonnet-4-6"
REQUEST = JudgeRequest(model=MODEL, max_tokens=100, system="s" * 200, user="u" * 200, schema={},
                       tool_name="verdict", tool_description="d")


@pytest.fixture
def limited_emu():
    emu = LimitedJudgeEmulator()
    emu.start()
    yield emu
    emu.stop()


def test_the_emulated_provider_limit_refuses_with_retry_after_and_can_be_lifted_at_run_time(limited_emu):
    client = anthropic.Anthropic(api_key="k", base_url=limited_emu.base_url, max_retries=0)
    limited_emu.provider_limits.set("anthropic", requests_per_minute=30, burst_seconds=2)  # one token

    def ask():
        return client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}])

    ask()
    with pytest.raises(anthropic.RateLimitError) as refused:
        ask()
    assert refused.value.response.headers["retry-after"] == "2"
    assert limited_emu.provider_limits.describe()["limits"].keys() == {"anthropic"}  # openai stays free
    limited_emu.provider_limits.set("anthropic")  # lifted
    for _ in range(5):
        ask()
    assert limited_emu.provider_limits.describe()["counts"] == {"anthropic:admitted": 1, "anthropic:429": 1}


def _judge_from_threads(judge, threads: int, seconds: float) -> None:
    stop_at = time.monotonic() + seconds

    def loop():
        while time.monotonic() < stop_at:
            try:
                judge.ask(REQUEST)
            except anthropic.RateLimitError:
                time.sleep(0.2)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


@pytest.mark.slow  # 20 s of real-time pacing
def test_an_unconfigured_fleet_finds_the_providers_limit_and_holds_it_with_few_refusals(redis_client, limited_emu):
    limited_emu.configure(latency_ms=100)
    limited_emu.provider_limits.set("anthropic", requests_per_minute=600)  # 10/s, not told to us
    limiters = [RateLimiter(RedisBackend(redis_client)) for _ in range(2)]  # two "processes"
    judges = [RateLimitedJudge(AnthropicJudge("k", limited_emu.base_url, 10), lim, Limit()) for lim in limiters]
    runs = [threading.Thread(target=_judge_from_threads, args=(j, 8, 20.0)) for j in judges]
    window_end = time.time() + 20.0  # no call starts after it
    for r in runs:
        r.start()
    time.sleep(8.0)  # 16 threads would send ~100/s unpaced: the limit is found within these seconds
    refused_early = limited_emu.provider_limits.describe()["counts"].get("anthropic:429", 0)
    steady_from = time.time()
    # The steady window ends with the calls' deadline, not with the last thread's join: the tail
    # of in-flight calls after it starts nothing and is not the pace's to fill.
    time.sleep(max(0.0, window_end - time.time()))
    counts = limited_emu.provider_limits.describe()["counts"]
    for r in runs:
        r.join()
    steady_seconds = window_end - steady_from
    answered = [t for t in limited_emu.stats()["request_times"][f"anthropic:{MODEL}"] if steady_from <= t < window_end]
    refused_late = counts.get("anthropic:429", 0) - refused_early
    admitted = len(answered) - refused_late
    assert refused_late <= 0.05 * len(answered), counts
    state = limiters[0].snapshot()[judge_limit_key(f"anthropic:{MODEL}")]
    assert state["lowest_rpm"] is not None and state["background"] < 0.05, state
    # The pace held near the limit, not ratcheted down. Both it (95% of the rate the provider
    # admitted) and what the threads get through depend on the machine's load as well (a loaded
    # box starves the threads), so they are checked against collapse here with room for that;
    # benchmarks/pacing.py measures the share of the limit (>= 0.9 goal) on a quiet machine.
    assert state["adaptive_rpm"] >= 0.8 * 600, state
    assert admitted / steady_seconds >= 0.6 * 10, (admitted, steady_seconds, counts, state)


@pytest.mark.slow  # 10 s of real-time pacing
def test_a_configured_limit_draws_no_refusal_from_a_provider_enforcing_it(redis_client, limited_emu):
    limited_emu.configure(latency_ms=50)
    limited_emu.provider_limits.set("anthropic", requests_per_minute=600)
    limiter = RateLimiter(RedisBackend(redis_client))
    judge = RateLimitedJudge(AnthropicJudge("k", limited_emu.base_url, 10), limiter, Limit(requests_per_minute=600))
    time.sleep(1.0)  # the provider's bucket fills (it holds one second)
    _judge_from_threads(judge, 12, 8.0)
    counts = limited_emu.provider_limits.describe()["counts"]
    assert counts.get("anthropic:429", 0) == 0, counts
    assert counts["anthropic:admitted"] >= 0.9 * 10 * 8, counts
