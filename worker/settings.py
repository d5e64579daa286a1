"""Typed settings, read once from the environment at start-up and passed down.

Nothing else in tracejudge reads ``os.environ``. Every mistake is reported at once, one line
each, so a operator fixes them in one go.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from worker.errors import ConfigError

_PACKAGED_RUBRICS = Path(__file__).resolve().parent.parent / "rubrics"
_Number = TypeVar("_Number", int, float)
_Default = TypeVar("_Default")


@dataclasses.dataclass(frozen=True)
class Settings:
    langfuse_base_url: str
    langfuse_public_key: str
    langfuse_secret_key: str = dataclasses.field(repr=False)
    redis_url: str = dataclasses.field(default="redis://localhost:6379/0", repr=False)  # may hold a password
    anthropic_api_key: str | None = dataclasses.field(default=None, repr=False)
    anthropic_base_url: str | None = None
    openai_api_key: str | None = dataclasses.field(default=None, repr=False)
    openai_base_url: str | None = None
    rubrics_dir: Path = _PACKAGED_RUBRICS
    sample_rate: float | None = None
    alert_webhook_url: str | None = None
    slack_webhook_url: str | None = dataclasses.field(default=None, repr=False)
    pagerduty_routing_key: str | None = dataclasses.field(default=None, repr=False)
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    # Where trace links in alerts point (the Langfuse UI); defaults to the API base URL.
    langfuse_ui_url: str | None = None
    drift_interval_seconds: int = 86400
    # The sequential detector's false-alarm budget (worker/drift/detection.py): N per cell-year,
    # or N false pages a week across the deployment's cells.
    false_alarms: tuple[float, str] = (1.0, "cell-year")
    settle_seconds: int = 600
    sample_interval_seconds: int = 60
    # The fresh window starts this much before the cursor (clock skew between hosts).
    overlap_seconds: int = 0
    # Late-ingested traces carry a timestamp already behind the cursor. Each (delay, every) pass
    # lists, every `every` seconds, the traces from its own cursor up to now minus `delay`: one
    # listing per trace and pass, so traces ingested up to the longest delay late are judged.
    late_scans: tuple[tuple[int, int], ...] = ((3600, 900), (86400, 21600))
    # Each trace variable is cut to this many characters (head and tail kept, marker between).
    max_variable_chars: int = 12000
    allow_floating_models: bool = False
    langfuse_timeout_seconds: float = 30.0
    judge_timeout_seconds: float = 120.0
    # dramatiq Retries across attempts (each attempt already retried inside by tenacity).
    max_job_retries: int = 8
    # How long a SIGKILLed worker's unacked jobs wait before another worker takes them.
    heartbeat_timeout_seconds: int = 60
    # Emails, phone numbers, card numbers and API keys/tokens are masked before the judge sees them.
    redact_pii: bool = True
    # Fleet-wide limits shared through Redis (None: no limit). Judge limits apply per provider × model.
    judge_requests_per_minute: int | None = None
    judge_tokens_per_minute: int | None = None
    langfuse_requests_per_minute: int | None = None
    # Daily judge spend cap in USD for the whole fleet (None: no cap); rubrics may set their own.
    daily_budget_usd: float | None = None
    # Prometheus metrics of every worker process are served on this port (0: off).
    metrics_port: int = 9191
    # How often batch-mode rubrics' pending batches are polled.
    batch_poll_seconds: int = 60
    # Estimated input tokens per batch (None: no cap): set it under your OpenAI enqueued-token
    # limit for the judge model, or every batch over it fails.
    batch_max_tokens: int | None = None
    # The user's judge price table, merged over the shipped one (None: <rubrics_dir>/prices.json if present).
    prices_file: Path | None = None
    # The environment these settings were read from, for the keys rubrics name (``named_secret``).
    source_env: Mapping[str, str] | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        problems: list[str] = []

        def text(name: str, default: str | None = None) -> str | None:
            value = env.get(name, "").strip()
            return value or default

        def number(name: str, default: _Default, kind: type[_Number], low: float | None = None,
                   high: float | None = None) -> _Number | _Default:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError:
                problems.append(f"{name}={raw!r} is not a {kind.__name__}")
                return default
            if not math.isfinite(value):
                # float() takes "nan" and "inf": a nan rate samples nothing and a nan budget fails every job.
                problems.append(f"{name}={raw!r} is not a finite number")
                return default
            if (low is not None and value < low) or (high is not None and value > high):
                problems.append(f"{name}={raw} is out of range [{low}, {high}]")
                return default
            return value

        def url(name: str, value: str | None, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
            if value is None:
                return None
            parsed = urlparse(value)
            # unix:///path/to/redis.sock names a socket path, not a host
            where = parsed.path if parsed.scheme == "unix" else parsed.netloc
            if parsed.scheme not in schemes or not where:
                problems.append(f"{name}={value!r} is not a valid {'/'.join(schemes)} URL")
            return value.rstrip("/")

        base_url = url(
            "LANGFUSE_BASE_URL",
            text("LANGFUSE_BASE_URL") or text("LANGFUSE_HOST") or "https://cloud.langfuse.com",
        )
        public_key = text("LANGFUSE_PUBLIC_KEY")
        secret_key = text("LANGFUSE_SECRET_KEY")
        if not public_key:
            problems.append("LANGFUSE_PUBLIC_KEY is missing (the project's pk-lf-... key)")
        if not secret_key:
            problems.append("LANGFUSE_SECRET_KEY is missing (the project's sk-lf-... key)")
        redis_url = url("REDIS_URL", text("REDIS_URL", cls.redis_url), ("redis", "rediss", "unix"))

        rubrics_dir = Path(text("TRACEJUDGE_RUBRICS_DIR") or _default_rubrics_dir())
        if not rubrics_dir.is_dir():
            problems.append(f"TRACEJUDGE_RUBRICS_DIR={str(rubrics_dir)!r} is not a directory")

        def boolean(name: str, default: bool) -> bool:
            raw = (text(name) or ("1" if default else "0")).lower()
            if raw not in ("0", "1", "true", "false", "yes", "no"):
                problems.append(f"{name}={raw!r} is not a boolean (1/0, true/false, yes/no)")
                return default
            return raw in ("1", "true", "yes")

        settings = cls(
            langfuse_base_url=base_url or "",
            langfuse_public_key=public_key or "",
            langfuse_secret_key=secret_key or "",
            redis_url=redis_url or cls.redis_url,
            anthropic_api_key=text("ANTHROPIC_API_KEY"),
            anthropic_base_url=url("ANTHROPIC_BASE_URL", text("ANTHROPIC_BASE_URL")),
            openai_api_key=text("OPENAI_API_KEY"),
            openai_base_url=url("OPENAI_BASE_URL", text("OPENAI_BASE_URL")),
            rubrics_dir=rubrics_dir,
            sample_rate=number("TRACEJUDGE_SAMPLE_RATE", None, float, 0.0, 1.0),
            alert_webhook_url=url("TRACEJUDGE_ALERT_WEBHOOK_URL", text("TRACEJUDGE_ALERT_WEBHOOK_URL")),
            slack_webhook_url=url("TRACEJUDGE_SLACK_WEBHOOK_URL", text("TRACEJUDGE_SLACK_WEBHOOK_URL")),
            pagerduty_routing_key=text("TRACEJUDGE_PAGERDUTY_ROUTING_KEY"),
            pagerduty_events_url=url("TRACEJUDGE_PAGERDUTY_EVENTS_URL", text("TRACEJUDGE_PAGERDUTY_EVENTS_URL"))
            or cls.pagerduty_events_url,
            langfuse_ui_url=url("TRACEJUDGE_LANGFUSE_UI_URL", text("TRACEJUDGE_LANGFUSE_UI_URL")),
            drift_interval_seconds=number("TRACEJUDGE_DRIFT_INTERVAL_SECONDS", cls.drift_interval_seconds, int, 60),
            false_alarms=_false_alarms(text("TRACEJUDGE_FALSE_ALARMS"), cls.false_alarms, problems),
            settle_seconds=number("TRACEJUDGE_SETTLE_SECONDS", cls.settle_seconds, int, 0),
            sample_interval_seconds=number(
                "TRACEJUDGE_SAMPLE_INTERVAL_SECONDS", cls.sample_interval_seconds, int, 1
            ),
            overlap_seconds=number("TRACEJUDGE_OVERLAP_SECONDS", cls.overlap_seconds, int, 0),
            late_scans=_late_scans(text("TRACEJUDGE_LATE_SCANS"), cls.late_scans, problems),
            max_variable_chars=number(
                "TRACEJUDGE_MAX_VARIABLE_CHARS", cls.max_variable_chars, int, 200
            ),
            allow_floating_models=boolean("TRACEJUDGE_ALLOW_FLOATING_MODELS", False),
            langfuse_timeout_seconds=number(
                "LANGFUSE_TIMEOUT", cls.langfuse_timeout_seconds, float, 1.0
            ),
            judge_timeout_seconds=number(
                "TRACEJUDGE_JUDGE_TIMEOUT_SECONDS", cls.judge_timeout_seconds, float, 1.0
            ),
            max_job_retries=number("TRACEJUDGE_MAX_JOB_RETRIES", cls.max_job_retries, int, 0, 100),
            heartbeat_timeout_seconds=number(
                "TRACEJUDGE_HEARTBEAT_TIMEOUT_SECONDS", cls.heartbeat_timeout_seconds, int, 5
            ),
            redact_pii=boolean("TRACEJUDGE_REDACT_PII", True),
            judge_requests_per_minute=number("TRACEJUDGE_JUDGE_RPM", None, int, 1),
            judge_tokens_per_minute=number("TRACEJUDGE_JUDGE_TPM", None, int, 1),
            langfuse_requests_per_minute=number("TRACEJUDGE_LANGFUSE_RPM", None, int, 1),
            daily_budget_usd=number("TRACEJUDGE_DAILY_BUDGET_USD", None, float, 0.0),
            metrics_port=number("TRACEJUDGE_METRICS_PORT", cls.metrics_port, int, 0, 65535),
            batch_poll_seconds=number("TRACEJUDGE_BATCH_POLL_SECONDS", cls.batch_poll_seconds, int, 1),
            batch_max_tokens=number("TRACEJUDGE_BATCH_MAX_TOKENS", None, int, 1000),
            prices_file=_prices_file(text("TRACEJUDGE_PRICES_FILE"), problems),
            source_env=dict(env),
        )
        if problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
        return settings


    def named_secret(self, name: str) -> str | None:
        """The value of the environment variable a rubric names for its judge's key
        (``judge.api_key_env``), read here so nothing else touches the environment."""
        env = os.environ if self.source_env is None else self.source_env
        return (env.get(name) or "").strip() or None

    def user_prices_file(self) -> Path | None:
        """The user's price table: TRACEJUDGE_PRICES_FILE, else ``<rubrics_dir>/prices.json``."""
        return self.prices_file or Path(self.rubrics_dir) / "prices.json"

    @classmethod
    def for_author_tools(cls, rubrics_dir: Path, env: Mapping[str, str] | None = None) -> "Settings":
        """Settings for the author tools (render --file, test): they never call Langfuse, so its
        keys may be missing; everything else (judge keys, redaction, variable budget) as configured."""
        env = {**(os.environ if env is None else env), "TRACEJUDGE_RUBRICS_DIR": str(rubrics_dir)}
        for name in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
            if not env.get(name, "").strip():
                env[name] = "unused-by-author-tools"
        return cls.from_env(env)


def rubrics_dir_for(path: str | Path | None, env: Mapping[str, str] | None = None) -> Path:
    """The rubrics folder of an author tool: ``--dir``, else TRACEJUDGE_RUBRICS_DIR, else the default."""
    env = os.environ if env is None else env
    return Path(path or env.get("TRACEJUDGE_RUBRICS_DIR", "").strip() or _default_rubrics_dir())


def _late_scans(raw: str | None, default: tuple[tuple[int, int], ...],
                problems: list[str]) -> tuple[tuple[int, int], ...]:
    """``DELAY:EVERY[,DELAY:EVERY...]`` in seconds, e.g. ``3600:900,86400:21600``; ``off`` for none."""
    if raw is None:
        return default
    if raw.lower() in ("off", "none", "0"):
        return ()
    passes = []
    for part in raw.split(","):
        delay, sep, every = part.strip().partition(":")
        if not (sep and delay.isdigit() and every.isdigit() and int(delay) > 0 and int(every) > 0):
            problems.append(f"TRACEJUDGE_LATE_SCANS={raw!r}: {part.strip()!r} is not DELAY:EVERY in seconds "
                            "(e.g. 3600:900,86400:21600, or off)")
            return default
        passes.append((int(delay), int(every)))
    return tuple(sorted(passes))


def prices_file_for(rubrics_dir: Path, env: Mapping[str, str] | None = None) -> Path:
    """The user's price table of an author tool: TRACEJUDGE_PRICES_FILE, else ``<rubrics_dir>/prices.json``."""
    env = os.environ if env is None else env
    return Path(env.get("TRACEJUDGE_PRICES_FILE", "").strip() or Path(rubrics_dir) / "prices.json")


def process_environment() -> dict[str, str]:
    """A copy of this process's environment, for the fleet processes a command starts."""
    return dict(os.environ)


def _prices_file(raw: str | None, problems: list[str]) -> Path | None:
    if raw is None:
        return None
    if not Path(raw).is_file():
        problems.append(f"TRACEJUDGE_PRICES_FILE={raw!r} is not a file (a JSON price table, see README)")
    return Path(raw)


def _default_rubrics_dir() -> Path:
    local = Path("rubrics")
    return local if local.is_dir() else _PACKAGED_RUBRICS


def _false_alarms(raw: str | None, default: tuple[float, str], problems: list[str]) -> tuple[float, str]:
    """``1/cell-year`` (default: one false alarm per cell and year) or ``1/week`` (one false page
    a week across every cell of the deployment)."""
    if not raw:
        return default
    count, _, unit = raw.strip().partition("/")
    try:
        value = float(count)
    except ValueError:
        value = -1.0
    if value <= 0 or unit not in ("cell-year", "week"):
        problems.append(f"TRACEJUDGE_FALSE_ALARMS={raw!r} is not N/cell-year or N/week (e.g. 1/cell-year, 1/week)")
        return default
    return value, unit
