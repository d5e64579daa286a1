"""`rubrics render --file`: the exact prompt for a hand-written trace, no Langfuse keys needed,
and a one-line error (never a traceback) for a file that is not a trace."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from worker.cli.main import main

ENV = {"LANGFUSE_PUBLIC_KEY": "", "LANGFUSE_SECRET_KEY": "", "TRACEJUDGE_MAX_VARIABLE_CHARS": "300"}


def render(tmp_path, content: str, *extra):
    path = tmp_path / "trace.json"
    path.write_text(content)
    return CliRunner().invoke(main, ["rubrics", "render", "helpfulness", "--file", str(path), *extra], env=ENV)


def test_render_shows_the_prompt_with_settings_applied_and_no_langfuse_keys(test_rubrics, tmp_path):
    trace = {"input": [{"role": "user", "content": "Mail me at ann@example.com"}],
             "output": {"content": "Sure. " + "x" * 2000}}
    result = render(tmp_path, json.dumps(trace), "--dir", str(test_rubrics))
    assert result.exit_code == 0, result.output
    assert "[EMAIL]" in result.output and "ann@example.com" not in result.output  # redaction on by default
    assert "characters truncated by tracejudge" in result.output  # TRACEJUDGE_MAX_VARIABLE_CHARS=300 honoured
    assert "# output schema (tool record_verdict)" in result.output


@pytest.mark.parametrize("content, message", [("{not json", "not a JSON trace"),
                                              ("[1, 2]", "a trace must be a JSON object"),
                                              ('{"observations": {"a": 1}}', "'observations' must be a list")])
def test_render_refuses_a_file_that_is_not_a_trace_in_one_line(test_rubrics, tmp_path, content, message):
    result = render(tmp_path, content, "--dir", str(test_rubrics))
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_the_author_tools_register_the_keys_they_hold_for_masking(test_rubrics, tmp_path):
    from worker import logs
    from worker.judges import api_key_for
    from worker.rubrics.judge_spec import JudgeSpec
    from worker.settings import Settings

    key = "judge-key-only-the-render-test-knows-1234"
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"input": "q", "output": "a"}))
    result = CliRunner().invoke(main, ["rubrics", "render", "helpfulness", "--file", str(path)],
                                env={**ENV, "ANTHROPIC_API_KEY": key})
    assert result.exit_code == 0, result.output
    assert logs.mask(f"calling with {key}") == "calling with [secret]"
    named = "a-self-hosted-judge-key-named-by-a-rubric-5678"
    spec = JudgeSpec("openai-compatible", "m", base_url="http://h/v1", api_key_env="LOCAL_KEY")
    assert api_key_for(spec, Settings.for_author_tools(test_rubrics, {"LOCAL_KEY": named})) == named
    assert logs.mask(named) == "[secret]"
