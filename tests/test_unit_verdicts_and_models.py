import datetime as dt
from decimal import Decimal

import pytest

from worker.accounting.pricing import cost_usd
from worker.errors import ConfigError, VerdictError
from worker.judges.base import JudgeReply, Usage
from worker.judges.models import check_judge_model, end_of_life_table, is_pinned
from worker.judging.verdict import parse_verdict
from worker.langfuse_io.scores import score_id_for
from worker.rubrics.scales import Scale

NUMERIC = Scale.from_dict({"type": "numeric", "min": 1, "max": 5, "integer": True}, "t")
LABELS = Scale.from_dict({"type": "categorical", "labels": {"pass": 1, "partial": 0.5, "fail": 0}}, "t")
BOOL = Scale.from_dict({"type": "boolean"}, "t")


def reply(verdict, problem=None):
    return JudgeReply(verdict, Usage(), problem, "detail")


def test_valid_verdicts_map_to_langfuse_values():
    assert parse_verdict(reply({"reasoning": "r", "score": 4}), NUMERIC).value == 4
    assert parse_verdict(reply({"reasoning": "r", "score": "partial"}), LABELS).value == "partial"
    assert parse_verdict(reply({"reasoning": "r", "score": True}), BOOL).value == 1


@pytest.mark.parametrize("verdict,scale,reason", [
    ({"reasoning": "r", "score": 9}, NUMERIC, "off_scale"),
    ({"reasoning": "r", "score": 3.5}, NUMERIC, "off_scale"),
    ({"reasoning": "r", "score": "4"}, NUMERIC, "unparseable"),
    ({"reasoning": "r", "score": True}, NUMERIC, "unparseable"),
    ({"reasoning": "r", "score": "great"}, LABELS, "off_scale"),
    ({"reasoning": "r", "score": "yes"}, BOOL, "off_scale"),
    ({"score": 3}, NUMERIC, "unparseable"),
    ({"reasoning": "r", "score": 3, "bonus": 1}, NUMERIC, "unparseable"),
    ("just text", NUMERIC, "unparseable"),
])
def test_bad_verdicts_raise_with_the_reason_never_a_number(verdict, scale, reason):
    with pytest.raises(VerdictError) as err:
        parse_verdict(reply(verdict), scale)
    assert err.value.reason == reason


def test_provider_problems_pass_through():
    for problem in ("truncated", "refused", "unparseable"):
        with pytest.raises(VerdictError) as err:
            parse_verdict(reply(None, problem), NUMERIC)
        assert err.value.reason == problem


def test_schema_declares_bounds_enum_and_boolean():
    assert NUMERIC.json_schema() == {"type": "integer", "minimum": 1, "maximum": 5}
    assert LABELS.json_schema() == {"type": "string", "enum": ["pass", "partial", "fail"]}
    assert BOOL.json_schema() == {"type": "boolean"}


@pytest.mark.parametrize("provider,model,pinned", [
    ("anthropic", "claude-sonnet-4-6", True), ("anthropic", "claude-opus-4-7", True),
    ("anthropic", "claude-haiku-4-5-20251001", True), ("anthropic", "claude-haiku-4-5", False),
    ("anthropic", "claude-3-5-sonnet-latest", False), ("openai", "gpt-4o-2024-11-20", True),
    ("openai", "gpt-4o", False), ("openai", "chatgpt-4o-latest", False), ("openai", "gpt-5.5-2026-04-23", True),
])
def test_pinned_models(provider, model, pinned):
    assert is_pinned(provider, model) is pinned


def test_floating_model_refused_unless_allowed():
    with pytest.raises(ConfigError, match="not pinned"):
        check_judge_model("openai", "gpt-4o", allow_floating=False, today=dt.date(2026, 1, 1))
    assert check_judge_model("openai", "gpt-4o", allow_floating=True, today=dt.date(2026, 1, 1))


EOL = {"claude-sonnet-4-5-20250929": dt.date(2026, 11, 30)}


@pytest.mark.parametrize("today, outcome", [
    (dt.date(2026, 10, 30), "ok"),        # 31 days before: no warning yet
    (dt.date(2026, 10, 31), "warns"),     # 30 days before
    (dt.date(2026, 11, 29), "warns"),     # the last day it may judge
    (dt.date(2026, 11, 30), "fails"),     # its end of life
    (dt.date(2027, 1, 1), "fails"),
])
def test_end_of_life_warns_within_30_days_and_fails_from_that_day(today, outcome):
    check = lambda: check_judge_model("anthropic", "claude-sonnet-4-5-20250929", allow_floating=False,  # noqa: E731
                                      today=today, end_of_life=EOL)
    if outcome == "fails":
        with pytest.raises(ConfigError, match="reached end of life on 2026-11-30"):
            check()
        return
    warnings = check()
    assert any("reaches end of life on 2026-11-30" in w for w in warnings) == (outcome == "warns"), warnings


def test_a_model_without_end_of_life_never_warns():
    assert check_judge_model("anthropic", "claude-sonnet-4-6", allow_floating=False, today=dt.date(2026, 11, 29),
                             end_of_life=EOL) == []


def test_retired_models_stay_known_after_the_sdk_drops_them(monkeypatch):
    """The anthropic SDK's table loses a model once it is retired; ours keeps its date."""
    import anthropic._data as sdk_data

    monkeypatch.setattr(sdk_data, "DEPRECATED_MODELS", {"claude-opus-4-5": "January 22nd, 2027"})
    table = end_of_life_table()
    assert table["claude-sonnet-4-5-20250929"] == dt.date(2026, 11, 30)
    assert table["claude-opus-4-5"] == dt.date(2027, 1, 22)


def test_cost_uses_the_price_table_per_token_kind():
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000, cache_read_tokens=1_000_000, cache_write_tokens=0)
    assert cost_usd("claude-sonnet-4-6", usage) == Decimal("3.00") + Decimal("1.50") + Decimal("0.30")
    assert cost_usd("claude-sonnet-4-6", usage, batch=True) == (Decimal("4.80") * Decimal("0.5"))


def test_score_id_is_deterministic_per_trace_rubric_and_version():
    a = score_id_for("t1", "helpfulness", 1)
    assert a == score_id_for("t1", "helpfulness", 1)
    assert len({a, score_id_for("t2", "helpfulness", 1), score_id_for("t1", "helpfulness", 2),
                score_id_for("t1", "groundedness", 1)}) == 4
