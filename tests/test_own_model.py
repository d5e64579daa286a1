"""Judging with your own model: per-rubric OpenAI-/Anthropic-compatible endpoints, the
structured-output fallback chain (learned once, in Redis), served-model pinning, user prices,
and every prompt file inside a released version's hash. Real SDKs against the judge emulator,
made as harsh as the real servers (llama-cpp-python's 500 on json_schema, llama-server without
--jinja, /v1/messages dropping output_config)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import shutil

import anthropic.types as at
import pytest
import yaml

from emulators.judge_api import JudgeEmulator
from tests.helpers import copy_rubrics, REPO, hand_built_runtime, one_trace, spy_on
from worker.accounting.pricing import PriceTable, check_priced, cost_usd, price_table, use_price_file
from worker.authoring.lint import lint
from worker.errors import ConfigError, Unscored
from worker.judges import ModeMemory, build_judge, judge_key
from worker.judges.base import Usage
from worker.judges.identity import check_identity, describe_server, verify_served_model
from worker.judges.structured import MEMORY_KEY
from worker.cli.status import render_text, status_report
from worker.judging.pipeline import ask_and_parse, judge_one
from worker.judging.outcome import Tally
from worker.judging.prompt import render
from worker.rubrics.judge_spec import REASONING_MAX_TOKENS, JudgeSpec
from worker.rubrics.rubric import SHARED_PROMPTS, load_rubrics

TODAY = dt.date(2026, 12, 1)
LOCAL_MODEL = "smollm2-135m-instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def local_emu():
    """A second judge server: the team's own, self-hosted."""
    emu = JudgeEmulator()
    emu.start()
    yield emu
    emu.stop()


def point_at(root, name: str, judge: dict) -> None:
    meta_path = root / name / "v1" / "rubric.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["judge"] = judge
    meta_path.write_text(yaml.safe_dump(meta, sort_keys=False))


def local_judge(emu, protocol: str = "openai", **extra) -> dict:
    base = emu.base_url + ("/v1" if protocol == "openai" else "")
    return {"provider": f"{protocol}-compatible", "base_url": base, "model": LOCAL_MODEL,
            "identity": {"tag": GGUF}, "max_tokens": 512, **extra}


def spec_of(emu, protocol: str = "openai") -> JudgeSpec:
    j = local_judge(emu, protocol)
    return JudgeSpec(j["provider"], j["model"], 512, base_url=j["base_url"], identity=("tag", GGUF))


def rubric_for(tmp_path, emu, protocol="openai"):
    root = copy_rubrics(tmp_path, "helpfulness")
    point_at(root, "helpfulness", local_judge(emu, protocol))
    return load_rubrics(root)["helpfulness@v1"]


def ask(judge, rubric, answer="Open Settings > Security. [[quality:0.8]]"):
    request = render(rubric, variables_of(rubric, answer))
    return ask_and_parse(judge, rubric, request, Tally())[0]


def variables_of(rubric, answer="fine"):
    return {v.name: answer if v.name == "answer" else "How do I reset my password?" for v in rubric.variables}


# -- rubric.yaml ----------------------------------------------------------------------------------

def test_compatible_endpoints_parse_with_base_url_key_variable_and_identity(tmp_path, local_emu):
    rubric = rubric_for(tmp_path, local_emu)
    assert rubric.judge.protocol == "openai" and rubric.judge.self_hosted
    assert rubric.judge.identity == ("tag", GGUF)
    assert judge_key(rubric) == f"openai@{local_emu.base_url.split('//')[1]}/v1:{LOCAL_MODEL}"
    assert judge_key(dataclasses.replace(rubric, judge=JudgeSpec("openai", "gpt-4.1-2025-04-14"))) \
        == "openai:gpt-4.1-2025-04-14"


@pytest.mark.parametrize("judge, message", [
    ({"provider": "openai-compatible", "model": "m", "identity": {"tag": "t"}}, "judge.base_url is required"),
    ({"provider": "openai-compatible", "model": "m", "base_url": "http://h/v1", "api_key_env": "sk-abc123-secret",
      "identity": {"tag": "t"}}, "NAME of an environment variable"),
    ({"provider": "openai-compatible", "model": "m", "base_url": "http://h/v1", "identity": {"tag": "t"},
      "mode": "batch"}, "batch needs a hosted provider"),
    ({"provider": "openai-compatible", "model": "m", "base_url": "http://h/v1", "identity": {"sha": "x"}},
     "exactly one of digest, tag or revision"),
    ({"provider": "openai", "model": "gpt-4.1-2025-04-14", "base_url": "http://h/v1"}, "judge.base_url is for"),
    ({"provider": "openai-compatible", "model": "m", "base_url": "http://h/v1"}, "declares no judge.identity"),
])
def test_lint_names_each_judge_mistake(tmp_path, judge, message):
    root = copy_rubrics(tmp_path, "helpfulness")
    point_at(root, "helpfulness", judge)
    report = lint(root, today=TODAY, allow_floating_models=True)
    errors = [f"{p.path}:{p.line}: {p.message}" for p in report.errors]
    assert any(message in e and "rubric.yaml:" in e for e in errors), errors
    assert not any("sk-abc123-secret" in e for e in errors)  # a key pasted by mistake is never echoed


def test_reasoning_models_default_to_room_for_their_reasoning(tmp_path):
    root = copy_rubrics(tmp_path, "helpfulness")
    point_at(root, "helpfulness", {"provider": "openai", "model": "gpt-5-2025-08-07"})
    assert load_rubrics(root)["helpfulness@v1"].judge.max_tokens == REASONING_MAX_TOKENS
    point_at(root, "helpfulness", {"provider": "openai", "model": "gpt-4.1-2025-04-14"})
    assert load_rubrics(root)["helpfulness@v1"].judge.max_tokens == 1024


# -- prices -----------------------------------------------------------------------------------------

def test_a_user_price_table_is_merged_over_the_shipped_one_and_zero_is_a_price(tmp_path):
    user = tmp_path / "prices.json"
    user.write_text(json.dumps({LOCAL_MODEL: {"input": 0, "output": 0},
                                "gpt-4.1-2025-04-14": {"input": 1.0, "output": 2.0}}))
    with pytest.raises(ConfigError, match="no price"):
        check_priced(LOCAL_MODEL)  # the shipped table (the process's prices are reset around every test)
    use_price_file(user)
    check_priced(LOCAL_MODEL)
    assert cost_usd(LOCAL_MODEL, Usage(1000, 1000)) == 0
    assert cost_usd("gpt-4.1-2025-04-14", Usage(1_000_000, 1_000_000)) == 3  # the user's row wins
    assert "claude-sonnet-4-6" in price_table()  # the shipped rows stay
    table = PriceTable(user)  # the table a Runtime builds and keeps, the same figures without the process's
    assert table.cost_usd(LOCAL_MODEL, Usage(1000, 1000)) == 0 and table.user_file == user
    with pytest.raises(ConfigError) as err:
        table.check_priced("a-model-nobody-priced")
    assert str(user) in str(err.value)  # names the file to edit


def test_lint_names_the_price_file_to_edit(tmp_path, local_emu):
    root = copy_rubrics(tmp_path, "helpfulness")
    point_at(root, "helpfulness", local_judge(local_emu))
    errors = [p.message for p in lint(root, today=TODAY).errors]
    assert any("no price" in e and str(root / "prices.json") in e for e in errors), errors
    (root / "prices.json").write_text(json.dumps({LOCAL_MODEL: {"input": 0, "output": 0}}))
    assert not [p for p in lint(root, today=TODAY).errors if "rubric.yaml" in p.path], \
        [p.message for p in lint(root, today=TODAY).errors]


# -- every prompt text is in a version's hash -------------------------------------------------------

@pytest.mark.parametrize("shared", SHARED_PROMPTS)
def test_editing_a_shared_prompt_fails_lint_naming_the_file(tmp_path, shared):
    root = copy_rubrics(tmp_path, "helpfulness")
    shutil.copy(REPO / "rubrics" / "rubrics.lock", root / "rubrics.lock")
    before = load_rubrics(root)["helpfulness@v1"].sha256
    assert not [p for p in lint(root, today=TODAY).errors if "helpfulness@v1" in p.message]
    (root / shared).write_text((root / shared).read_text() + "Be generous.\n")
    assert load_rubrics(root)["helpfulness@v1"].sha256 != before  # the score's rubric_sha256 moves too
    errors = [p.message for p in lint(root, today=TODAY).errors if "helpfulness@v1" in p.message]
    assert errors and f"changed: {root / shared}" in errors[0], errors


def test_a_version_with_its_own_copy_is_not_affected_by_the_shared_file(tmp_path):
    root = copy_rubrics(tmp_path, "helpfulness")
    shutil.copy(root / "repair.j2", root / "helpfulness" / "v1" / "repair.j2")
    before = load_rubrics(root)["helpfulness@v1"].sha256
    (root / "repair.j2").write_text("Try harder.\n")
    assert load_rubrics(root)["helpfulness@v1"].sha256 == before


# -- the structured-output chain --------------------------------------------------------------------

def test_a_500_naming_json_schema_falls_back_to_a_tool_once_for_the_fleet(tmp_path, local_emu, settings,
                                                                          redis_client):
    local_emu.configure(openai_json_schema=False, openai_json_schema_status=500)  # llama-cpp-python
    rubric = rubric_for(tmp_path, local_emu)
    judge = build_judge(rubric.judge, settings, memory=ModeMemory(redis_client))
    sent = spy_on(local_emu)
    verdict = ask(judge, rubric)
    # Asked once with the schema (refused with the 500), then answered through the forced tool.
    assert [b.get("response_format", {}).get("type") for b in sent] == ["json_schema", None]
    assert sent[-1]["tool_choice"]["function"]["name"] == sent[-1]["tools"][0]["function"]["name"]
    assert 1 <= verdict.raw_score <= 5
    assert redis_client.hget(MEMORY_KEY, judge_key(rubric)) == b"tool"
    # Another process of the fleet starts on the learned mode: no json_schema request at all.
    before = local_emu.stats()["total_requests"]
    other = build_judge(rubric.judge, settings, memory=ModeMemory(redis_client))
    assert other.chain.current == "tool"
    ask(other, rubric)
    assert local_emu.stats()["total_requests"] == before + 1
    # and `tracejudge status` says which mode the endpoint settled on
    report = status_report(settings, redis_client, {})
    assert report["structured_output"] == {judge_key(rubric): "tool"}
    assert f"structured output: {judge_key(rubric)} falls back to tool" in render_text(report)


def test_without_schema_or_tools_json_mode_carries_the_schema_in_the_prompt(tmp_path, local_emu, settings):
    local_emu.configure(openai_json_schema=False, openai_json_schema_status=500, openai_tools=False)
    rubric = rubric_for(tmp_path, local_emu)
    judge = build_judge(rubric.judge, settings, memory=ModeMemory())
    verdict = ask(judge, rubric)
    assert judge.chain.current == "json_object" and 1 <= verdict.raw_score <= 5
    params = judge.request_params(render(rubric, variables_of(rubric)))
    assert params["response_format"] == {"type": "json_object"}
    assert '"reasoning"' in params["messages"][-1]["content"]  # rubrics/json_answer.j2, schema included


def test_a_500_that_names_no_parameter_is_a_server_error_not_a_fallback(tmp_path, local_emu, settings):
    rubric = rubric_for(tmp_path, local_emu)
    judge = build_judge(rubric.judge, settings, memory=ModeMemory())
    request = render(rubric, variables_of(rubric, "fine [[judge:500]]"))
    with pytest.raises(Exception) as caught:
        judge.ask(request)
    assert getattr(caught.value, "status_code", None) == 500 and judge.chain.current == "json_schema"


@pytest.mark.parametrize("tools, output_config, settles_on", [
    ("ignore", True, "output_config"),   # a template without tools: prose instead of the tool call
    ("refuse", False, "json_text"),      # llama-server without --jinja; /v1/messages drops output_config
])
def test_anthropic_protocol_servers_fall_back_too(tmp_path, local_emu, settings, tools, output_config, settles_on):
    local_emu.configure(anthropic_tools=tools, anthropic_output_config=output_config)
    rubric = rubric_for(tmp_path, local_emu, "anthropic")
    judge = build_judge(rubric.judge, settings, memory=ModeMemory())
    verdict = ask(judge, rubric)
    assert judge.chain.current == settles_on and 1 <= verdict.raw_score <= 5


def _message(content: list, stop_reason: str, stop_sequence: str | None = None) -> at.Message:
    """An Anthropic Messages API answer, as the SDK parses it."""
    return at.Message(id="m", type="message", role="assistant", model="x", stop_reason=stop_reason,
                      stop_sequence=stop_sequence, content=content, usage={"input_tokens": 1, "output_tokens": 1})


def test_json_text_mode_prefills_the_object_and_stops_at_its_end(tmp_path, local_emu, settings):
    """A server that honours neither tools nor a schema: the answer is prefilled up to the
    reasoning's value and ends at the first "}" (llama.cpp echoes the prefill and says end_turn;
    the API does neither)."""
    local_emu.configure(anthropic_tools="refuse", anthropic_output_config=False)
    rubric = rubric_for(tmp_path, local_emu, "anthropic")
    judge = build_judge(rubric.judge, settings, memory=ModeMemory())
    ask(judge, rubric)
    assert judge.chain.current == "json_text"
    request = render(rubric, variables_of(rubric))
    params = judge.request_params(request, mode="json_text")
    assert params["messages"][-1] == {"role": "assistant", "content": '{"reasoning": "'}
    assert params["stop_sequences"] == ["}"]

    def reply(text, stop_reason, stop_sequence):
        message = _message([{"type": "text", "text": text}], stop_reason, stop_sequence)
        return judge.reply_from(message, request, mode="json_text")

    assert reply('ok", "score": 4', "stop_sequence", "}").verdict == {"reasoning": "ok", "score": 4}
    assert reply('{"reasoning": "ok", "score": 4', "end_turn", "}").verdict == {"reasoning": "ok", "score": 4}
    # a "}" inside the reasoning cuts the string short: unparseable, never another verdict
    cut = reply('uses {x', "stop_sequence", "}")
    assert cut.verdict is None and cut.problem == "unparseable"


def test_prose_up_to_max_tokens_means_the_mode_was_ignored_but_thinking_does_not(tmp_path, local_emu, settings):
    """A model whose server ignores the forced tool writes prose until max_tokens: that teaches
    the fallback as an unparseable answer does. No text at all (the budget spent reasoning), or
    a tool call cut short, says nothing about the mode."""
    from worker.judges.structured import ignored_mode
    rubric = rubric_for(tmp_path, local_emu, "anthropic")
    judge = build_judge(rubric.judge, settings, memory=ModeMemory())
    request = render(rubric, variables_of(rubric))

    def truncated(*content):
        reply = judge.reply_from(_message(list(content), "max_tokens"), request, mode="tool")
        assert reply.problem == "truncated"
        return ignored_mode(reply, "tool")

    assert truncated({"type": "text", "text": "To reset a password, you must follow specific steps..."})
    assert truncated({"type": "thinking", "thinking": "hmm", "signature": "s"}) is None
    assert truncated({"type": "tool_use", "id": "t", "name": "record_verdict", "input": {}}) is None


def test_a_hosted_judge_that_skips_its_tool_gets_a_repair_not_a_demotion(settings, judge_emu, test_rubrics):
    judge_emu.configure(garbage_rate=1.0)
    rubric = load_rubrics(test_rubrics)["helpfulness@v1"]
    judge = build_judge(rubric.judge, settings, memory=ModeMemory())
    with pytest.raises(Unscored, match="unparseable"):
        ask(judge, rubric)
    assert judge.chain.current == "tool"


# -- pinning a served model ------------------------------------------------------------------------

def test_the_served_model_is_checked_where_the_server_shows_it(tmp_path, local_emu, settings, caplog):
    spec = spec_of(local_emu)
    judge = build_judge(spec, settings)
    local_emu.configure(props={"model_path": f"/models/{GGUF}", "model_alias": LOCAL_MODEL})  # llama.cpp
    verify_served_model(judge, spec)
    local_emu.configure(props={"model_path": "/models/other-model.Q8_0.gguf"})
    with pytest.raises(ConfigError, match="not the pinned tag"):
        verify_served_model(judge, spec)
    local_emu.configure(props=None, served_models=[{"id": LOCAL_MODEL, "object": "model", "owned_by": "x",
                                                     "created": 0, "digest": "sha256:" + "ab" * 32}])
    digest_spec = dataclasses.replace(spec, identity=("digest", "sha256:" + "ab" * 8))
    assert check_identity(digest_spec, describe_server(judge, spec.base_url)) is None  # Ollama-style digest
    with pytest.raises(ConfigError):
        check_identity(dataclasses.replace(spec, identity=("digest", "cd" * 8)), describe_server(judge, spec.base_url))


def test_a_server_listing_several_models_is_checked_on_the_rubrics_model_only(local_emu, settings):
    spec = dataclasses.replace(spec_of(local_emu), identity=("digest", "sha256:" + "ab" * 8))
    judge = build_judge(spec, settings)
    other = {"id": "llama3:8b", "object": "model", "owned_by": "x", "created": 0, "digest": "sha256:" + "ab" * 32}
    mine = {"id": LOCAL_MODEL + ":latest", "object": "model", "owned_by": "x", "created": 0,
            "digest": "sha256:" + "cd" * 32}
    local_emu.configure(props=None, served_models=[other, mine])  # the pinned digest is the *other* model's
    with pytest.raises(ConfigError, match="not the pinned digest"):
        check_identity(spec, describe_server(judge, spec.base_url))
    local_emu.configure(served_models=[other, {**mine, "digest": "sha256:" + "ab" * 32}])
    assert check_identity(spec, describe_server(judge, spec.base_url)) is None


def test_a_server_that_shows_nothing_is_warned_about_once(tmp_path, local_emu, settings, caplog):
    spec = dataclasses.replace(spec_of(local_emu), identity=("revision", "0123abcd"))
    judge = build_judge(spec, settings)
    with caplog.at_level(logging.WARNING, logger="tracejudge.judges"):
        verify_served_model(judge, spec)
        verify_served_model(judge, spec)
    warned = [r for r in caplog.records if "does not say which revision" in r.getMessage()]
    assert len(warned) == 1


# -- one fleet, two endpoints -----------------------------------------------------------------------

def test_one_fleet_judges_one_rubric_locally_and_another_on_the_hosted_api(tmp_path, local_emu, judge_emu, settings,
                                                                           redis_client, langfuse_emu, monkeypatch):
    local_emu.configure(openai_json_schema=False, openai_json_schema_status=500,
                        props={"model_path": f"/m/{GGUF}"})
    root = copy_rubrics(tmp_path, "helpfulness", "groundedness")
    point_at(root, "helpfulness", local_judge(local_emu, api_key_env="LOCAL_JUDGE_KEY"))
    point_at(root, "groundedness", {"provider": "openai", "model": "gpt-4.1-2025-04-14", "max_tokens": 800})
    (root / "prices.json").write_text(json.dumps({LOCAL_MODEL: {"input": 0, "output": 0}}))
    assert not [p for p in lint(root, today=TODAY).errors if "rubric.yaml" in p.path]
    # the key the rubric names, in the environment the settings were read from
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=root,
                            source_env={**settings.source_env, "LOCAL_JUDGE_KEY": "local-secret"})
    trace_id = "c" * 32
    langfuse_emu.load_observations(one_trace(trace_id, "Open Settings > Security. [[quality:0.8]]",
                                             retrieval=[{"text": "Settings > Security resets passwords."}]))
    local_before, hosted_before = local_emu.stats()["total_requests"], judge_emu.stats()["total_requests"]
    assert judge_one(rt, trace_id, "helpfulness@v1").status == "scored"
    assert local_emu.stats()["total_requests"] > local_before and judge_emu.stats()["total_requests"] == hosted_before
    assert judge_one(rt, trace_id, "groundedness@v1").status == "scored"
    assert judge_emu.stats()["total_requests"] == hosted_before + 1
    local, hosted = (rt.judge_for(rt.rubrics[k]) for k in ("helpfulness@v1", "groundedness@v1"))
    assert local.key == judge_key(rt.rubrics["helpfulness@v1"]) != hosted.key == "openai:gpt-4.1-2025-04-14"
    assert local.inner.client.api_key == "local-secret"
