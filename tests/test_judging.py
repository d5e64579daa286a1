"""One job at a time through the real pipeline: providers, faults, malformed traces.

A judge failure is *unscored with a reason*, never a score; transient faults heal."""
from __future__ import annotations

import shutil

import pytest
import yaml

from emulators.seed import MALFORMED, generate
from tests.helpers import hand_built_runtime, one_trace, openai_rubrics, spy_on
from worker.errors import TransientError
from worker.judges.models import model_family, same_family_producers, self_preference_risk
from worker.judging.pipeline import judge_one

TRACE = "0123456789abcdef0123456789abcdef"


def load(emu, answer, trace_id=TRACE, **kw):
    emu.load_observations(one_trace(trace_id, answer, **kw))
    return trace_id


def test_a_trace_is_scored_from_its_quality(runtime, langfuse_emu):
    load(langfuse_emu, "Open Settings > Security > Reset password. [[quality:1.00]]")
    outcome = judge_one(runtime, TRACE, "helpfulness@v1")
    assert outcome.status == "scored" and outcome.value == 5
    low = load(langfuse_emu, "No idea. [[quality:0.00]]", trace_id="f" * 32)
    assert judge_one(runtime, low, "helpfulness@v1").value == 1


@pytest.mark.parametrize("marker,reason", [
    ("[[judge:garbage]]", "unparseable"),
    ("[[judge:offscale]]", "off_scale"),
    ("[[judge:truncated]]", "truncated"),
    ("[[judge:refusal]]", "refused"),
])
def test_bad_judge_answers_end_unscored_with_the_reason(runtime, langfuse_emu, marker, reason):
    load(langfuse_emu, f"An answer. {marker}")
    outcome = judge_one(runtime, TRACE, "helpfulness@v1")
    assert (outcome.status, outcome.reason) == ("unscored", reason)
    assert langfuse_emu.scores() == []
    stats = runtime.outcomes.stats()
    assert stats[f"unscored:{reason}"] == 1 and stats.get("scored", 0) == 0


def test_one_repair_attempt_heals_a_one_off_garbage_answer(runtime, langfuse_emu, judge_emu):
    load(langfuse_emu, "Fine answer [[quality:0.75]] [[judge:garbage-once]]")
    outcome = judge_one(runtime, TRACE, "helpfulness@v1")
    assert outcome.status == "scored"
    [score] = langfuse_emu.scores()
    assert score["metadata"]["repaired"] is True and score["metadata"]["judge_calls"] == 2


@pytest.mark.parametrize("marker", ["[[judge:500-once]]", "[[judge:529-once]]", "[[judge:429-once]]"])
def test_transient_judge_errors_heal_inside_the_call(runtime, langfuse_emu, marker):
    load(langfuse_emu, f"Answer [[quality:0.5]] {marker}")
    assert judge_one(runtime, TRACE, "helpfulness@v1").status == "scored"


def test_persistent_judge_errors_raise_transient_for_dramatiq_to_retry(runtime, langfuse_emu):
    load(langfuse_emu, "Answer [[judge:500]]")
    with pytest.raises(TransientError):
        judge_one(runtime, TRACE, "helpfulness@v1")
    assert langfuse_emu.scores() == [] and runtime.outcomes.stats().get("unscored", 0) == 0


def test_langfuse_500_and_429_heal_and_the_score_is_written_once(runtime, langfuse_emu):
    load(langfuse_emu, "Answer [[quality:0.5]]")
    langfuse_emu.configure(fail_next=[500, 429, 500])
    assert judge_one(runtime, TRACE, "helpfulness@v1").status == "scored"
    assert len(langfuse_emu.scores()) == 1


def test_a_retried_job_after_the_write_is_skipped_not_judged_twice(runtime, langfuse_emu, judge_emu):
    load(langfuse_emu, "Answer [[quality:0.5]]")
    judge_one(runtime, TRACE, "helpfulness@v1")
    calls = judge_emu.stats()["total_requests"]
    assert judge_one(runtime, TRACE, "helpfulness@v1").status == "skipped"
    assert judge_emu.stats()["total_requests"] == calls
    assert runtime.outcomes.stats()["scored"] == 1


def test_a_trace_that_is_gone_is_unscored(runtime):
    outcome = judge_one(runtime, "9" * 32, "helpfulness@v1")
    assert (outcome.status, outcome.reason) == ("unscored", "trace_not_found")


def test_groundedness_needs_a_retrieval_step(runtime, langfuse_emu):
    load(langfuse_emu, "Answer [[quality:0.9]]")
    assert judge_one(runtime, TRACE, "groundedness@v1").reason == "not_applicable"
    load(langfuse_emu, "Answer [[quality:0.9]]", trace_id="a" * 32,
         retrieval=[{"doc_id": "d1", "text": "Reset in Settings."}])
    assert judge_one(runtime, "a" * 32, "groundedness@v1").status == "scored"


@pytest.mark.parametrize("body_shape", ["object", "array"])
def test_score_write_works_with_object_only_and_array_only_servers(settings, redis_client, judge_emu, body_shape):
    from emulators.langfuse_api import LangfuseEmulator
    from tests.helpers import PK, SK

    emu = LangfuseEmulator(public_key=PK, secret_key=SK, scores_body=body_shape)
    emu.start()
    try:
        rt = hand_built_runtime(settings, redis_client, langfuse_base_url=emu.base_url)
        for i in range(3):
            emu.load_observations(one_trace(f"{i:032x}", "Answer [[quality:0.5]]"))
            assert judge_one(rt, f"{i:032x}", "helpfulness@v1").status == "scored"
        assert len(emu.scores()) == 3 and emu.violations() == []
    finally:
        emu.stop()


def test_malformed_traces_are_scored_or_unscored_with_a_reason(runtime, langfuse_emu):
    langfuse_emu.load_observations(generate(20, include_malformed=True, seed=5))
    outcomes = {name: judge_one(runtime, trace_id, "helpfulness@v1") for name, trace_id in MALFORMED.items()
                if name != "late_output"}
    assert outcomes["missing_output"].reason == "no_output"
    for name in ("huge_output", "non_utf8", "prompt_injection", "jinja_syntax"):
        assert outcomes[name].status == "scored", (name, outcomes[name])
    by_trace = {s["traceId"]: s for s in langfuse_emu.scores()}
    assert by_trace[MALFORMED["huge_output"]]["metadata"]["truncated_chars"] > 1_000_000
    assert by_trace[MALFORMED["prompt_injection"]]["metadata"]["neutralised_markers"] >= 1
    assert langfuse_emu.violations() == []


@pytest.mark.parametrize("json_schema", [True, False])
def test_openai_judge_with_json_schema_or_forced_tool(settings, redis_client, langfuse_emu, judge_emu, tmp_path,
                                                      test_rubrics, json_schema):
    judge_emu.configure(openai_json_schema=json_schema)
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=openai_rubrics(tmp_path, test_rubrics))
    load(langfuse_emu, "Answer [[quality:0.75]]")
    outcome = judge_one(rt, TRACE, "helpfulness@v1")
    assert outcome.status == "scored" and outcome.value == 4
    [score] = langfuse_emu.scores()
    assert score["metadata"]["judge_model"] == "gpt-4o-2024-11-20"
    load(langfuse_emu, "Answer [[judge:offscale]]", trace_id="b" * 32)
    assert judge_one(rt, "b" * 32, "helpfulness@v1").reason == "off_scale"


# -- structured verdicts on both providers, through the real SDKs -------------------------------

PROVIDERS = ["anthropic", "openai-json-schema", "openai-forced-tool"]


def variant_rubrics(tmp_path, source, provider: str, score: dict | None = None):
    """The pipeline rubrics with helpfulness judged by ``provider`` and, optionally, another scale."""
    target = tmp_path / "rubrics"
    shutil.copytree(source, target)
    meta_path = target / "helpfulness" / "v1" / "rubric.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    if provider.startswith("openai"):
        meta["judge"] = {"provider": "openai", "model": "gpt-4o-2024-11-20", "max_tokens": 800}
    if score is not None:
        meta["score"] = score
    meta_path.write_text(yaml.safe_dump(meta, sort_keys=False))  # labels stay best first
    return target


def provider_runtime(provider, settings, redis_client, judge_emu, tmp_path, test_rubrics, score=None):
    judge_emu.configure(openai_json_schema=provider != "openai-forced-tool")
    return hand_built_runtime(settings, redis_client,
                              rubrics_dir=variant_rubrics(tmp_path, test_rubrics, provider, score))


def schema_sent(provider: str, body: dict) -> dict | None:
    if provider == "anthropic":
        assert body["tool_choice"] == {"type": "tool", "name": "record_verdict"}
        return body["tools"][0]["input_schema"]
    if "response_format" in body:
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        return fmt["json_schema"]["schema"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "record_verdict"}}
    assert body["tools"][0]["function"]["strict"] is True
    return body["tools"][0]["function"]["parameters"]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("score,expected,score_schema", [
    (None, 4, {"type": "integer", "minimum": 1, "maximum": 5}),
    ({"type": "categorical", "labels": {"pass": 1, "partial": 0.5, "fail": 0}}, "pass",
     {"type": "string", "enum": ["pass", "partial", "fail"]}),
    ({"type": "boolean"}, 1, {"type": "boolean"}),
])
def test_the_verdict_schema_round_trips_through_the_sdk(provider, score, expected, score_schema, settings,
                                                        redis_client, langfuse_emu, judge_emu, tmp_path, test_rubrics):
    rt = provider_runtime(provider, settings, redis_client, judge_emu, tmp_path, test_rubrics, score)
    bodies = spy_on(judge_emu)
    load(langfuse_emu, "Answer [[quality:0.75]]")
    outcome = judge_one(rt, TRACE, "helpfulness@v1")
    assert outcome.status == "scored" and outcome.value == expected
    # the forced-tool fallback first tries json_schema, is refused (400), then forces the function
    assert len(bodies) == (2 if provider == "openai-forced-tool" else 1)
    if provider == "openai-forced-tool":
        assert "response_format" in bodies[0] and "response_format" not in bodies[1]
    schema = schema_sent(provider, bodies[-1])
    assert list(schema["properties"]) == ["reasoning", "score"]  # reasoning before the score
    assert schema["properties"]["score"] == score_schema
    assert schema["required"] == ["reasoning", "score"] and schema["additionalProperties"] is False
    [written] = langfuse_emu.scores()
    assert written["value"] == expected and written["comment"]  # the judge's reasoning is the comment


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("marker,reason,calls", [
    ("[[judge:garbage]]", "unparseable", 2),   # one repair, still garbage
    ("[[judge:offscale]]", "off_scale", 2),    # one repair, still off the scale
    ("[[judge:truncated]]", "truncated", 1),   # cut at max_tokens: a repair would be cut too
    ("[[judge:refusal]]", "refused", 1),
])
def test_bad_answers_end_unscored_with_the_reason_on_every_provider(provider, marker, reason, calls, settings,
                                                                    redis_client, langfuse_emu, judge_emu, tmp_path,
                                                                    test_rubrics):
    rt = provider_runtime(provider, settings, redis_client, judge_emu, tmp_path, test_rubrics)
    bodies = spy_on(judge_emu)
    load(langfuse_emu, f"An answer. [[quality:0.9]] {marker}")
    outcome = judge_one(rt, TRACE, "helpfulness@v1")
    assert (outcome.status, outcome.reason, outcome.value) == ("unscored", reason, None)
    assert langfuse_emu.scores() == []
    assert len(bodies) == calls + (1 if provider == "openai-forced-tool" else 0)
    stats = rt.outcomes.stats()
    assert stats[f"unscored:{reason}"] == 1 and stats.get("scored", 0) == 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_one_repair_heals_a_one_off_bad_answer_on_every_provider(provider, settings, redis_client, langfuse_emu,
                                                                 judge_emu, tmp_path, test_rubrics):
    rt = provider_runtime(provider, settings, redis_client, judge_emu, tmp_path, test_rubrics)
    load(langfuse_emu, "Fine answer [[quality:0.75]] [[judge:offscale-once]]")
    outcome = judge_one(rt, TRACE, "helpfulness@v1")
    assert (outcome.status, outcome.value) == ("scored", 4)
    [score] = langfuse_emu.scores()
    assert score["metadata"]["repaired"] is True and score["metadata"]["judge_calls"] == 2


# -- self-preference: a judge of the producer's own family is flagged ----------------------------

@pytest.mark.parametrize("model,family", [
    ("claude-sonnet-4-6", "anthropic"), ("anthropic/claude-3-5-haiku-20241022", "anthropic"),
    ("us.anthropic.claude-3-7-sonnet-20250219-v1:0", "anthropic"),
    ("gpt-4o-2024-11-20", "openai"), ("o1", "openai"), ("o3-mini", "openai"), ("o4-mini-2025-04-16", "openai"),
    ("chatgpt-4o-latest", "openai"), ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "openai"), ("azure/gpt-4.1", "openai"),
    ("gemini-2.5-pro", "google"), ("models/gemini-1.5-flash", "google"),
    ("meta-llama/Llama-3.1-70B-Instruct", "meta"), ("llama3.1:8b", "meta"),
    ("mistral-large-2411", "mistral"), ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mistral"),
    ("command-r-plus", "cohere"), ("grok-4", "xai"), ("deepseek-chat", "deepseek"), ("qwen2.5-72b-instruct", "alibaba"),
    ("my-finetune", None), ("", None), ("o", None), ("solar-pro", None),
])
def test_model_family(model, family):
    assert model_family(model) == family


def test_self_preference_risk_when_judge_and_producer_share_a_family():
    assert self_preference_risk("claude-sonnet-4-6", ["claude-haiku-4-5-20251001", "text-embedding-3-small"])
    assert self_preference_risk("gpt-5.5-2026-04-23", ["gpt-4o-mini"])
    assert not self_preference_risk("claude-sonnet-4-6", ["gpt-4o-mini", "gemini-2.5-flash"])
    assert not self_preference_risk("claude-sonnet-4-6", [])
    assert not self_preference_risk("my-judge", ["my-judge"])  # unknown family: no claim either way
    assert same_family_producers("claude-opus-4-7", ["claude-haiku-4-5", "gpt-4o", "claude-haiku-4-5"]) == \
        ["claude-haiku-4-5"]


def test_output_chars_is_the_judged_answer_length(runtime, langfuse_emu):
    answer = "Open Settings > Security > Reset password. [[quality:0.9]]"
    load(langfuse_emu, answer)
    assert judge_one(runtime, TRACE, "helpfulness@v1").status == "scored"
    [score] = langfuse_emu.scores()
    assert score["metadata"]["output_chars"] == len(answer)  # the answer text, not the message object


@pytest.mark.parametrize("model, temperature", [("gpt-4.1-2025-04-14", 0), ("gpt-5.5-2026-04-23", None),
                                                ("o3-2025-04-16", None)])
def test_reasoning_models_get_no_temperature(judge_emu, model, temperature):
    """o-series and gpt-5.x answer 400 to temperature 0: that would leave every trace unscored."""
    from worker.judges.base import JudgeRequest
    from worker.judges.openai_judge import OpenAIJudge

    seen = spy_on(judge_emu)
    request = JudgeRequest(model, 400, "Grade it.", "Answer: fine", {
        "type": "object", "properties": {"reasoning": {"type": "string"}, "score": {"type": "boolean"}},
        "required": ["reasoning", "score"], "additionalProperties": False}, "record_verdict", "verdict")
    OpenAIJudge("test-key", judge_emu.base_url + "/v1", 30).ask(request)
    assert seen[-1].get("temperature") == temperature and seen[-1]["model"] == model
