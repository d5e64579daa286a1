"""The dramatiq Redis broker and the judge actors, declared against an explicit broker."""
from __future__ import annotations

import contextvars
import logging

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware

from worker import logs
from worker.fleet.actors import judge_trace, record_exhausted
from worker.fleet.durable_retries import use_durable_retries
from worker.fleet.occupancy import Occupancy
from worker.jobs import EXHAUSTED_ACTOR, JUDGE_ACTOR, JUDGE_QUEUE
from worker.redis_client import connection_pool
from worker.settings import Settings

log = logging.getLogger("tracejudge.broker")


def build_broker(settings: Settings) -> RedisBroker:
    # Rides out a short Redis restart inside each command (worker/redis_client.py).
    # dramatiq's RedisBroker.__init__ is unannotated (dramatiq 2.2): hence the ignore.
    broker = RedisBroker(connection_pool=connection_pool(settings.redis_url),  # type: ignore[no-untyped-call]
                         heartbeat_timeout=settings.heartbeat_timeout_seconds * 1000,
                         # Sweep for a dead worker's messages on ~1 in 10 commands: an idle worker
                         # polls about once a second, so a SIGKILLed worker's jobs come back within
                         # seconds of its heartbeat timeout, not minutes (dramatiq's default is 1 in 625).
                         maintenance_chance=100_000)
    # First in the chain, so its after-hook runs last: dramatiq's own lines about a job (failed,
    # retrying in N ms) still carry the job's trace and rubric.
    broker.add_middleware(JobLogContext(), before=type(broker.middleware[0]))
    broker.add_middleware(CurrentMessage())  # lets a judge job tell its first delivery from a retry (siblings)
    broker.add_middleware(Occupancy())  # in a backlog score batches linger less (worker/fleet/boot.py)
    use_durable_retries(broker)  # a retry that cannot be enqueued dead-letters the job instead of losing it
    declare_actors(broker, settings)
    return broker


class JobLogContext(Middleware):
    """Tags every log line written while a judge job is processed with its trace and rubric."""

    def __init__(self) -> None:
        self._tokens: dict[str, contextvars.Token[logs.JobFields | None]] = {}

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        args = message.args
        if message.actor_name == EXHAUSTED_ACTOR and args and isinstance(args[0], dict):
            args = args[0].get("args") or ()
        if len(args) >= 2:
            self._tokens[message.message_id] = logs.set_job(logs.job_fields(args[0], args[1]))

    def after_process_message(self, broker: dramatiq.Broker, message: MessageProxy, *,
                              result: object = None, exception: BaseException | None = None) -> None:
        token = self._tokens.pop(message.message_id, None)
        if token is not None:
            logs.reset_job(token)

    after_skip_message = after_process_message


def declare_actors(broker: dramatiq.Broker, settings: Settings) -> dict[str, dramatiq.Actor[..., None]]:
    if JUDGE_ACTOR in broker.actors:
        return {name: broker.get_actor(name) for name in (JUDGE_ACTOR, EXHAUSTED_ACTOR)}
    # dramatiq's typed overloads take the options only in the decorator form: actor(**options)(fn).
    judge = dramatiq.actor(
        broker=broker, actor_name=JUDGE_ACTOR, queue_name=JUDGE_QUEUE,
        max_retries=settings.max_job_retries, min_backoff=2_000, max_backoff=600_000,
        time_limit=15 * 60_000, on_retry_exhausted=EXHAUSTED_ACTOR,
    )(judge_trace)
    exhausted = dramatiq.actor(broker=broker, actor_name=EXHAUSTED_ACTOR,
                               queue_name=JUDGE_QUEUE, max_retries=20)(record_exhausted)
    return {JUDGE_ACTOR: judge, EXHAUSTED_ACTOR: exhausted}
