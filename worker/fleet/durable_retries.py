"""dramatiq's Retries middleware, where a judge job's failures are classified and acted on, made
unable to lose a job when Redis is unreachable.

A judge job's failure is classified by ``failures.classify`` (the table is in failures.py) and
handled here: a free delay re-enqueues the job after its delay without counting a retry, a
counted retry is dramatiq's (backoff, then the dead letters), giving up records the job and acks
it. Every other actor's failures get dramatiq's Retries unchanged.

dramatiq re-enqueues a failed job from ``after_process_message`` and then acks the original. If
that re-enqueue raises (Redis down for longer than the client rides out), the original is acked
all the same and the job is gone. Here the job is failed instead: dramatiq then nacks it into
the dead-letter queue, retrying the nack until Redis is back, and `tracejudge dead-letters
retry` brings it back with its reason.
"""
from __future__ import annotations

import time
import traceback
from typing import Any, cast

import dramatiq
import redis
from dramatiq.broker import Broker, MessageProxy
from dramatiq.errors import BrokerConnectionError
from dramatiq.message import Message
from dramatiq.middleware import Retries

from worker.fleet import failures
from worker.fleet.failures import Failure, Handling
from worker.jobs import JUDGE_ACTOR

_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, BrokerConnectionError)


class DurableRetries(Retries):
    def after_process_message(self, broker: Broker, message: MessageProxy, *, result: Any | None = None,
                              exception: BaseException | None = None) -> None:
        if exception is None:
            return
        try:
            if message.actor_name == JUDGE_ACTOR:
                self._after_judge_failure(broker, message, exception)
            else:
                self._retry(broker, message, exception)
        except _UNREACHABLE as exc:
            self.logger.error("Could not schedule a retry of %r (Redis unreachable: %s); dead-lettering it "
                              "so it is kept.", message.message_id, exc)
            message.options["traceback"] = (message.options.get("traceback") or "") + \
                f"\nretry could not be scheduled: Redis unreachable: {exc}"
            message.fail()

    def _after_judge_failure(self, broker: Broker, message: MessageProxy, exception: BaseException) -> None:
        failure = failures.classify(exception, message.options)
        trace_id, rubric_key = message.args[0], message.args[1]
        delay = failure.delay()
        failures.report(failure, rubric_key, delay, message.options, message.message_id)
        if failure.handling is Handling.FREE_DELAY:
            self._delay(broker, message, failure, delay)
        elif failure.handling is Handling.GIVE_UP:
            failures.give_up(failure, trace_id, rubric_key)  # and the job is acked
        else:
            self._retry(broker, message, exception if delay is None else dramatiq.Retry(str(exception), delay=delay))
        if failure.alert:
            try:  # the job is delayed already: failing it now would keep a second copy
                failures.announce_pause(failure, rubric_key)
            except Exception:  # boundary: the breaker's own "circuit opened" line has said it
                self.logger.exception("Could not record the pause alert of %r.", message.message_id)

    def _delay(self, broker: Broker, message: MessageProxy, failure: Failure, delay: int | None) -> None:
        """Re-enqueue after ``delay`` as dramatiq's Retries does, without counting a retry."""
        if failure.counter is not None:
            message.options[failure.counter] = message.options.get(failure.counter, 0) + 1
        message.options["traceback"] = traceback.format_exc(limit=30)
        message.options["requeue_timestamp"] = int(time.time() * 1000)
        broker.enqueue(cast(Message[Any], message), delay=delay)  # a proxy stands in for its message

    def _retry(self, broker: Broker, message: MessageProxy, exception: BaseException) -> None:
        """dramatiq's counted retry: ``exception``'s delay when it is a Retry with one, else backoff."""
        super().after_process_message(broker, message, exception=exception)  # type: ignore[no-untyped-call]


def use_durable_retries(broker: Broker) -> None:
    """Replace the broker's Retries middleware in place, keeping its position and defaults."""
    for i, middleware in enumerate(broker.middleware):
        if type(middleware) is Retries:
            durable = DurableRetries(max_retries=middleware.max_retries, min_backoff=middleware.min_backoff,
                                     max_backoff=middleware.max_backoff, retry_when=middleware.retry_when)
            broker.middleware[i] = durable
            return
    raise RuntimeError("the broker has no Retries middleware to replace")
