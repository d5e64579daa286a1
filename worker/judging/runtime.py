"""Everything a worker process needs, built once at start-up from Settings and checked loudly."""
from __future__ import annotations

import datetime as dt
import logging
import threading

import redis

from worker.accounting.budget import Budget
from worker.accounting.outcomes import OutcomeLog
from worker.accounting.pricing import check_priced, use_price_file
from worker.errors import ConfigError, Unscored
from worker.fleet.occupancy import OCCUPANCY
from worker.judges import ModeMemory, api_key_for, build_judge, judge_key
from worker.judges.identity import verify_served_model
from worker.judges.models import check_judge_model
from worker.judging.prompt import compile_template
from worker.langfuse_io.client import build_langfuse_api
from worker.langfuse_io.score_configs import ScoreConfigs
from worker.langfuse_io.scores import ScoreWriter
from worker.langfuse_io.shared_traces import SharedTraces
from worker.langfuse_io.traces import TraceReader
from worker.rate_limits import Limit, RateLimitedJudge, RateLimiter, RedisBackend
from worker.redis_client import connect
from worker.rubrics.rubric import Rubric, load_rubrics
from worker.settings import Settings

log = logging.getLogger("tracejudge.runtime")


class Runtime:
    def __init__(self, settings: Settings, *, redis_client: redis.Redis | None = None):
        self.settings = settings
        self.rubrics: dict[str, Rubric] = load_rubrics(settings.rubrics_dir)
        self.warnings = validate_rubrics(self.rubrics, settings)
        for warning in self.warnings:
            log.warning(warning)
        self.redis = redis_client or connect(settings.redis_url)
        # One limiter per process; the limits themselves are shared by the fleet through Redis.
        self.rate_limiter = RateLimiter(RedisBackend(self.redis))
        self.langfuse = build_langfuse_api(settings, rate_limiter=self.rate_limiter)
        self.traces = SharedTraces(TraceReader(self.langfuse), self.redis)
        self.scores = ScoreWriter(self.langfuse, redis_client=self.redis, saturated=OCCUPANCY.saturated)
        self.outcomes = OutcomeLog(self.redis)
        self.budget = Budget(self.redis, settings.daily_budget_usd)
        self.score_configs = ScoreConfigs(self.langfuse, self.redis)
        self.structured_modes = ModeMemory(self.redis)  # learned once for the fleet
        self._judges: dict[str, object] = {}
        self._lock = threading.Lock()

    def judge_for(self, rubric: Rubric):
        """One judge per endpoint × model (``judge_key``), behind the fleet-wide limiter; a
        self-hosted one's served model is checked against its ``judge.identity`` first."""
        key = judge_key(rubric)
        with self._lock:
            if key not in self._judges:
                limit = Limit(self.settings.judge_requests_per_minute, self.settings.judge_tokens_per_minute)
                judge = build_judge(rubric.judge, self.settings, memory=self.structured_modes)
                try:
                    verify_served_model(judge, rubric.judge)
                except ConfigError as exc:
                    judge = _WrongModel(judge.provider, str(exc))
                self._judges[key] = RateLimitedJudge(judge, self.rate_limiter, limit, key=key)
            return self._judges[key]


class _WrongModel:
    """A self-hosted endpoint serving other weights than the pinned ones: every trace of its
    rubrics ends unscored with the reason, not scored by the wrong model."""

    def __init__(self, provider: str, detail: str):
        self.provider, self.detail = provider, detail

    def ask(self, request, repair=None):
        raise Unscored("judge_rejected", self.detail)


def validate_rubrics(rubrics: dict[str, Rubric], settings: Settings, *, today: dt.date | None = None,
                     require_keys: bool = True) -> list[str]:
    """Start-up checks of every loaded version: templates, pinned and priced judges (not past
    end of life as of ``today``, default the UTC date now), keys."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    use_price_file(settings.user_prices_file())  # the user's prices, merged over the shipped ones
    warnings: list[str] = []
    for rubric in rubrics.values():
        for name, source in (("user.j2", rubric.user_template), ("system.j2", rubric.system_template)):
            if source:
                compile_template(source, str(rubric.path / name))
        warnings += [f"{rubric.key}: {w}" for w in check_judge_model(
            rubric.judge.provider, rubric.judge.model, allow_floating=settings.allow_floating_models,
            today=today, identity=rubric.judge.identity)]
        check_priced(rubric.judge.model, judge_key(rubric))
        if require_keys and not api_key_for(rubric.judge, settings):
            env = rubric.judge.api_key_env or f"{rubric.judge.protocol.upper()}_API_KEY"
            raise ConfigError(f"{rubric.key} judges with {rubric.judge.endpoint}: {env} is missing")
    return warnings


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime, built from the environment on first use (worker start-up)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(Settings.from_env())
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """For tests and embedding: use this runtime instead of one built from the environment."""
    global _runtime
    with _runtime_lock:
        _runtime = runtime
