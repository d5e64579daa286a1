"""Batch mode within the budget and the providers' limits (issue 11, item 6): budget reserved
when a batch is submitted, batches cut by bytes and by estimated tokens, provider files
deleted, and a failed batch's reason recorded on its items."""
from __future__ import annotations

import json
import time

import pytest

from tests.helpers import hand_built_runtime
from tests.test_batch import DELAY, PROVIDERS, cycle_until_idle, make_rt, rubrics_dir, trace  # noqa: F401
from worker.accounting.budget import SPENT, TYPICAL, utc_day
from worker.accounting.outcomes import UNSCORED_LOG
from worker.batching.store import BatchStore
from worker.judging import batch_cycle as cycle_module
from worker.judging.batch_cycle import run_batch_cycle
from worker.judging.pipeline import judge_one


def _defer(rt, langfuse_emu, n: int, answer: str = "Answer [[quality:0.7]]") -> list[str]:
    ids = [trace(langfuse_emu, f"{i + 1:032x}", answer) for i in range(n)]
    assert {judge_one(rt, t, "helpfulness@v1").status for t in ids} == {"deferred"}
    return ids


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_batch_submission_reserves_budget_and_stops_at_the_cap(settings, redis_client, langfuse_emu, judge_emu,
                                                                 tmp_path, test_rubrics, provider):
    judge_emu.configure(batch_delay_seconds=DELAY)
    rt = hand_built_runtime(settings, redis_client, daily_budget_usd=0.010,
                            rubrics_dir=rubrics_dir(tmp_path, test_rubrics, provider, "batch"))
    _defer(rt, langfuse_emu, 5)
    redis_client.hset(TYPICAL, "helpfulness", 3000)  # $0.003 a job: three fit under the $0.01 cap
    first = run_batch_cycle(rt)
    assert first.counts["requests_submitted"] == 3 and first.counts["held_by_budget"] == 2
    spent = {k.decode(): int(v) for k, v in redis_client.hgetall(SPENT + utc_day()).items()}
    assert spent["reserved:helpfulness"] == 9000  # held while the batch runs
    time.sleep(DELAY * 2)
    run_batch_cycle(rt)  # results recorded: the reservation is given back, the real cost counted
    spent = {k.decode(): int(v) for k, v in redis_client.hgetall(SPENT + utc_day()).items()}
    assert spent["reserved:helpfulness"] <= 3 * 3000 and spent["helpfulness"] > 0
    assert rt.outcomes.stats()["scored"] == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_batches_are_cut_by_bytes_and_a_request_too_large_for_any_batch_is_unscored(make_rt, langfuse_emu,
                                                                                   monkeypatch, provider):
    rt = make_rt(provider)
    _defer(rt, langfuse_emu, 3)
    trace(langfuse_emu, "f" * 32, "Answer " + "long text " * 800 + "[[quality:0.7]]")
    judge_one(rt, "f" * 32, "helpfulness@v1")
    api = cycle_module.BatchCycle(rt).api(provider)
    store = BatchStore(rt.redis)
    sizes = sorted(len(api.line(store.item(s))) for s in store.pending_ids(provider, 10))
    # Room for one ordinary request per batch, never for the long one.
    monkeypatch.setitem(cycle_module.MAX_BYTES, provider, int(sizes[0] * 1.5) + 2)
    first = run_batch_cycle(rt)
    assert first.counts["batches_submitted"] == 3 and first.counts["requests_submitted"] == 3
    assert first.counts["unscored"] == 1
    stats = rt.outcomes.stats()
    assert stats["unscored:judge_rejected"] == 1
    entry = json.loads(rt.redis.lindex(UNSCORED_LOG, 0))
    assert entry["trace_id"] == "f" * 32 and "exceeds the batch limit" in entry["detail"]
    time.sleep(DELAY * 2)
    cycle_until_idle(rt)
    assert rt.outcomes.stats()["scored"] == 3


def test_a_batch_over_the_enqueued_token_limit_fails_with_its_reason_and_a_token_cap_avoids_it(
        settings, redis_client, langfuse_emu, judge_emu, tmp_path, test_rubrics):
    judge_emu.configure(batch_delay_seconds=DELAY)
    folder = rubrics_dir(tmp_path, test_rubrics, "openai", "batch")
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=folder)
    _defer(rt, langfuse_emu, 4)
    api = cycle_module.BatchCycle(rt).api("openai")
    store = BatchStore(rt.redis)
    line_tokens = max(len(api.line(store.item(s))) for s in store.pending_ids("openai", 10)) // 4 + 1
    judge_emu.configure(batch_enqueued_token_limit=2 * line_tokens + 10)  # two requests fit, four do not
    cycle_until_idle(rt)  # no cap: every submission fails as a whole, until the tries run out
    assert rt.outcomes.stats()["unscored:retries_exhausted"] == 4
    details = [json.loads(e)["detail"] for e in rt.redis.lrange(UNSCORED_LOG, 0, -1)]
    assert all("token_limit_exceeded" in d for d in details), details

    capped = hand_built_runtime(settings, redis_client, rubrics_dir=folder, batch_max_tokens=2 * line_tokens + 10)
    redis_client.flushdb()
    _defer(capped, langfuse_emu, 4)
    summaries = cycle_until_idle(capped)
    assert summaries[0].counts["batches_submitted"] == 2
    assert capped.outcomes.stats()["scored"] == 4


def test_openai_batch_files_are_deleted_once_collected(make_rt, langfuse_emu, judge_emu):
    rt = make_rt("openai")
    _defer(rt, langfuse_emu, 2)
    summaries = cycle_until_idle(rt)
    assert sum(s.counts["files_deleted"] for s in summaries) == 2  # the input and the output file
    assert judge_emu.batches.files == {}
    assert rt.outcomes.stats()["scored"] == 2

