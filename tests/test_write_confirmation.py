"""A score counts as stored only once Langfuse returns it on a read, against a server that, like
the real one, answers 200 and checks the score against its config later (dropping it silently)."""
from __future__ import annotations

import json
import time

import pytest

from emulators.http_base import Emulator
from emulators.redirect_front import RedirectFront
from tests.helpers import hand_built_runtime, one_trace
from worker.accounting.outcomes import UNCONFIRMED, OutcomeLog
from worker.alerts.outbox import OUTBOX
from worker.drift import aggregates as agg
from worker.errors import ConfigError, TransientError
from worker.judging.confirm import GIVE_UP_SECONDS, GRACE_SECONDS, RECHECK_SECONDS, confirm_writes
from worker.judging.pipeline import judge_one
from worker.langfuse_io.score_configs import CACHE_PREFIX

KEY = "helpfulness@v1"
TRACE = "0" * 31 + "1"


@pytest.fixture
def async_scores(langfuse_emu):
    """The real server's way: 200 first, the config checks after, a failing score dropped."""
    langfuse_emu.set_modes(score_checks="async")
    return langfuse_emu


def judged(rt, emu, trace_id: str) -> None:
    emu.load_observations(one_trace(trace_id, "Open Settings > Security > Reset password."))
    assert judge_one(rt, trace_id, KEY).status == "scored"
    emu.drain_scores()


def settle(rt, at: float):
    return confirm_writes(rt, now=at + GRACE_SECONDS)


def stored(emu, trace_id: str) -> list[dict]:
    return [s for s in emu.scores() if s["traceId"] == trace_id]


def in_aggregates(client, trace_id: str) -> bool:
    return any(client.zscore(k, trace_id) is not None for k in client.scan_iter(agg.PREFIX + "bottom:*"))


def test_a_written_score_counts_in_drift_only_after_it_was_read_back(runtime, langfuse_emu, redis_client):
    judged(runtime, langfuse_emu, TRACE)
    stats = OutcomeLog(redis_client).stats()
    assert stats["scored"] == 1 and "confirmed" not in stats and redis_client.zcard(UNCONFIRMED) == 1
    assert not in_aggregates(redis_client, TRACE)
    assert settle(runtime, time.time()).counts["confirmed"] == 1
    assert OutcomeLog(redis_client).stats()["confirmed"] == 1 and in_aggregates(redis_client, TRACE)
    assert redis_client.zcard(UNCONFIRMED) == 0
    settle(runtime, time.time())  # nothing left to confirm, nothing counted twice
    assert OutcomeLog(redis_client).stats()["confirmed"] == 1


def test_scores_of_an_archived_config_are_rewritten_under_a_fresh_config(runtime, async_scores, redis_client):
    first = "0" * 31 + "a"
    judged(runtime, async_scores, first)
    old_config = stored(async_scores, first)[0]["configId"]
    async_scores.archive_config(old_config)  # someone archives it in the Langfuse UI

    judged(runtime, async_scores, TRACE)  # answered 200, then dropped by the server
    assert stored(async_scores, TRACE) == []
    assert [d["reason"] for d in async_scores.dropped_scores()] == ["config_archived"]

    t0 = time.time()
    summary = settle(runtime, t0)
    assert summary.counts["confirmed"] == 1 and summary.counts["rewritten"] == 1
    async_scores.drain_scores()
    assert settle(runtime, t0 + GRACE_SECONDS).counts["confirmed"] == 1  # the re-write, after its own grace
    scores = stored(async_scores, TRACE)
    assert len(scores) == 1 and scores[0]["configId"] != old_config
    stats = OutcomeLog(redis_client).stats()
    assert stats["confirmed"] == 2 and stats["scored"] == 2 and stats.get("missing", 0) == 0


def test_a_config_id_of_another_project_is_healed_the_same_way(runtime, async_scores, redis_client):
    rubric = runtime.rubrics[KEY]
    redis_client.set(CACHE_PREFIX + rubric.sha256, "cfg-of-another-project")  # keys changed, cache kept
    judged(runtime, async_scores, TRACE)
    assert [d["reason"] for d in async_scores.dropped_scores()] == ["config_not_found"]
    t0 = time.time()
    assert settle(runtime, t0).counts["rewritten"] == 1
    async_scores.drain_scores()
    assert settle(runtime, t0 + GRACE_SECONDS).counts["confirmed"] == 1
    assert len(stored(async_scores, TRACE)) == 1


def test_a_score_that_keeps_vanishing_is_counted_missing_and_alerts_once(runtime, async_scores, redis_client,
                                                                         settings):
    rt = hand_built_runtime(settings, redis_client, alert_webhook_url="http://127.0.0.1:9/hook")
    judged(rt, async_scores, TRACE)
    lose = lambda: async_scores.store.scores.pop(next(iter(async_scores.store.scores)), None)  # noqa: E731
    lose()  # lost after the 200, with a sound config
    t0 = time.time()
    assert settle(rt, t0).counts["waiting"] == 1  # may still be in the server's queue
    assert settle(rt, t0 + RECHECK_SECONDS).counts["rewritten"] == 1
    async_scores.drain_scores()
    lose()
    assert settle(rt, t0 + RECHECK_SECONDS * 2).counts["waiting"] == 1
    assert settle(rt, t0 + GIVE_UP_SECONDS + RECHECK_SECONDS).counts["missing"] == 1
    stats = OutcomeLog(redis_client).stats()
    assert stats["missing"] == 1 and stats.get("confirmed", 0) == 0 and not in_aggregates(redis_client, TRACE)
    alerts = [json.loads(v) for v in redis_client.hvals(OUTBOX)]
    assert [a["kind"] for a in alerts] == ["scores_missing"] and alerts[0]["missing"] == 1


def test_a_redirecting_front_fails_loudly_naming_the_target(settings, redis_client, langfuse_emu):
    front = RedirectFront(langfuse_emu.base_url, status=301)
    front.start()
    try:
        rt = hand_built_runtime(settings, redis_client, langfuse_base_url=front.base_url)
        with pytest.raises(ConfigError, match=r"HTTP 301 redirecting to .*127\.0\.0\.1"):
            rt.score_configs.ensure(rt.rubrics.values())
        with pytest.raises(ConfigError, match="redirecting to"):
            rt.scores.write({"id": "s1", "traceId": TRACE, "name": "helpfulness", "value": 4})
    finally:
        front.stop()
    assert OutcomeLog(redis_client).stats().get("scored", 0) == 0
    assert langfuse_emu.scores() == []


class ListsInsteadOfWriting(Emulator):
    """A front that answers every request 200 with a score list, as GET /api/public/scores does."""

    def handle(self, method, path, query, headers, body):
        return 200, {"data": [], "meta": {"page": 1, "limit": 50, "totalItems": 0, "totalPages": 0}}, {}


def test_a_score_post_answered_without_its_id_is_an_error_never_a_success(settings, redis_client):
    front = ListsInsteadOfWriting("127.0.0.1", 0)
    front.start()
    try:
        rt = hand_built_runtime(settings, redis_client, langfuse_base_url=front.base_url)
        with pytest.raises(ConfigError, match="without accepting the score"):
            rt.scores.write({"id": "s1", "traceId": TRACE, "name": "helpfulness", "value": 4})
    finally:
        front.stop()


def test_a_failed_config_lookup_after_the_verdict_never_pays_the_judge_twice(runtime, langfuse_emu, judge_emu,
                                                                          monkeypatch):
    langfuse_emu.load_observations(one_trace(TRACE, "Open Settings > Security > Reset password."))
    real = runtime.score_configs.config_id
    calls = iter([TransientError("Langfuse 503 on score-configs")])
    monkeypatch.setattr(runtime.score_configs, "config_id",
                        lambda rubric: (_ for _ in ()).throw(next(calls)) if calls else real(rubric))
    with pytest.raises(TransientError):
        judge_one(runtime, TRACE, KEY)
    calls = None
    judged_before = judge_emu.stats()["total_requests"]
    assert judge_one(runtime, TRACE, KEY).status == "scored"
    assert judge_emu.stats()["total_requests"] == judged_before == 1
    assert len(langfuse_emu.scores()) == 1


def test_waiters_on_the_config_lock_take_the_holders_config(runtime, langfuse_emu, redis_client):
    """A thread that waited for the creator re-reads the cache instead of creating a second config."""
    import threading

    rubric = runtime.rubrics[KEY]
    ids, barrier = [], threading.Barrier(6)

    def lookup():
        barrier.wait()
        ids.append(runtime.score_configs._find_or_create(rubric))

    threads = [threading.Thread(target=lookup) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert [c["name"] for c in langfuse_emu.store.configs.values()].count("helpfulness") == 1


@pytest.mark.slow
@pytest.mark.parametrize("generation", ["v3", "v4-dual", "v4-events"])
def test_with_a_config_archived_while_the_fleet_runs_every_trace_ends_with_one_score_in_langfuse(
        generation, settings, runtime, broker, redis_client, langfuse_emu):
    """Read back from the server, not from our counters: one score per selected (trace, rubric)."""
    import dataclasses

    from emulators.seed import generate
    from tests.helpers import drain, expected_pairs, halves, sampler_for, score_pairs, whole_window

    langfuse_emu.set_modes(generation=generation, score_checks="async")
    observations = generate(600, include_malformed=False, seed=11)
    first, second = halves(observations)
    rated = dataclasses.replace(settings, sample_rate=0.2)
    langfuse_emu.load_observations(first)
    sampler_for(rated, runtime, broker).run_pass(*whole_window())
    drain(broker, redis_client, threads=16, confirm=False)
    for config_id in list(langfuse_emu.store.configs):  # every rubric's: which was made first is up to the threads
        langfuse_emu.archive_config(config_id)  # archived in the UI while the fleet runs
    langfuse_emu.load_observations(second)
    sampler_for(rated, runtime, broker).run_pass(*whole_window())
    drain(broker, redis_client, threads=16, confirm=False)
    t = time.time()
    for _ in range(4):  # scheduler ticks
        langfuse_emu.drain_scores()
        t += RECHECK_SECONDS
        settle(runtime, t)
    langfuse_emu.drain_scores()
    assert redis_client.zcard(UNCONFIRMED) == 0
    pairs = score_pairs(langfuse_emu.scores())
    expected = expected_pairs(observations, 0.2)
    assert len(pairs) == len(set(pairs)) and set(pairs) == expected and len(expected) > 20
    assert langfuse_emu.dropped_scores(), "the archived config dropped nothing: the test tests nothing"
    stats = OutcomeLog(redis_client).stats()
    assert stats["confirmed"] == len(expected) and stats.get("missing", 0) == 0


def test_the_worker_command_will_not_start_behind_a_redirect(langfuse_emu, judge_emu, redis_url, redis_client,
                                                            test_rubrics):
    from click.testing import CliRunner

    from tests.helpers import make_env
    from worker.cli.main import main

    front = RedirectFront(langfuse_emu.base_url, status=308, location="https://langfuse.example.com")
    front.start()
    try:
        env = make_env(langfuse_emu, judge_emu, redis_url, test_rubrics, LANGFUSE_BASE_URL=front.base_url,
                       TRACEJUDGE_METRICS_PORT=0)
        result = CliRunner(env=env).invoke(main, ["worker", "-p", "1", "-t", "1"])
    finally:
        front.stop()
    assert result.exit_code == 1
    assert "HTTP 308 redirecting to https://langfuse.example.com" in result.output, result.output
    assert "sk-lf" not in result.output


class WithoutV3Scores(Emulator):
    """A Langfuse older than 3.179: no v3 scores endpoint; everything else passed through."""

    def __init__(self, upstream: str):
        super().__init__("127.0.0.1", 0)
        self.upstream = upstream

    def handle(self, method, path, query, headers, body):
        import httpx

        if path.startswith("/api/public/v3/scores"):
            return 404, {"message": "Route not found"}, {}
        reply = httpx.request(method, self.upstream + path, params=query, json=body,
                              headers={"Authorization": headers.get("Authorization", "")}, timeout=30)
        return reply.status_code, reply.json() if reply.content else None, {}


def test_servers_without_v3_scores_are_read_back_through_v2(settings, redis_client, langfuse_emu):
    front = WithoutV3Scores(langfuse_emu.base_url)
    front.start()
    try:
        rt = hand_built_runtime(settings, redis_client, langfuse_base_url=front.base_url)
        judged(rt, langfuse_emu, TRACE)
        assert settle(rt, time.time()).counts["confirmed"] == 1
    finally:
        front.stop()
    reads = [r for r in langfuse_emu.requests() if r["path"] == "/api/public/v2/scores"]
    assert reads and reads[-1]["query"]["scoreIds"] == [stored(langfuse_emu, TRACE)[0]["id"]]
