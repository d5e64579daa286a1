"""The judges read the provider's answer as plain JSON through the real SDKs (with_raw_response):
a 2xx whose body is not a JSON object ends the trace unscored with the reason, never a crash."""
from __future__ import annotations

import http.server
import threading

import pytest

from worker.errors import Unscored
from worker.judges.anthropic_judge import AnthropicJudge
from worker.judges.base import JudgeRequest
from worker.judges.openai_judge import OpenAIJudge

REQUEST = JudgeRequest(model="claude-sonnet-4-6", max_tokens=50, system="Grade it.", user="Q: hi\nA: hello",
                       schema={"type": "object", "properties": {"reasoning": {"type": "string"},
                                                                "score": {"type": "integer"}}},
                       tool_name="record_verdict", tool_description="Record the verdict.")


@pytest.fixture
def server():
    """A server answering every POST with ``body`` and ``content_type`` (set by the test)."""
    answer = {"body": b"", "content_type": "text/html"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-type", answer["content_type"])
            self.send_header("content-length", str(len(answer["body"])))
            self.end_headers()
            self.wfile.write(answer["body"])

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", answer
    httpd.shutdown()


def _judges(url):
    return [AnthropicJudge("test-key", url, 5), OpenAIJudge("test-key", url + "/v1", 5)]


@pytest.mark.parametrize("body, content_type", [(b"<html><body>Bad gateway</body></html>", "text/html"),
                                                (b'["not", "an", "object"]', "application/json"),
                                                (b'{"id": "cut off', "application/json")])
def test_a_2xx_that_is_not_a_json_object_is_unscored_with_the_reason(server, body, content_type):
    url, answer = server
    answer.update(body=body, content_type=content_type)
    for judge in _judges(url):
        with pytest.raises(Unscored) as caught:
            judge.ask(REQUEST)
        assert caught.value.reason == "unparseable"
        assert "not a JSON object" in caught.value.detail and "HTTP 200" in caught.value.detail


def test_a_plain_json_answer_is_read_without_the_sdk_models(server):
    url, answer = server
    answer.update(content_type="application/json", body=(
        b'{"id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6", "stop_reason": "tool_use",'
        b' "content": [{"type": "tool_use", "id": "t1", "name": "record_verdict", "input": {"reasoning": "ok", "score": 4},'
        b' "caller": null}], "usage": {"input_tokens": 12, "output_tokens": 5, "cache_read_input_tokens": 3}}'))
    anthropic_reply = AnthropicJudge("test-key", url, 5).ask(REQUEST)
    assert anthropic_reply.verdict == {"reasoning": "ok", "score": 4}
    assert (anthropic_reply.usage.input_tokens, anthropic_reply.usage.output_tokens,
            anthropic_reply.usage.cache_read_tokens) == (12, 5, 3)
    assert "caller" not in anthropic_reply.assistant_turn["content"][0]  # nulls dropped, as the SDK's dump did
    answer.update(body=(  # the OpenAI chain starts at json_schema: the verdict is the message's content
        b'{"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-5", "choices": [{"index": 0,'
        b' "finish_reason": "stop", "message": {"role": "assistant", "refusal": null,'
        b' "content": "{\\"reasoning\\": \\"ok\\", \\"score\\": 2}"}}],'
        b' "usage": {"prompt_tokens": 40, "completion_tokens": 6, "prompt_tokens_details": {"cached_tokens": 30}}}'))
    openai_reply = OpenAIJudge("test-key", url + "/v1", 5).ask(REQUEST)
    assert openai_reply.verdict == {"reasoning": "ok", "score": 2}
    assert (openai_reply.usage.input_tokens, openai_reply.usage.cache_read_tokens) == (10, 30)
