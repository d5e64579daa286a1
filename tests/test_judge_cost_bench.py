"""The cost benchmark's arithmetic and its premise: the production-size rubric is cacheable."""
from __future__ import annotations

from decimal import Decimal

import pytest

from benchmarks.judge_cost import GOAL, RubricCost, break_even_hit_rate, prefix_tokens, with_output_tokens
from tests.helpers import REPO
from worker.accounting.pricing import cost_usd
from worker.judges.anthropic_judge import AnthropicJudge
from worker.judges.base import Usage
from worker.judging.prompt import render
from worker.rubrics.rubric import load_rubrics

BENCH_RUBRICS = REPO / "benchmarks" / "rubrics"


def test_break_even_hit_rate_puts_the_mixed_cost_exactly_on_the_goal():
    warm, cold, online = Decimal("9.6"), Decimal("61"), Decimal("100")
    h = break_even_hit_rate(warm, cold, online)
    assert 0 < h < 1
    assert h * warm + (1 - h) * cold == pytest.approx(GOAL * online)


def test_break_even_hit_rate_is_none_when_even_all_hits_miss_the_goal():
    assert break_even_hit_rate(Decimal("50"), Decimal("50"), Decimal("100")) is None


def test_break_even_hit_rate_is_zero_when_misses_alone_meet_the_goal():
    assert break_even_hit_rate(Decimal("10"), Decimal("35"), Decimal("100")) == 0


def test_with_output_tokens_reprices_only_the_output():
    n, model = 4, "claude-sonnet-4-6"
    usage = {name: Usage(1000, 40 * n, 3000, 10) for name in
             ("online", "online + cache", "batch", "batch + cache", "online + cache, cold", "batch + cache, cold")}
    cost = RubricCost("r@v1", model, n, usage, {}, 0, 0, True)
    repriced = with_output_tokens(cost, 150)
    for name, batch in (("online", False), ("batch + cache", True)):
        expected = cost_usd(model, Usage(1000, 150 * n, 3000, 10), batch=batch) * 1000 / n
        assert repriced[name] == expected
    assert repriced["batch"] < repriced["online"]


def test_production_size_rubric_prefix_is_past_the_models_cacheable_minimum():
    rubrics = load_rubrics(BENCH_RUBRICS)
    rubric = rubrics["helpfulness_calibrated@v1"]
    request = render(rubric, {"conversation": "How do I reset my password?", "answer": "Settings > Security."})
    prefix, floor = prefix_tokens(AnthropicJudge("test", "http://127.0.0.1:9", 1.0), request)
    assert prefix >= floor  # otherwise the benchmark's production table measures no caching at all
    assert prefix <= 2 * floor  # a scoring guide, not padding: ~2,600-3,000 tokens
