"""Prompt caching: the rubric's static system prompt is cached by Anthropic (cache_control)
and by OpenAI (automatically), the emulator accounts for it as the real APIs do, and the cost
uses the cache prices of the one price table."""
from __future__ import annotations

import shutil
import time
from decimal import Decimal

import pytest
import yaml

from tests.helpers import hand_built_runtime, one_trace
from worker.accounting.pricing import cost_usd, price_table
from worker.judges.base import Usage
from worker.judging.pipeline import judge_one


def long_prompt_rubrics(tmp_path, source, *, provider="anthropic", model="claude-sonnet-4-6", repeat=10):
    """The helpfulness rubric with its own system prompt repeated, to pass the cacheable minimum."""
    target = tmp_path / f"rubrics-{provider}-{repeat}"
    shutil.copytree(source, target)
    version = target / "helpfulness" / "v1"
    system = (version / "system.j2").read_text()
    (version / "system.j2").write_text(system * repeat)
    meta = yaml.safe_load((version / "rubric.yaml").read_text())
    meta["judge"] = {"provider": provider, "model": model, "max_tokens": 800}
    (version / "rubric.yaml").write_text(yaml.safe_dump(meta))
    return target


def judged(rt, langfuse_emu, trace_id: str) -> dict:
    langfuse_emu.load_observations(one_trace(trace_id, f"Reset it in Settings. [[quality:0.8]] {trace_id}"))
    assert judge_one(rt, trace_id, "helpfulness@v1").status == "scored"
    return next(s for s in langfuse_emu.scores() if s["traceId"] == trace_id)["metadata"]


def priced(model: str, meta: dict) -> Decimal:
    """The cost recomputed by hand from the table's four online prices."""
    p = price_table()[model]
    return (meta["judge_input_tokens"] * p["input"] + meta["judge_output_tokens"] * p["output"]
            + meta["judge_cache_write_tokens"] * p["cache_write"]
            + meta["judge_cache_read_tokens"] * p["cache_read"]) / Decimal(1_000_000)


def test_the_second_call_reads_the_cached_system_prompt_and_costs_less(settings, redis_client, langfuse_emu,
                                                                        tmp_path, test_rubrics):
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=long_prompt_rubrics(tmp_path, test_rubrics))
    first, second = judged(rt, langfuse_emu, "1" * 32), judged(rt, langfuse_emu, "2" * 32)
    assert first["judge_cache_write_tokens"] >= 2048 and first["judge_cache_read_tokens"] == 0
    assert second["judge_cache_read_tokens"] == first["judge_cache_write_tokens"]
    assert second["judge_cache_write_tokens"] == 0
    for meta in (first, second):
        assert meta["judge_cost_usd"] == pytest.approx(float(priced("claude-sonnet-4-6", meta)))
    assert second["judge_cost_usd"] < 0.5 * first["judge_cost_usd"]
    stats = rt.outcomes.stats()
    assert stats["cache_read_tokens"] == second["judge_cache_read_tokens"]
    assert stats["cache_write_tokens"] == first["judge_cache_write_tokens"]


def test_a_prefix_below_the_model_minimum_is_not_cached(runtime, langfuse_emu, judge_emu):
    first, second = judged(runtime, langfuse_emu, "3" * 32), judged(runtime, langfuse_emu, "4" * 32)
    for meta in (first, second):
        assert meta["judge_cache_write_tokens"] == meta["judge_cache_read_tokens"] == 0
    assert judge_emu.stats()["cache_write_tokens"] == 0


def test_the_cache_is_written_again_after_its_ttl(settings, redis_client, langfuse_emu, judge_emu, tmp_path,
                                                  test_rubrics):
    judge_emu.configure(cache_ttl_seconds=0.3)
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=long_prompt_rubrics(tmp_path, test_rubrics))
    first = judged(rt, langfuse_emu, "5" * 32)
    time.sleep(0.5)
    second = judged(rt, langfuse_emu, "6" * 32)
    assert second["judge_cache_read_tokens"] == 0
    assert second["judge_cache_write_tokens"] == first["judge_cache_write_tokens"] > 0


def test_openai_caches_long_prompts_on_its_own_and_the_cost_uses_cached_prices(settings, redis_client, langfuse_emu,
                                                                               tmp_path, test_rubrics):
    model = "gpt-4.1-2025-04-14"
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=long_prompt_rubrics(
        tmp_path, test_rubrics, provider="openai", model=model))
    first, second = judged(rt, langfuse_emu, "7" * 32), judged(rt, langfuse_emu, "8" * 32)
    assert first["judge_cache_read_tokens"] == 0
    cached = second["judge_cache_read_tokens"]
    assert cached >= 1024 and cached % 128 == 0
    # input_tokens are the uncached ones: both calls carry the same prompt length
    assert second["judge_input_tokens"] + cached == first["judge_input_tokens"]
    assert second["judge_cost_usd"] == pytest.approx(float(priced(model, second)))
    assert second["judge_cost_usd"] < first["judge_cost_usd"]


@pytest.mark.parametrize("model", sorted(price_table()))
def test_the_price_table_follows_the_providers_rules(model):
    p = price_table()[model]
    for kind in ("input", "output", "cache_write", "cache_read"):
        assert p[f"batch_{kind}"] == p[kind] / 2  # batch is half price on both providers
    if model.startswith("claude-"):
        assert p["cache_write"] == p["input"] * Decimal("1.25") and p["cache_read"] == p["input"] / 10
    else:
        assert p["cache_write"] == p["input"] and p["cache_read"] < p["input"]
    usage = Usage(1000, 200, 3000, 500)
    assert cost_usd(model, usage, batch=True) == cost_usd(model, usage) / 2
