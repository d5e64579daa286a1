"""One job at a time through the real pipeline: providers, faults, malformed traces.

A judge failure is *unscored with a reason*, never a score; transient faults heal."""
from __future__ import annotations

import dataclasses
import shutil

import pytest
import yaml

from emulators.seed import MALFORMED, generate
from worker.errors import TransientError
from worker.pipeline import judge_one
from worker.runtime import Runtime
from tests.pipeline_helpers import one_trace

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
    from tests.conftest import PK, SK

    emu = LangfuseEmulator(public_key=PK, secret_key=SK, scores_body=body_shape)
    emu.start()
    try:
        rt = Runtime(dataclasses.replace(settings, langfuse_base_url=emu.base_url), redis_client=redis_client)
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


def openai_rubrics(tmp_path, source):
    target = tmp_path / "rubrics"
    shutil.copytree(source, target)
    meta_path = target / "helpfulness" / "v1" / "rubric.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["judge"] = {"provider": "openai", "model": "gpt-4o-2024-11-20", "max_tokens": 800}
    meta_path.write_text(yaml.safe_dump(meta))
    return target


@pytest.mark.parametrize("json_schema", [True, False])
def test_openai_judge_with_json_schema_or_forced_tool(settings, redis_client, langfuse_emu, judge_emu, tmp_path,
                                                      test_rubrics, json_schema):
    judge_emu.configure(openai_json_schema=json_schema)
    rt = Runtime(dataclasses.replace(settings, rubrics_dir=openai_rubrics(tmp_path, test_rubrics)), redis_client=redis_client)
    load(langfuse_emu, "Answer [[quality:0.75]]")
    outcome = judge_one(rt, TRACE, "helpfulness@v1")
    assert outcome.status == "scored" and outcome.value == 4
    [score] = langfuse_emu.scores()
    assert score["metadata"]["judge_model"] == "gpt-4o-2024-11-20"
    load(langfuse_emu, "Answer [[judge:offscale]]", trace_id="b" * 32)
    assert judge_one(rt, "b" * 32, "helpfulness@v1").reason == "off_scale"
