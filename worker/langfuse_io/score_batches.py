"""Score writes in batches, without giving up the synchronous write.

Every job still waits for its own score's answer before its message is acked: concurrent jobs of
one process hand their scores to whichever of them is sending (a group commit). The first job to
find no send in progress lingers ``LINGER_SECONDS`` (``IDLE_LINGER_SECONDS`` after a lull,
``BUSY_LINGER_SECONDS`` while the process works through a backlog, worker/fleet/occupancy.py:
then the threads are the limit, and a job's linger is throughput lost) for others to join,
sends up to ``MAX_ITEMS`` scores in one ``POST /api/public/scores`` (an array: servers that
take one answer 202 or 207), and hands each job its outcome; jobs that arrive meanwhile form
the next batch.

A 207 does not say which scores it rejected (its errors carry messages only), so a batch with
rejections is sent again one score at a time (an upsert under the same ids: the accepted ones
are not duplicated) and each job learns its own answer. A batch the server refuses as a whole
(a 4xx: the array shape, or one malformed score) is handed back for each job to write alone.
"""
from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

from worker.json_types import JSONDict

LINGER_SECONDS = 0.05  # a tenth of a typical judge call: ~6 scores a batch at 64 calls in flight
# The first batch after a lull lingers longer: in continuous mode each tick's jobs (a trace's
# rubrics among them) finish as a wave, and one batch gathers most of it. While batches go out
# back to back (a backlog) the short linger holds: a long one would only hold the threads.
IDLE_LINGER_SECONDS = 0.25
BUSY_LINGER_SECONDS = 0.02  # worker/fleet/occupancy.py has the figures
IDLE_AFTER_SECONDS = 1.0
MAX_ITEMS = 100  # well inside the server's body limit: a score body is about 1 kB


class WriteAlone(enum.Enum):
    """The outcome "write this score by itself" (``submit``)."""

    ALONE = "alone"


ALONE = WriteAlone.ALONE


class _Entry:
    __slots__ = ("body", "done", "outcome")

    def __init__(self, body: JSONDict):
        self.body = body
        self.done = False
        self.outcome: WriteAlone | BaseException | None = None


class GroupCommit:
    """``submit(body)`` blocks until the batch holding ``body`` was answered; it returns None
    (accepted) or ``ALONE``, and raises what the send raised (every job of the batch retries)."""

    def __init__(self, send: Callable[[list[JSONDict]], None], *, linger: float = LINGER_SECONDS,
                 idle_linger: float = IDLE_LINGER_SECONDS, busy_linger: float = BUSY_LINGER_SECONDS,
                 saturated: Callable[[], bool] = lambda: False, max_items: int = MAX_ITEMS):
        self._send, self._linger, self._max = send, linger, max_items
        self._idle_linger = max(idle_linger, linger)
        self._busy_linger, self._saturated = min(busy_linger, linger), saturated
        self._last_sent = float("-inf")
        self._cond = threading.Condition()
        self._pending: list[_Entry] = []
        self._sending = False
        self.batches = 0  # sent, for the benchmark and tests

    def submit(self, body: JSONDict) -> WriteAlone | None:
        entry = _Entry(body)
        with self._cond:
            self._pending.append(entry)
        while True:
            with self._cond:
                while self._sending and not entry.done:
                    self._cond.wait()
                if entry.done:
                    break
                self._sending = True
            try:
                self._lead()
            finally:
                with self._cond:
                    self._sending = False
                    self._cond.notify_all()
        if isinstance(entry.outcome, BaseException):
            raise entry.outcome
        return entry.outcome

    def _lead(self) -> None:
        if time.monotonic() - self._last_sent > IDLE_AFTER_SECONDS:
            linger = self._idle_linger
        else:
            linger = self._busy_linger if self._saturated() else self._linger
        if linger:
            time.sleep(linger)  # let the other jobs that are finishing now join this batch
        with self._cond:
            batch, self._pending = self._pending[:self._max], self._pending[self._max:]
        if not batch:
            return
        self.batches += 1
        self._last_sent = time.monotonic()
        try:
            self._send([e.body for e in batch])
            outcome: WriteAlone | BaseException | None = None
        except PartlyRejected as exc:  # alone, the score is the rejected one; in a batch, ask each alone
            outcome = ALONE if len(batch) > 1 else exc
        except WholeBatchRefused:
            outcome = ALONE
        except BaseException as exc:  # noqa: BLE001 - handed to every job of the batch, raised there
            outcome = exc
        with self._cond:
            for e in batch:
                e.outcome, e.done = outcome, True


class PartlyRejected(Exception):
    """A 207: some scores of the batch were rejected, which ones the reply does not say."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class WholeBatchRefused(Exception):
    """A 4xx for the whole array: its shape, or one score in it, that the server refuses."""
