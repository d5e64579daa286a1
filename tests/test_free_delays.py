"""A delay that is not a failure (a full rate limit, output not arrived yet) keeps the job's
retries, but only MAX_FREE_DELAYS times per job: a limit paused for good cannot cycle a job
forever. (The classification itself: tests/test_failure_classification.py.)"""
from __future__ import annotations


import dramatiq
from dramatiq.message import Message

from tests.helpers import RecordingBroker

from worker.errors import OutputNotYetArrived
from worker.fleet.durable_retries import DurableRetries
from worker.fleet.failures import FREE_DELAYS, MAX_FREE_DELAYS, expected_failures
from worker.rate_limits import RateLimitWait




def test_free_delays_keep_the_retries_up_to_the_bound() -> None:
    message = dramatiq.MessageProxy(Message(queue_name="judge", actor_name="judge_trace", args=("t", "r@v1"),
                                            kwargs={}, options={}))
    broker, retries = RecordingBroker(), DurableRetries(max_retries=1000)
    for i in range(MAX_FREE_DELAYS + 10):
        error = RateLimitWait("full", retry_after=5) if i % 2 else OutputNotYetArrived("no output yet")
        try:
            with expected_failures():
                raise error
        except dramatiq.Retry as exc:
            retries.after_process_message(broker, message, exception=exc)  # type: ignore[arg-type]
    assert message.options[FREE_DELAYS] == MAX_FREE_DELAYS  # one count for both kinds
    assert message.options["retries"] == 10  # only the delays past the bound counted
    assert len(broker.delays) == MAX_FREE_DELAYS + 10 and not message.failed
