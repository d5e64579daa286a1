"""A delay that is not a failure (a full rate limit, output not arrived yet) gives back its retry,
but only MAX_FREE_DELAYS times per job: a limit paused for good cannot cycle a job forever."""
from __future__ import annotations

import dramatiq
from dramatiq.message import Message
from dramatiq.middleware import CurrentMessage

from worker.fleet.actors import MAX_FREE_DELAYS, _give_back_retry


def test_free_delays_give_back_the_retry_up_to_the_bound():
    message = dramatiq.MessageProxy(Message(queue_name="judge", actor_name="judge_trace", args=("t", "r@v1"),
                                            kwargs={}, options={}))
    middleware = CurrentMessage()
    middleware.before_process_message(None, message)
    try:
        for _ in range(MAX_FREE_DELAYS + 10):
            _give_back_retry()
            message.options["retries"] = message.options.get("retries", 0) + 1  # what Retries then adds
    finally:
        middleware.after_process_message(None, message)
    assert message.options["free_delays"] == MAX_FREE_DELAYS
    assert message.options["retries"] == 10  # only the delays past the bound counted
