"""Trace content is untrusted: its budget, encoding, missing output and selection into the prompt.
The injection vectors (fake tags, instructions, template syntax, role markers) are tested once, in
tests/test_injection.py."""
import json

import pytest

from tests.helpers import REPO
from worker.errors import Unscored
from worker.judging.prompt import render
from worker.judging.variables import as_text, map_variables, select, truncate
from worker.langfuse_io.traces import Trace
from worker.rubrics.rubric import load_rubrics

RUBRICS = load_rubrics(REPO / "rubrics")


def trace(output, input_=None, observations=()):
    return Trace("t", "support-chat", "production", None,
                 input_ if input_ is not None else [{"role": "user", "content": "How do I reset my password?"}],
                 output, {}, [], list(observations))


def prompt_for(output, rubric="helpfulness@v1", **kw):
    variables, hygiene = map_variables(trace(output, **kw), RUBRICS[rubric], 12000)
    return render(RUBRICS[rubric], variables).user, hygiene


def test_huge_output_is_cut_to_budget_with_a_visible_marker():
    user, hygiene = prompt_for({"role": "assistant", "content": "x" * 2_000_000})
    assert len(user) < 20_000
    assert "characters truncated by tracejudge" in user
    assert hygiene.truncated_chars > 1_900_000


def test_non_utf8_text_is_made_valid():
    text = as_text("bad \udcff bytes \ud800 here")
    text.encode("utf-8")  # would raise on a lone surrogate
    assert "bad" in text and "here" in text


def test_missing_output_is_unscored_not_a_score():
    with pytest.raises(Unscored) as err:
        prompt_for(None)
    assert err.value.reason == "no_output"


def test_json_path_selection_into_chat_messages():
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
    assert select(messages, "$[-1].content") == "q2"
    assert select(messages, "$[?(@.role=='user')].content") == ["q1", "q2"]
    assert select({"a": {"b": [1, 2]}}, "$.a.b[0]") == 1
    assert select({"a": 1}, "$['a']") == 1


def test_groundedness_reads_the_retrieval_observation():
    docs = [{"doc_id": "d1", "text": "Reset via Settings > Security."}]
    user, _ = prompt_for({"role": "assistant", "content": "Go to Settings."}, rubric="groundedness@v1",
                         observations=[{"name": "retrieval", "output": docs}])
    assert "Reset via Settings > Security." in user
    assert json.loads(json.dumps(docs))  # sanity: docs are JSON, rendered as text


def test_truncate_keeps_head_and_tail():
    out, cut = truncate("a" * 100 + "b" * 100, 50)
    assert out.startswith("a") and out.endswith("b") and cut == 150
