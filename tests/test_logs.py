"""Structured JSON logs: every line of a job names its trace, rubric and version, and no secret
ever reaches a log line, not even from a job failing on bad credentials."""
from __future__ import annotations

import io
import json
import logging

import dramatiq
import pytest

from tests.helpers import hand_built_runtime, installed, make_env, one_trace, wait_until
from worker import logs
from worker.fleet.broker import build_broker
from worker.fleet.queues import queue_depth
from worker.jobs import judge_message
from worker.judging.pipeline import judge_one
from worker.settings import Settings

SECRETS = {"LANGFUSE_SECRET_KEY": "sk-lf-0000-wrong-secret-value",
           "ANTHROPIC_API_KEY": "sk-ant-api03-xyz-very-secret",
           "OPENAI_API_KEY": "plain-openai-secret-without-prefix",
           "TRACEJUDGE_SLACK_WEBHOOK_URL": "https://hooks.slack.example/services/T000/B000/secretpath"}


@pytest.fixture
def captured():
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure_logging(stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_registered_secrets_and_key_shapes_are_masked_in_message_fields_and_tracebacks(captured):
    logs.register_secrets("a-plain-secret-token")
    log = logging.getLogger("tracejudge.test")
    try:
        raise RuntimeError("auth failed for a-plain-secret-token and sk-ant-api03-abcdef")
    except RuntimeError:
        log.exception("call failed with key %s", "sk-lf-1234-5678", extra={"headers": {"x-api-key": "a-plain-secret-token"}})
    text = captured.getvalue()
    assert "a-plain-secret-token" not in text and "sk-ant-api03-abcdef" not in text and "sk-lf-1234-5678" not in text
    entry = lines(captured)[0]
    assert entry["headers"] == {"x-api-key": "[secret]"} and "RuntimeError" in entry["exc"]


def test_lines_logged_inside_a_job_carry_its_trace_rubric_and_version_whoever_logs_them(captured):
    with logs.job_context("trace-abc", "helpfulness@v3"):
        logging.getLogger("some.library").warning("slow response")
        logging.getLogger("tracejudge.pipeline").info("unscored", extra={"rubric": "helpfulness@v3"})
    logging.getLogger("tracejudge.scheduler").info("outside any job")
    inside, also_inside, outside = lines(captured)
    for entry in (inside, also_inside):
        assert (entry["trace_id"], entry["rubric"], entry["rubric_version"]) == ("trace-abc", "helpfulness", 3)
    assert "trace_id" not in outside


def test_a_job_failing_on_bad_credentials_never_logs_a_secret(
        langfuse_emu, judge_emu, redis_url, redis_client, test_rubrics, captured):
    langfuse_emu.load_observations(one_trace("trace-auth", "Reset it under Settings."))
    env = make_env(langfuse_emu, judge_emu, redis_url, test_rubrics, TRACEJUDGE_MAX_JOB_RETRIES=0, **SECRETS)
    settings = Settings.from_env(env)
    logs.register_settings_secrets(settings)  # as worker/fleet/boot.py does at start-up
    with installed(hand_built_runtime(settings, redis_client)):
        broker = build_broker(settings)
        dramatiq.set_broker(broker)
        worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
        worker.start()
        try:
            broker.enqueue(judge_message("trace-auth", "helpfulness@v1"))
            wait_until(lambda: queue_depth(redis_client).delayed == 1, 30, "the job to wait out the open breaker",
                       interval=0.05)
        finally:
            worker.stop()
            broker.close()
    # A 401 from Langfuse cannot heal per job: the Langfuse breaker opens and the job waits
    # (issue 11), neither dead-lettered nor retried into the ground.
    depth = queue_depth(redis_client)
    assert depth.delayed == 1 and depth.dead == 0
    text = captured.getvalue()
    for value in SECRETS.values():
        assert value not in text
    opened = [e for e in lines(captured) if e["event"].startswith("circuit opened")]
    assert opened and "401" in opened[0]["reason"]
    job_lines = [e for e in lines(captured) if e.get("trace_id")]
    assert opened[0] in job_lines  # the line about the job names the job
    for entry in job_lines:
        assert (entry["trace_id"], entry["rubric"], entry["rubric_version"]) == ("trace-auth", "helpfulness", 1)


def test_a_judged_trace_logs_no_line_per_http_request(settings, runtime, langfuse_emu, captured):
    langfuse_emu.load_observations(one_trace("b" * 32, "Reset it under Settings."))
    assert judge_one(runtime, "b" * 32, "helpfulness@v1").status == "scored"
    # three HTTP requests (trace read, judge call, score write) and not one log line for them
    assert not [e for e in lines(captured) if "HTTP Request" in e["event"] or e["logger"].startswith(("httpx", "httpcore"))]
