"""dramatiq's Retries middleware, made unable to lose a job when Redis is unreachable.

dramatiq re-enqueues a failed job from ``after_process_message`` and then acks the original. If
that re-enqueue raises (Redis down for longer than the client rides out), the original is acked
all the same and the job is gone. Here the job is failed instead: dramatiq then nacks it into
the dead-letter queue, retrying the nack until Redis is back, and `tracejudge dead-letters
retry` brings it back with its reason.
"""
from __future__ import annotations

import redis
from dramatiq.errors import BrokerConnectionError
from dramatiq.middleware import Retries

_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, BrokerConnectionError)


class DurableRetries(Retries):
    def after_process_message(self, broker, message, *, result=None, exception=None):
        try:
            super().after_process_message(broker, message, result=result, exception=exception)
        except _UNREACHABLE as exc:
            self.logger.error("Could not schedule a retry of %r (Redis unreachable: %s); dead-lettering it "
                              "so it is kept.", message.message_id, exc)
            message.options["traceback"] = (message.options.get("traceback") or "") + \
                f"\nretry could not be scheduled: Redis unreachable: {exc}"
            message.fail()


def use_durable_retries(broker) -> None:
    """Replace the broker's Retries middleware in place, keeping its position and defaults."""
    for i, middleware in enumerate(broker.middleware):
        if type(middleware) is Retries:
            durable = DurableRetries(max_retries=middleware.max_retries, min_backoff=middleware.min_backoff,
                                     max_backoff=middleware.max_backoff, retry_when=middleware.retry_when)
            broker.middleware[i] = durable
            return
    raise RuntimeError("the broker has no Retries middleware to replace")
