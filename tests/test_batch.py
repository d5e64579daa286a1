"""Batch mode end to end: the real anthropic and openai SDKs against the emulator's Message
Batches and Files + Batch APIs, results finished exactly like online results."""
from __future__ import annotations

import shutil
import time

import pytest
import yaml

from tests.helpers import hand_built_runtime, make_env, one_trace
from worker.accounting.pricing import cost_usd
from worker.batching.store import SUBMITTED, BatchStore
from worker.judges.base import Usage
from worker.judging.batch_cycle import MAX_TRIES, BatchCycle, run_batch_cycle
from worker.judging.pipeline import judge_one
from worker.runtime import Runtime

MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4.1-2025-04-14"}
PROVIDERS = ["anthropic", "openai"]
DELAY = 0.05


def rubrics_dir(tmp_path, source, provider: str, mode: str):
    target = tmp_path / f"rubrics-{provider}-{mode}"
    if target.exists():
        return target
    shutil.copytree(source, target)
    meta_path = target / "helpfulness" / "v1" / "rubric.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["judge"] = {"provider": provider, "model": MODELS[provider], "max_tokens": 800, "mode": mode}
    meta_path.write_text(yaml.safe_dump(meta))
    return target


@pytest.fixture
def make_rt(settings, redis_client, judge_emu, tmp_path, test_rubrics):
    judge_emu.configure(batch_delay_seconds=DELAY)

    def make(provider: str, mode: str = "batch") -> Runtime:
        return hand_built_runtime(settings, redis_client,
                                  rubrics_dir=rubrics_dir(tmp_path, test_rubrics, provider, mode))
    return make


def trace(langfuse_emu, trace_id: str, answer: str) -> str:
    langfuse_emu.load_observations(one_trace(trace_id, answer))
    return trace_id


def cycle_until_idle(rt, max_cycles: int = 12) -> list:
    """Batch cycles until nothing is kept in the store (each waits out the emulator's delay)."""
    summaries = []
    for _ in range(max_cycles):
        summaries.append(run_batch_cycle(rt))
        if BatchStore(rt.redis).counts()["items"] == 0:
            return summaries
        time.sleep(DELAY * 2)
    raise AssertionError(f"batch store not drained: {BatchStore(rt.redis).counts()}")


def comparable(score: dict) -> dict:
    """A score without what differs by trace id or by mode (ids, timestamps, tokens, cost, and
    the rubric hash: the two rubric folders differ in judge.mode)."""
    per_call = ("rubric_sha256", "judge_mode", "judge_cost_usd", "judge_input_tokens", "judge_output_tokens",
                "judge_cache_read_tokens", "judge_cache_write_tokens", "trace_timestamp")
    body = {k: v for k, v in score.items() if k in ("name", "value", "dataType", "comment", "configId", "environment")}
    body["metadata"] = {k: v for k, v in score["metadata"].items() if k not in per_call}
    return body


@pytest.mark.parametrize("provider", PROVIDERS)
def test_batch_results_are_written_exactly_like_online_results(make_rt, langfuse_emu, judge_emu, provider):
    answer = "Open Settings > Security > Reset password. [[quality:0.75]]"
    online_id, batch_ids = trace(langfuse_emu, "a" * 32, answer), [trace(langfuse_emu, f"{i:032x}", answer) for i in range(3)]
    assert judge_one(make_rt(provider, "online"), online_id, "helpfulness@v1").status == "scored"
    rt = make_rt(provider)
    online_calls = judge_emu.stats()["total_requests"]
    assert {judge_one(rt, t, "helpfulness@v1").status for t in batch_ids} == {"deferred"}
    assert judge_emu.stats()["total_requests"] == online_calls  # nothing was judged online
    assert len(langfuse_emu.scores()) == 1

    summaries = cycle_until_idle(rt)
    assert summaries[0].counts["requests_submitted"] == 3
    scores = {s["traceId"]: s for s in langfuse_emu.scores()}
    online = scores.pop(online_id)
    assert set(scores) == set(batch_ids)
    for score in scores.values():
        assert comparable(score) == comparable(online)
        meta = score["metadata"]
        assert meta["judge_mode"] == "batch" and online["metadata"]["judge_mode"] == "online"
        assert meta["rubric_sha256"] == rt.rubrics["helpfulness@v1"].sha256
        usage = Usage(meta["judge_input_tokens"], meta["judge_output_tokens"],
                      meta["judge_cache_read_tokens"], meta["judge_cache_write_tokens"])
        assert usage.input_tokens > 0
        assert meta["judge_cost_usd"] == pytest.approx(float(cost_usd(MODELS[provider], usage, batch=True)))
        assert meta["judge_cost_usd"] < float(cost_usd(MODELS[provider], usage))
    stats = rt.outcomes.stats()
    assert stats["scored"] == 4 and stats.get("unscored", 0) == 0
    assert judge_emu.stats()["counts"][f"batch:{provider}:requests"] == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_repeated_cycle_or_redelivered_job_changes_nothing(make_rt, langfuse_emu, judge_emu, redis_client, provider):
    rt = make_rt(provider)
    ids = [trace(langfuse_emu, f"{i:032x}", "Fine. [[quality:0.9]]") for i in range(2)]
    for t in ids:
        judge_one(rt, t, "helpfulness@v1")
        judge_one(rt, t, "helpfulness@v1")  # a redelivered job defers nothing twice
    first = run_batch_cycle(rt)
    assert first.counts["requests_submitted"] == 2
    [batch_id] = BatchStore(redis_client).submitted()
    info = redis_client.hget(SUBMITTED, batch_id)
    time.sleep(DELAY * 2)
    assert run_batch_cycle(rt).counts["scored"] == 2
    redis_client.hset(SUBMITTED, batch_id, info)  # as if the process died before forgetting the batch
    again = run_batch_cycle(rt)
    # Anthropic serves the ended batch again; OpenAI's files were deleted once it was collected,
    # so the batch reads as gone. Either way nothing is scored or resubmitted twice.
    assert again.counts["scored"] == 0 and again.counts["requests_submitted"] == 0
    assert again.counts["batches_ended"] == (1 if provider == "anthropic" else 0)
    assert [judge_one(rt, t, "helpfulness@v1").status for t in ids] == ["skipped", "skipped"]
    assert run_batch_cycle(rt).counts["requests_submitted"] == 0
    assert sorted(s["traceId"] for s in langfuse_emu.scores()) == sorted(ids)
    assert rt.outcomes.stats()["scored"] == 2
    assert judge_emu.stats()["counts"][f"batch:{provider}:requests"] == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_bad_batch_answers_are_unscored_with_the_reason_and_a_one_off_is_repaired(make_rt, langfuse_emu, provider):
    rt = make_rt(provider)
    cases = {"1" * 32: ("[[judge:garbage]]", "unparseable"), "2" * 32: ("[[judge:offscale]]", "off_scale"),
             "3" * 32: ("[[judge:refusal]]", "refused"), "4" * 32: ("[[judge:garbage-once]] [[quality:0.8]]", None)}
    for trace_id, (marker, _) in cases.items():
        judge_one(rt, trace(langfuse_emu, trace_id, f"An answer. {marker}"), "helpfulness@v1")
    summaries = cycle_until_idle(rt)
    assert sum(s.counts["repairs"] for s in summaries) == 3  # garbage, offscale and garbage-once get one repair
    [score] = langfuse_emu.scores()
    assert score["traceId"] == "4" * 32
    assert score["metadata"]["repaired"] is True and score["metadata"]["judge_calls"] == 2
    stats = rt.outcomes.stats()
    for trace_id, (_, reason) in cases.items():
        if reason:
            assert stats[f"unscored:{reason}"] == 1, (reason, stats)
    assert stats["scored"] == 1 and stats["unscored"] == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_errored_batch_item_is_resubmitted_and_heals(make_rt, langfuse_emu, judge_emu, provider):
    rt = make_rt(provider)
    judge_one(rt, trace(langfuse_emu, "5" * 32, "Answer [[quality:0.6]] [[judge:500-once]]"), "helpfulness@v1")
    judge_one(rt, trace(langfuse_emu, "6" * 32, "Answer [[quality:0.6]]"), "helpfulness@v1")
    summaries = cycle_until_idle(rt)
    assert sum(s.counts["retries"] for s in summaries) == 1
    assert sorted(s["traceId"] for s in langfuse_emu.scores()) == ["5" * 32, "6" * 32]
    assert judge_emu.stats()["counts"][f"batch:{provider}:status:500"] == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_requests_that_keep_expiring_end_unscored_never_lost(make_rt, langfuse_emu, judge_emu, provider):
    judge_emu.configure(batch_expire_rate=1.0)
    rt = make_rt(provider)
    judge_one(rt, trace(langfuse_emu, "7" * 32, "Answer [[quality:0.6]]"), "helpfulness@v1")
    summaries = cycle_until_idle(rt)
    assert sum(s.counts["requests_submitted"] for s in summaries) == MAX_TRIES
    assert rt.outcomes.stats()["unscored:retries_exhausted"] == 1
    assert langfuse_emu.scores() == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_crash_between_submit_and_poll_loses_nothing(make_rt, langfuse_emu, redis_client, provider):
    rt = make_rt(provider)
    ids = [trace(langfuse_emu, f"{i:032x}", "Answer [[quality:0.7]]") for i in range(3)]
    for t in ids:
        judge_one(rt, t, "helpfulness@v1")
    BatchCycle(rt).submit()  # the process dies here: only Redis remembers the batch
    del rt
    assert len(BatchStore(redis_client).submitted()) == 1
    time.sleep(DELAY * 2)
    fresh = make_rt(provider)
    cycle_until_idle(fresh)
    assert sorted(s["traceId"] for s in langfuse_emu.scores()) == sorted(ids)
    assert fresh.outcomes.stats()["scored"] == 3


def test_a_crash_before_the_batch_id_is_stored_resubmits_and_scores_once(make_rt, langfuse_emu, monkeypatch):
    rt = make_rt("anthropic")
    judge_one(rt, trace(langfuse_emu, "8" * 32, "Answer [[quality:0.7]]"), "helpfulness@v1")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed after the provider accepted the batch")

    with monkeypatch.context() as patch:
        patch.setattr(BatchStore, "mark_submitted", crash)
        with pytest.raises(KeyboardInterrupt):
            BatchCycle(rt).submit()
    assert BatchStore(rt.redis).counts()["pending_anthropic"] == 1  # still pending, not lost
    cycle_until_idle(rt)
    assert [s["traceId"] for s in langfuse_emu.scores()] == ["8" * 32]
    assert rt.outcomes.stats()["scored"] == 1


def test_the_batches_cli_shows_pending_work_and_polls(make_rt, langfuse_emu, judge_emu, redis_url):
    import json

    from click.testing import CliRunner

    from worker.cli.batches import batches

    rt = make_rt("anthropic")
    judge_one(rt, trace(langfuse_emu, "9" * 32, "Answer [[quality:0.7]]"), "helpfulness@v1")
    runner = CliRunner(env=make_env(langfuse_emu, judge_emu, redis_url, rt.settings.rubrics_dir))
    status = runner.invoke(batches, ["status", "--json"])  # each command builds its own runtime
    assert status.exit_code == 0 and json.loads(status.output)["pending_anthropic"] == 1
    polled = runner.invoke(batches, ["poll"])
    assert polled.exit_code == 0 and "submitted 1 requests in 1 batches" in polled.output
    running = json.loads(runner.invoke(batches, ["status", "--json"]).output)
    assert running["pending_anthropic"] == 0 and running["batches_submitted"] == 1
    time.sleep(DELAY * 2)
    assert "scored 1" in runner.invoke(batches, ["poll"]).output
    assert [s["traceId"] for s in langfuse_emu.scores()] == ["9" * 32]


def test_the_scheduler_tick_runs_a_cycle_only_every_batch_poll_seconds(make_rt, langfuse_emu, runtime):
    from worker.judging.batch_cycle import batch_tick

    assert batch_tick(runtime) is None  # no batch rubric loaded: nothing to do
    rt = make_rt("anthropic")
    judge_one(rt, trace(langfuse_emu, "a1" * 16, "Answer [[quality:0.7]]"), "helpfulness@v1")
    first = batch_tick(rt, now=1000.0)
    assert first.counts["requests_submitted"] == 1
    assert batch_tick(rt, now=1000.0 + rt.settings.batch_poll_seconds - 1) is None
    time.sleep(DELAY * 2)
    assert batch_tick(rt, now=1000.0 + rt.settings.batch_poll_seconds).counts["scored"] == 1
