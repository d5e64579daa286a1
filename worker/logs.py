"""Structured JSON logs, configured in one place.

Every line logged while a job runs carries its trace_id, rubric and rubric_version (a context
variable set around the job, see ``job_context``), whoever logs it: our code, the SDKs,
dramatiq itself. Secrets never reach a log line: settings hide them from repr, the configured
secret values are registered here, and they and known key shapes are masked on the way out.
"""
from __future__ import annotations

import base64
import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import TextIO, TypedDict
from urllib.parse import urlparse

from worker import process_state
from worker.jobs import RubricKey, Subject
from worker.settings import Settings

_SECRET = re.compile(r"(sk-lf-[\w-]+|pk-lf-[\w-]+|sk-ant-[\w-]+|sk-[A-Za-z0-9_-]{16,})")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JobFields(TypedDict):
    """What every log line of a job carries (``job_context``)."""

    trace_id: str  # the job's subject as its message carries it: a trace id, or an @observation/@session subject
    rubric: str
    rubric_version: int | None


_JOB: contextvars.ContextVar[JobFields | None] = contextvars.ContextVar("tracejudge_job", default=None)
_SECRETS: process_state.Slot[set[str]] = process_state.slot("log_secrets", set)
_MIN_SECRET_CHARS = 6  # shorter values would mask ordinary words


def register_secrets(*values: str | None) -> None:
    """Mask these exact values (configured keys, webhook URLs) wherever they appear in a log line."""
    for value in values:
        if value and len(value) >= _MIN_SECRET_CHARS:
            with _SECRETS.lock:
                _SECRETS.value.add(value)
                _SECRETS.value.add(json.dumps(value)[1:-1])  # as it appears inside a JSON string


def register_settings_secrets(settings: Settings) -> None:
    register_secrets(settings.langfuse_secret_key, settings.anthropic_api_key, settings.openai_api_key,
                     settings.alert_webhook_url, settings.slack_webhook_url, settings.pagerduty_routing_key,
                     urlparse(settings.redis_url).password)
    if settings.langfuse_public_key and settings.langfuse_secret_key:
        # the HTTP Basic credentials the SDK sends, should a request header ever be logged
        register_secrets(base64.b64encode(
            f"{settings.langfuse_public_key}:{settings.langfuse_secret_key}".encode()).decode())


def mask(text: str) -> str:
    for secret in sorted(_SECRETS.value, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "[secret]")
    return _SECRET.sub(lambda m: m.group(0)[:6] + "…", text)


@contextlib.contextmanager
def job_context(subject: Subject | str, rubric_key: str) -> Iterator[None]:
    """Tag every log line of this thread with the job's subject and rubric until the block ends."""
    token = _JOB.set(job_fields(subject, rubric_key))
    try:
        yield
    finally:
        _JOB.reset(token)


def job_fields(subject: Subject | str, rubric_key: str) -> JobFields:
    """``subject``: the job's first argument (or its Subject), logged as ``trace_id``."""
    key = RubricKey.parse(rubric_key)
    return {"trace_id": str(subject), "rubric": key.name, "rubric_version": key.version or None}


def set_job(fields: JobFields | None) -> contextvars.Token[JobFields | None]:
    return _JOB.set(fields)


def reset_job(token: contextvars.Token[JobFields | None]) -> None:
    _JOB.reset(token)


def _masked(value: object) -> object:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {"ts": round(time.time(), 3), "level": record.levelname.lower(),
                                    "logger": record.name, "event": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        # The job's own fields win over a caller's ``rubric="name@v1"``: one shape on every line.
        entry.update(_JOB.get() or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # Masked before and after encoding: JSON escaping could otherwise split a secret.
        return mask(json.dumps(_masked(entry), default=lambda v: mask(str(v))))


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The HTTP clients log a line per request at INFO (the judge SDKs' vendored httpx2/httpcore2
    # too): at fleet rates that is most of the log and a lock every thread queues on.
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "anthropic", "openai", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
