"""The composition root: what a process needs to judge, built once from Settings at start-up,
checked loudly, and passed down to whoever needs it.

Built by:
- worker/fleet/boot.py, in every worker process. It installs its runtime for the dramatiq
  actors, because dramatiq calls them with a message only (``get_runtime``). Nothing else looks
  up the installed runtime.
- the scheduler (worker/cli/fleet.py), which hands it to its sampler and its phases
  (worker/fleet/scheduler.py): the budget tick, the batch cycle, the read-back of written
  scores, the review loop, the drift check and detection.
- the commands that judge (``worker``'s start-up check, ``batches``), and the tests, through
  tests/helpers.py.

What it is given: the settings; optionally a Redis client, and the process's occupancy signal
(``saturated``: every worker thread busy with a backlog waiting; worker/fleet/occupancy.py). A
process with no worker threads (the scheduler, a command, a test) leaves it out and is never
saturated.

What it builds once, for every step to use: the Redis client, the fleet-wide rate limiter,
the Langfuse API, the trace reader, the score writer, the outcome log, the budget, the score
configs, the learned structured-output modes, the alert sinks, the price table, the batch store,
one circuit breaker per name (``breaker``), and one judge per endpoint × model (``judge_for``).

It imports no step package (judging, review, authoring, fleet): they import it, so the
package graph stays a DAG (tests/test_layout.py). The template check it needs lives below
both, in worker/templates.py; batching/ (the store, the providers' APIs) is below it too.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

import redis

from worker import process_state
from worker.accounting.budget import Budget
from worker.accounting.outcomes import OutcomeLog
from worker.accounting.pricing import PriceTable, use_prices
from worker.alerts.sinks import Sink, sinks_for
from worker.batching.store import BatchStore
from worker.errors import ConfigError, Unscored
from worker.judges import ModeMemory, api_key_for, build_judge, judge_key
from worker.judges.base import Judge, JudgeReply, JudgeRequest
from worker.judges.identity import verify_served_model
from worker.judges.models import check_judge_model
from worker.langfuse_io.client import build_langfuse_api
from worker.langfuse_io.score_configs import ScoreConfigs
from worker.langfuse_io.scores import ScoreWriter
from worker.langfuse_io.shared_traces import SharedTraces
from worker.langfuse_io.traces import TraceReader
from worker.rate_limits import Limit, RateLimitedJudge, RateLimiter, RedisBackend
from worker.rate_limits.circuit import Breaker
from worker.redis_client import connect
from worker.rubrics.rubric import Rubric, load_rubrics
from worker.settings import Settings
from worker.templates import compile_template

__all__ = ["Runtime", "get_runtime", "never_saturated", "set_runtime", "validate_rubrics"]
log = logging.getLogger("tracejudge.runtime")


def never_saturated() -> bool:
    """The occupancy signal of a process without worker threads."""
    return False


class Runtime:
    def __init__(self, settings: Settings, *, redis_client: redis.Redis | None = None,
                 saturated: Callable[[], bool] = never_saturated) -> None:
        self.settings = settings
        self.rubrics: dict[str, Rubric] = load_rubrics(settings.rubrics_dir)
        # The user's prices merged over the shipped ones. Also the process's table: the cost of a
        # judge call (worker/judging/finish.py judge_cost) is read from it.
        self.prices = PriceTable(settings.user_prices_file())
        use_prices(self.prices)
        self.warnings = validate_rubrics(self.rubrics, settings, self.prices)
        for warning in self.warnings:
            log.warning(warning)
        self.redis = redis_client or connect(settings.redis_url)
        # One limiter per process; the limits themselves are shared by the fleet through Redis.
        self.rate_limiter = RateLimiter(RedisBackend(self.redis))
        self.langfuse = build_langfuse_api(settings, rate_limiter=self.rate_limiter)
        self.traces = SharedTraces(TraceReader(self.langfuse), self.redis)
        self.scores = ScoreWriter(self.langfuse, redis_client=self.redis, saturated=saturated)
        self.outcomes = OutcomeLog(self.redis)
        self.budget = Budget(self.redis, settings.daily_budget_usd)
        self.score_configs = ScoreConfigs(self.langfuse, self.redis)
        self.structured_modes = ModeMemory(self.redis)  # learned once for the fleet
        self.sinks: list[Sink] = sinks_for(settings)  # none configured: alerts wait in the outbox
        self.batches = BatchStore(self.redis)  # batch-mode requests, from their job to their outcome
        self._breakers: dict[str, Breaker] = {}
        self._judges: dict[str, RateLimitedJudge] = {}
        self._lock = threading.Lock()

    def judge_for(self, rubric: Rubric) -> RateLimitedJudge:
        """One judge per endpoint × model (``judge_key``), behind the fleet-wide limiter; a
        self-hosted one's served model is checked against its ``judge.identity`` first."""
        key = judge_key(rubric)
        with self._lock:
            if key not in self._judges:
                limit = Limit(self.settings.judge_requests_per_minute, self.settings.judge_tokens_per_minute)
                judge: Judge = build_judge(rubric.judge, self.settings, memory=self.structured_modes)
                try:
                    verify_served_model(judge, rubric.judge)
                except ConfigError as exc:
                    judge = _WrongModel(judge.provider, str(exc))
                self._judges[key] = RateLimitedJudge(judge, self.rate_limiter, limit, key=key)
            return self._judges[key]

    def breaker(self, name: str) -> Breaker:
        """The circuit breaker ``name`` (worker/rate_limits/circuit.py): a judge key, or
        ``LANGFUSE`` for the writes. Its state is the fleet's, in Redis."""
        with self._lock:
            if name not in self._breakers:
                self._breakers[name] = Breaker(self.redis, name)
            return self._breakers[name]

    def breaker_for(self, rubric: Rubric) -> Breaker:
        """The breaker of the rubric's judge endpoint × model."""
        return self.breaker(judge_key(rubric))


class _WrongModel:
    """A self-hosted endpoint serving other weights than the pinned ones: every trace of its
    rubrics ends unscored with the reason, not scored by the wrong model."""

    def __init__(self, provider: str, detail: str) -> None:
        self.provider, self.detail = provider, detail

    def ask(self, request: JudgeRequest, repair: tuple[JudgeReply, str] | None = None) -> JudgeReply:
        raise Unscored("judge_rejected", self.detail)


def validate_rubrics(rubrics: dict[str, Rubric], settings: Settings, prices: PriceTable, *,
                     today: dt.date | None = None, require_keys: bool = True) -> list[str]:
    """Start-up checks of every loaded version: templates, pinned judges (not past end of life as
    of ``today``, default the UTC date now) priced in ``prices``, keys. Returns the warnings;
    raises ConfigError for the first problem."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    warnings: list[str] = []
    for rubric in rubrics.values():
        for name, source in (("user.j2", rubric.user_template), ("system.j2", rubric.system_template)):
            if source:
                compile_template(source, str(rubric.path / name))
        warnings += [f"{rubric.key}: {w}" for w in check_judge_model(
            rubric.judge.provider, rubric.judge.model, allow_floating=settings.allow_floating_models,
            today=today, identity=rubric.judge.identity)]
        prices.check_priced(rubric.judge.model, judge_key(rubric))
        if require_keys and not api_key_for(rubric.judge, settings):
            env = rubric.judge.api_key_env or f"{rubric.judge.protocol.upper()}_API_KEY"
            raise ConfigError(f"{rubric.key} judges with {rubric.judge.endpoint}: {env} is missing")
    return warnings


# The worker process's runtime, for the dramatiq actors (worker/process_state.py).
_RUNTIME: process_state.Slot[Runtime | None] = process_state.slot("runtime", lambda: None)


def get_runtime() -> Runtime:
    """The runtime worker/fleet/boot.py installed, for the dramatiq actors; built from the
    environment on first use where none was (a test's in-process worker, an embedding)."""
    with _RUNTIME.lock:
        if _RUNTIME.value is None:
            _RUNTIME.value = Runtime(Settings.from_env())
        return _RUNTIME.value


def set_runtime(runtime: Runtime | None) -> None:
    """Install ``runtime`` as the process's (worker/fleet/boot.py; tests through ``installed``)."""
    with _RUNTIME.lock:
        _RUNTIME.value = runtime
