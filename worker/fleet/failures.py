"""What a judge job's failure means, decided in one place: a free delay, a counted retry, or
giving up, and how loudly it is logged.

The judge actor (actors.py) reserves, judges and writes; whatever goes wrong leaves it as a
typed error (worker/errors.py, carried past dramatiq's worker by ``expected_failures``).
``DurableRetries`` (durable_retries.py) asks ``classify`` what each one means for the job and
acts on the answer, as dramatiq's own Retries acts on an actor's ``throws`` and ``retry_when``:

- ``CircuitOpen`` (a breaker open: the call would be refused): a free delay until the probe,
  without end (a paused breaker calls nothing and pays nothing); INFO. The job that opened
  the breaker sends the one WorkPaused alert.
- ``RubricNotLoaded`` (a rolling deploy): a free delay of UNLOADED_DELAY_SECONDS; INFO. After
  MAX_UNLOADED_DELAYS (a day) it gives up: recorded exhausted, acked; ERROR.
- ``RateLimitWait`` (a full rate limit): a free delay of its Retry-After, jittered; INFO. After
  MAX_FREE_DELAYS it counts as a retry; WARNING.
- ``OutputNotYetArrived`` (a young trace): a free delay of OUTPUT_WAIT_SECONDS, jittered;
  INFO. It shares the MAX_FREE_DELAYS bound; the pipeline's OUTPUT_GRACE ends the wait.
- ``TransientError`` (5xx, timeouts, connection resets, after the call's own retries): a
  counted retry after its Retry-After, jittered, or dramatiq's backoff; WARNING.
- anything else: a counted retry after dramatiq's backoff; ERROR (dramatiq's worker logs it,
  with its traceback).

A **free delay** is not a failure: the job goes back to the queue with its retry count
untouched, so its retries are kept for real failures. Rate-limit and output waits are bounded
per job, so that a key paused for good cannot cycle a job forever; a breaker's pause is not (it
calls nothing, however long). A **counted retry** is dramatiq's: when they are used up the job
is dead-lettered and ``record_exhausted`` (actors.py) keeps its reason. **Giving up** records
the job exhausted with its reason and acks it: no dead letter. An unscored trace (a refusal,
an unparseable verdict) is no failure: the pipeline records it and the actor returns.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import hashlib
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import dramatiq

from worker.accounting import job_metrics
from worker.accounting.outcomes import STATS
from worker.alerts import outbox
from worker.alerts.kinds import WorkPaused
from worker.errors import CircuitOpen, OutputNotYetArrived, RubricNotLoaded, TransientError
from worker.jobs import RubricKey
from worker.runtime import get_runtime
from worker.langfuse_io.scores import score_id_for
from worker.rate_limits import RateLimitWait

log = logging.getLogger("tracejudge.failures")

# The message options counting a job's free delays (dramatiq's own "retries" counts the rest).
FREE_DELAYS = "free_delays"  # rate-limit and output waits, bounded by MAX_FREE_DELAYS
UNLOADED_DELAYS = "unloaded_delays"  # waits for a worker that has loaded the job's rubric

# Free delays (a full rate limit, output not yet arrived) per job before they count as retries:
# bounded, so a key paused for good cannot keep a job cycling forever.
MAX_FREE_DELAYS = 50
# A job for a rubric this worker has not loaded (a rolling deploy adds one) goes back to the
# queue for a worker that has it; after a day of that it is recorded, not dead-lettered.
UNLOADED_DELAY_SECONDS = 300
MAX_UNLOADED_DELAYS = 288
UNLOADED_STAT = "requeued_unloaded_rubric"  # outcome STATS field: every time a job found its rubric unloaded
# A young trace without its output is looked at again this much later (the pipeline's
# OUTPUT_GRACE bounds how long it is waited for).
OUTPUT_WAIT_SECONDS = 300
# A delay the server or the limiter asked for is stretched by up to this factor, so a fleet
# does not come back all at once.
JITTER = 1.5


class Handling(enum.Enum):
    FREE_DELAY = "free_delay"  # re-enqueued after the delay; no retry counted
    COUNTED = "counted"  # a retry of dramatiq's Retries: backoff, then the dead letters
    GIVE_UP = "give_up"  # recorded exhausted with a reason, acked


@dataclasses.dataclass(frozen=True)
class Failure:
    """What one failure of a judge job means: ``classify``'s answer."""

    error: BaseException
    handling: Handling
    delay_ms: int | None  # before jitter; None: dramatiq's exponential backoff (the actor's min/max)
    jitter: float = 1.0  # the delay is stretched by a random factor between 1 and this
    level: int = logging.INFO  # of the one line logged about it
    event: str | None = None  # that line; None: dramatiq's worker logged it (ERROR, with its traceback)
    outcome: str | None = None  # the judge-job metric's outcome (job_metrics.record_job), if any
    counter: str | None = None  # a free delay: the message option counting it
    stat: str | None = None  # the fleet-wide outcome STATS field counting it, if any
    alert: bool = False  # this job opened a breaker: it sends the one WorkPaused alert, fleet-wide
    reason: str = ""  # given up: the reason recorded

    def delay(self, uniform: Callable[[float, float], float] = random.uniform) -> int | None:
        """The delay in milliseconds, jittered; None for dramatiq's backoff."""
        if self.delay_ms is None or self.jitter <= 1.0:
            return self.delay_ms
        return int(self.delay_ms * uniform(1.0, self.jitter))


def classify(exception: BaseException, options: Mapping[str, Any]) -> Failure:
    """What ``exception`` (raised by a judge job whose message has ``options``) means for the job."""
    error = exception.error if isinstance(exception, Expected) else exception
    if isinstance(error, CircuitOpen):  # a paused breaker calls nothing: waiting is free however long
        return Failure(error, Handling.FREE_DELAY, _ms(error.retry_after), outcome="paused",
                       event="circuit open: the job waits for its probe", alert=error.opened)
    if isinstance(error, RubricNotLoaded):
        if options.get(UNLOADED_DELAYS, 0) >= MAX_UNLOADED_DELAYS:
            return Failure(error, Handling.GIVE_UP, None, level=logging.ERROR, stat=UNLOADED_STAT,
                           event="job for a rubric no worker loads; recorded as exhausted",
                           reason=f"rubric {error.rubric_key} was not loaded by any worker that took the job for a day")
        return Failure(error, Handling.FREE_DELAY, UNLOADED_DELAY_SECONDS * 1000, outcome="requeued",
                       counter=UNLOADED_DELAYS, stat=UNLOADED_STAT,
                       event="rubric not loaded by this worker; job requeued")
    if isinstance(error, RateLimitWait):  # a full rate limit is not a failure
        return _bounded(error, options, _ms(error.retry_after or 1.0), outcome="rate_limited",
                        event="rate limit full: the job waits for its slot")
    if isinstance(error, OutputNotYetArrived):  # nor is a young trace's output still on its way
        return _bounded(error, options, OUTPUT_WAIT_SECONDS * 1000, outcome="retried",
                        event="output not arrived yet: the job looks again later")
    if isinstance(error, TransientError):
        return Failure(error, Handling.COUNTED, _ms(error.retry_after) if error.retry_after else None,
                       jitter=JITTER, level=logging.WARNING, outcome="retried", event="transient failure, will retry")
    return Failure(error, Handling.COUNTED, None, level=logging.ERROR)


def _bounded(error: BaseException, options: Mapping[str, Any], delay_ms: int, *, outcome: str,
             event: str) -> Failure:
    if options.get(FREE_DELAYS, 0) < MAX_FREE_DELAYS:
        return Failure(error, Handling.FREE_DELAY, delay_ms, jitter=JITTER, outcome=outcome, counter=FREE_DELAYS,
                       event=event)
    return Failure(error, Handling.COUNTED, delay_ms, jitter=JITTER, level=logging.WARNING, outcome=outcome,
                   event=f"{event} (its {MAX_FREE_DELAYS} free delays used: counted as a retry)")


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def is_first_delivery(options: Mapping[str, Any]) -> bool:
    """Neither retried nor delayed by a rate limit or a missing output yet."""
    return not options.get("retries") and not options.get(FREE_DELAYS)


# -- the judge actor's side: its typed failures reach DurableRetries ---------------------------

EXPECTED: tuple[type[Exception], ...] = (CircuitOpen, RubricNotLoaded, OutputNotYetArrived, TransientError)


class Expected(dramatiq.Retry):
    """One of the judge actor's typed failures (``EXPECTED``) on its way to DurableRetries, which
    classifies ``error``. A dramatiq ``Retry``, so that dramatiq's worker does not log it as an
    unhandled exception with a traceback: the level of its line is ``classify``'s. ``delay`` is
    a first delivery's, before jitter (DurableRetries decides the one used)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}", delay=classify(error, {}).delay_ms)
        self.error = error


@contextlib.contextmanager
def expected_failures() -> Iterator[None]:
    """Raise the typed failures of the block as ``Expected``; any other error leaves unchanged
    (dramatiq's worker logs it at ERROR with its traceback, and it is a counted retry)."""
    try:
        yield
    except EXPECTED as error:
        raise Expected(error) from None  # the error's own chain (an SDK's text) stays out of the message


# -- what a failure records ---------------------------------------------------------------------

def report(failure: Failure, rubric_key: str, delay_ms: int | None, options: Mapping[str, Any],
           message_id: str) -> None:
    """The failure's one line at its level, its job metric and its fleet-wide count."""
    if failure.event is not None:
        log.log(failure.level, failure.event,
                extra={"error": str(failure.error), "handling": failure.handling.value, "delay_ms": delay_ms,
                       "message_id": message_id, "retries": options.get("retries", 0),
                       FREE_DELAYS: options.get(FREE_DELAYS, 0)})
    if failure.outcome is not None:
        job_metrics.record_job(rubric_key, failure.outcome)
    if failure.stat is not None:
        get_runtime().redis.hincrby(STATS, failure.stat, 1)


def give_up(failure: Failure, trace_id: str, rubric_key: str) -> None:
    """Record the job exhausted with the failure's reason (the job is then acked, not dead-lettered)."""
    get_runtime().outcomes.exhausted(score_id_for(trace_id, *RubricKey.parse(rubric_key)), trace_id, rubric_key,
                                     failure.reason)


def announce_pause(failure: Failure, rubric_key: str) -> None:
    """The job that opened a breaker (``failure.alert``) sends the one WorkPaused alert, kept in
    the outbox until a sink takes it."""
    error = failure.error
    if not (failure.alert and isinstance(error, CircuitOpen)):
        return
    rt = get_runtime()
    opened_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    alert = WorkPaused(id=hashlib.sha256(f"paused|{error.circuit}|{opened_at}".encode()).hexdigest()[:20],
                       title=f"{error.circuit}: paused ({error.reason}); its jobs wait until a probe succeeds",
                       cell=f"circuit:{error.circuit}", rubric=RubricKey.parse(rubric_key).name, owner="unowned",
                       route=None, circuit=error.circuit, reason=error.reason, opened_at=opened_at)
    outbox.enqueue(rt.redis, alert, rt.sinks)
    try:
        outbox.deliver(rt.redis, rt.sinks)
    except Exception:  # boundary: the alert stays in the outbox; the scheduler's tick delivers it
        log.exception("pause alert delivery failed; kept in the outbox")
