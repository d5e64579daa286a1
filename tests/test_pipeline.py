"""End to end on real parts: redis-server, the dramatiq worker, the real SDKs over HTTP
against the Langfuse and judge emulators."""
from __future__ import annotations

import pytest

from emulators.seed import generate
from tests.helpers import (
    drain,
    expected_pairs,
    hand_built_runtime,
    installed,
    sampled_roots,
    sampler_for,
    score_pairs,
    whole_window,
)

RATE = 0.1


@pytest.fixture
def seeded(langfuse_emu):
    observations = generate(800, include_malformed=False, seed=7)
    langfuse_emu.load_observations(observations)
    return observations


@pytest.fixture
def rated_settings(settings):
    import dataclasses

    return dataclasses.replace(settings, sample_rate=RATE)


def test_scores_exactly_the_traces_the_contract_selects(rated_settings, runtime, broker, redis_client,
                                                        langfuse_emu, seeded):
    report = sampler_for(rated_settings, runtime, broker).run_pass(*whole_window())
    expected = expected_pairs(seeded, RATE)
    assert report.enqueued == 2 * sampled_roots(seeded, RATE) and len(expected) > 50
    drain(broker, redis_client)

    pairs = score_pairs(langfuse_emu.scores())
    assert len(pairs) == len(set(pairs)), "a trace got two scores for one rubric"
    assert set(pairs) == expected
    stats = runtime.outcomes.stats()
    assert stats["scored"] == len(expected) and stats.get("unscored", 0) == 0
    assert stats["not_applicable"] == 2 * sampled_roots(seeded, RATE) - len(expected)
    assert langfuse_emu.violations() == [], "tracejudge sent a request the official spec rejects"


def test_every_score_carries_value_reasoning_and_contract_metadata(rated_settings, runtime, broker,
                                                                   redis_client, langfuse_emu, seeded):
    sampler_for(rated_settings, runtime, broker).run_pass(*whole_window())
    drain(broker, redis_client)
    scores = langfuse_emu.scores()
    assert scores
    for score in scores:
        assert score["dataType"] == "NUMERIC" and 1 <= score["value"] <= 5
        assert score["comment"].strip()
        meta = score["metadata"]
        for key in ("rubric_version", "rubric_sha256", "judge_model", "judge_input_tokens",
                    "judge_output_tokens", "judge_cost_usd"):
            assert key in meta, key
        assert meta["judge_model"] == "claude-sonnet-4-6"
        assert meta["judge_input_tokens"] > 0 and meta["judge_cost_usd"] > 0
        assert len(meta["rubric_sha256"]) == 64


def test_overlapping_windows_and_a_second_sampler_enqueue_nothing_twice(rated_settings, runtime, broker,
                                                                        langfuse_emu, seeded):
    first = sampler_for(rated_settings, runtime, broker).run_pass(*whole_window())
    again = sampler_for(rated_settings, runtime, broker).run_pass(*whole_window())
    assert first.enqueued > 0 and again.enqueued == 0 and again.already_enqueued == first.enqueued


def test_continuous_ticks_follow_the_cursor_and_respect_settle(rated_settings, runtime, broker, langfuse_emu,
                                                               seeded):
    import dataclasses
    import datetime as dt

    settle = dataclasses.replace(rated_settings, settle_seconds=3 * 24 * 3600, overlap_seconds=3600)
    sampler = sampler_for(settle, runtime, broker)
    sampler.set_cursor(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=16))
    report = sampler.tick()
    assert report.until <= dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
    young = {p for p in expected_pairs(seeded, RATE)
             if any(o["traceId"] == p[0] and o["startTime"] >= report.until.isoformat().replace("+00:00", "Z")
                    for o in seeded)}
    assert young, "the seed should have traces younger than the settle delay"
    young_traces = {t for t, _ in young}
    assert report.enqueued == 2 * (sampled_roots(seeded, RATE) - len(young_traces))
    assert sampler.cursor() == report.until
    assert sampler.tick().enqueued == 0  # nothing new in the overlap


def test_legacy_traces_fallback_when_the_server_has_no_v2(rated_settings, redis_client, judge_emu):
    import dataclasses

    import dramatiq

    from emulators.langfuse_api import LangfuseEmulator
    from tests.helpers import PK, SK
    from worker.fleet.broker import build_broker

    old = LangfuseEmulator(public_key=PK, secret_key=SK, v2_observations=False)
    old.start()
    try:
        settings = dataclasses.replace(rated_settings, langfuse_base_url=old.base_url)
        observations = generate(300, include_malformed=False, seed=3)
        old.load_observations(observations)
        with installed(hand_built_runtime(settings, redis_client)) as rt:
            broker = build_broker(settings)
            dramatiq.set_broker(broker)
            report = sampler_for(settings, rt, broker).run_pass(*whole_window())
            drain(broker, redis_client)
            assert report.enqueued == 2 * sampled_roots(observations, RATE)
            assert set(score_pairs(old.scores())) == expected_pairs(observations, RATE)
            assert old.violations() == []
    finally:
        old.stop()
