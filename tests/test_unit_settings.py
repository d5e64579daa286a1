import pytest

from worker.errors import ConfigError
from worker.settings import Settings

GOOD = {"LANGFUSE_PUBLIC_KEY": "pk-lf-1", "LANGFUSE_SECRET_KEY": "sk-lf-secret-value"}


def test_defaults_follow_the_contract():
    s = Settings.from_env(GOOD)
    assert s.langfuse_base_url == "https://cloud.langfuse.com"
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.settle_seconds == 600 and s.sample_interval_seconds == 60
    assert s.sample_rate is None


def test_langfuse_host_is_read_when_base_url_is_absent():
    assert Settings.from_env({**GOOD, "LANGFUSE_HOST": "http://lf:3000/"}).langfuse_base_url == "http://lf:3000"
    both = {**GOOD, "LANGFUSE_HOST": "http://a:1", "LANGFUSE_BASE_URL": "http://b:2"}
    assert Settings.from_env(both).langfuse_base_url == "http://b:2"


def test_every_mistake_is_reported_at_once_one_line_each():
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"LANGFUSE_BASE_URL": "not a url", "TRACEJUDGE_SAMPLE_RATE": "1.5",
                           "REDIS_URL": "http://x", "TRACEJUDGE_SETTLE_SECONDS": "soon"})
    text = str(err.value)
    for needle in ("LANGFUSE_PUBLIC_KEY is missing", "LANGFUSE_SECRET_KEY is missing", "LANGFUSE_BASE_URL",
                   "TRACEJUDGE_SAMPLE_RATE=1.5 is out of range", "REDIS_URL", "TRACEJUDGE_SETTLE_SECONDS"):
        assert needle in text


def test_secrets_never_appear_in_repr():
    s = Settings.from_env({**GOOD, "ANTHROPIC_API_KEY": "sk-ant-topsecret"})
    assert "sk-lf-secret-value" not in repr(s) and "sk-ant-topsecret" not in repr(s)


def test_a_key_a_rubric_names_is_read_from_the_environment_the_settings_came_from(monkeypatch):
    monkeypatch.setenv("LOCAL_JUDGE_KEY", "from-the-process")
    for name, value in GOOD.items():
        monkeypatch.setenv(name, value)
    injected = Settings.from_env({**GOOD, "LOCAL_JUDGE_KEY": " from-the-mapping "})
    assert injected.named_secret("LOCAL_JUDGE_KEY") == "from-the-mapping"
    assert Settings.from_env(GOOD).named_secret("LOCAL_JUDGE_KEY") is None  # not the process's
    assert Settings.from_env().named_secret("LOCAL_JUDGE_KEY") == "from-the-process"
    assert "from-the-mapping" not in repr(injected)


def test_log_lines_mask_key_shapes():
    import logging

    from worker.logs import JsonFormatter

    record = logging.LogRecord("x", logging.INFO, "", 0, "key sk-lf-abcdef123456 and sk-ant-api03-zzzzzzzz", None, None)
    line = JsonFormatter().format(record)
    assert "abcdef123456" not in line and "api03-zzzzzzzz" not in line
