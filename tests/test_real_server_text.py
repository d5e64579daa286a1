"""Bad text never crashes a job (issue 24, item 2), against the Langfuse emulator answering as
the real 4.16 does (``release="4.16"``): v2 returns input/output as the raw string the
application stored, so a JavaScript app's ``\\udcc3`` inside JSON text decodes, on our side, to
a lone surrogate; metadata keys and values come back as whatever was sent.

Each case runs real judge jobs (two rubrics judging one trace, so the trace read is shared
through Redis too) and asserts the job is judged with the offending code points replaced
(U+FFFD), or ends unscored with a reason: ``judge_one`` returns, nothing raises (a raise is a
retry, and then the dead-letter queue).
"""
from __future__ import annotations

import json

import pytest

from emulators.langfuse_api import LangfuseEmulator
from tests.helpers import PK, SK, confirm_all, hand_built_runtime, one_trace, spy_on
from worker.judging.pipeline import judge_one
from worker.langfuse_io.text import MAX_DEPTH, TOO_DEEP

TRACE = "5eed" * 8
RUBRICS = ("helpfulness@v1", "groundedness@v1")
RETRIEVAL = [{"doc": "Reset your password under Settings > Security."}]


@pytest.fixture
def real416():
    emu = LangfuseEmulator(public_key=PK, secret_key=SK, release="4.16")
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def rt(settings, redis_client, real416):
    return hand_built_runtime(settings, redis_client, langfuse_base_url=real416.base_url)


def load(emu, *, output=None, input=None, metadata=None) -> str:
    """One trace whose root carries these raw values (as stored by the application)."""
    observations = one_trace(TRACE, "placeholder", retrieval=RETRIEVAL)
    root = observations[0]
    if output is not None:
        root["output"] = output
    if input is not None:
        root["input"] = input
    if metadata is not None:
        root["metadata"] = metadata
    emu.load_observations(observations)
    return TRACE


def judge_both(rt, emu, judge_emu) -> tuple[dict, list[dict]]:
    """Both rubrics' jobs of the trace, each told of the other (the shared read); every outcome
    scored or unscored with a reason; the judge requests all valid UTF-8."""
    seen = spy_on(judge_emu)
    outcomes = {}
    for key in RUBRICS:
        siblings = [k for k in RUBRICS if k != key]
        outcome = judge_one(rt, TRACE, key, siblings)  # returns: a raise would be a retry
        assert outcome.status in ("scored", "unscored"), outcome
        assert outcome.status == "scored" or outcome.reason in ("no_output", "not_applicable", "truncated"), outcome
        outcomes[key] = outcome
    for body in seen:
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    assert emu.drain_scores()
    assert emu.violations() == []
    return outcomes, seen


def judged_text(seen: list[dict]) -> str:
    return "\n".join(json.dumps(body, ensure_ascii=False) for body in seen)


def score(emu) -> dict:
    [found] = [s for s in emu.scores() if s["name"] == "helpfulness"]
    return found


def test_lone_surrogates_in_the_output_are_judged_as_replacement_characters(rt, real416, judge_emu):
    # what a JS app stores: JSON.stringify escapes the lone surrogates it cut an emoji into
    load(real416, output='{"role":"assistant","content":"R\\udcc3sum\\udca9 of the \\ud800 ticket: '
                         'caf\\udce9 closed. [[quality:0.70]]"}')
    outcomes, seen = judge_both(rt, real416, judge_emu)
    assert outcomes["helpfulness@v1"].status == "scored"
    assert "R\ufffdsum\ufffd of the \ufffd ticket: caf\ufffd closed." in judged_text(seen)
    assert score(real416)["traceId"] == TRACE


def test_lone_surrogates_in_the_input_are_judged_as_replacement_characters(rt, real416, judge_emu):
    load(real416, input='[{"role":"user","content":"How do I reset my p\\udcc3ssword \\ud83d?"}]',
         output='{"role":"assistant","content":"Settings > Security. [[quality:0.90]]"}')
    outcomes, seen = judge_both(rt, real416, judge_emu)
    assert outcomes["helpfulness@v1"].status == "scored"
    assert "How do I reset my p\ufffdssword \ufffd?" in judged_text(seen)


def test_a_lone_surrogate_in_a_metadata_key_and_value_is_replaced(rt, real416, judge_emu):
    # metadata is an object in the reply: the surrogates arrive as JSON escapes in the reply itself
    load(real416, metadata={"tenant": "acme\udcc3", "fe\udcc3ture": "support-chat", "\ud800": "x"},
         output={"role": "assistant", "content": "Settings > Security. [[quality:0.80]]"})
    outcomes, _ = judge_both(rt, real416, judge_emu)
    assert outcomes["helpfulness@v1"].status == "scored"
    written = score(real416)
    assert written["metadata"]["tenant"] == "acme\ufffd"  # the segment, as the drift cells count it
    confirm_all(rt)  # read back: the score enters the drift cells, whose Redis keys name the segment
    assert any("tenant=acme\ufffd" in key.decode() for key in rt.redis.keys("*"))


@pytest.mark.parametrize("output", [
    '{"role":"assistant","content":"A NUL \\u0000 inside JSON text. [[quality:0.75]]"}',
    "A NUL \x00 in plain stored text. [[quality:0.75]]",
], ids=["escaped-in-json", "raw-in-text"])
def test_nul_characters_are_judged_as_replacement_characters(rt, real416, judge_emu, output):
    load(real416, output=output)
    outcomes, seen = judge_both(rt, real416, judge_emu)
    assert outcomes["helpfulness@v1"].status == "scored"
    assert "\x00" not in judged_text(seen) and "\\u0000" not in judged_text(seen)


@pytest.mark.parametrize("output", [
    '{"role":"assistant","content":"an invalid \\x41 escape and \\udcc3 [[quality:0.65]]"}',  # not JSON
    '{"role":"assistant","content":"cut off mid-JSON, R\\udcc3sum [[quality:0.65]]',  # unterminated
    "plain text with a lone surrogate R\udcc3sum [[quality:0.65]]",  # stored as is, not JSON
    '"a JSON string \\ud800 [[quality:0.65]]"',  # JSON, but a string
], ids=["invalid-escape", "unterminated", "plain-text", "json-string"])
def test_text_that_is_not_json_is_judged_as_text(rt, real416, judge_emu, output):
    load(real416, output=output)
    outcomes, seen = judge_both(rt, real416, judge_emu)
    assert outcomes["helpfulness@v1"].status == "scored"
    assert "[[quality:0.65]]" in judged_text(seen)
    assert score(real416)["value"] == 4  # the quality hint was read: the text reached the judge


def test_a_huge_output_with_lone_surrogates_is_cut_and_judged(rt, real416, judge_emu):
    filler = "lorem ipsum \\udcc3 dolor " * 150_000  # 3.6 M characters of JSON text
    load(real416, output='{"role":"assistant","content":"\\ud800 Here is the log: ' + filler + ' [[quality:0.60]]"}')
    outcomes, seen = judge_both(rt, real416, judge_emu)
    assert outcomes["helpfulness@v1"].status == "scored"
    assert score(real416)["metadata"]["truncated_chars"] > 1_000_000
    assert "\ufffd Here is the log" in judged_text(seen)


def test_json_nested_too_deep_is_judged_without_crashing(rt, real416, judge_emu):
    deep = "[" * (MAX_DEPTH + 50) + "]" * (MAX_DEPTH + 50)  # decodes, but deeper than is kept
    load(real416, output='{"role":"assistant","content":"Fine. [[quality:0.70]]","tree":' + deep + "}")
    outcomes, _ = judge_both(rt, real416, judge_emu)
    assert outcomes["helpfulness@v1"].status == "scored"
    undecodable = "[" * 100_000 + "]" * 100_000  # too deep for Python's json at all: kept as text
    real416.reset()
    load(real416, output=undecodable + " [[quality:0.70]]")
    rt.redis.flushdb()
    outcome = judge_one(rt, TRACE, "helpfulness@v1")
    assert outcome.status == "scored" or outcome.reason, outcome


def test_the_reader_cleans_at_the_boundary(rt, real416):
    """What the reader hands on encodes, in the trace read and its shared copy alike."""
    from worker.langfuse_io.shared_traces import trace_from_json, trace_to_json

    load(real416, output='{"content":"R\\udcc3sum","k\\udcc3":{"deep":' + "[" * 300 + "]" * 300 + "}}",
         metadata={"tenant": "a\udcc3", "k\ud800": "v"})
    trace = rt.traces.reader.fetch(TRACE, ("retrieval",))
    assert trace.output["content"] == "R\ufffdsum"
    assert trace.metadata == {"tenant": "a\ufffd", "k\ufffd": "v"}
    assert TOO_DEEP in json.dumps(trace.output["k\ufffd"], ensure_ascii=False)
    assert trace_from_json(trace_to_json(trace)) == trace
