"""The real server's score pipeline: POST /scores answers 200 once the body's shape is valid,
and the checks against the score config run later, in the ingestion worker, which drops a
failing score without telling anyone (worker/src/services/IngestionService/index.ts:
"Gracefully handle any score schema validation errors, skip the score insert and reject
silently").

Here one background thread plays that worker. A score accepted at time t is checked and
stored at t + delay_s (default 0: as soon as the thread gets to it, i.e. just after the
response). Until then it is not readable, as on the real server. Tests call drain() to wait
until every accepted score is settled, instead of sleeping.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque

from emulators.langfuse_store import Dropped, Store


class DeferredScoreChecks:
    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self._cond = threading.Condition()
        self._jobs: deque = deque()
        self._busy = False
        self._closed = False
        self._dropped: list[dict] = []
        self._thread: threading.Thread | None = None

    def submit(self, store: Store, body: dict, item: dict) -> None:
        with self._cond:
            self._closed = False  # an emulator started again after stop() takes scores again
            self._jobs.append((time.monotonic() + self.delay_s, store, body, item))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="langfuse-emulator-ingestion", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every accepted score was stored or dropped; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._jobs and not self._busy, timeout)

    def pending(self) -> int:
        with self._cond:
            return len(self._jobs) + int(self._busy)

    def dropped(self) -> list[dict]:
        with self._cond:
            return [dict(d) for d in self._dropped]

    def dropped_counts(self) -> dict[str, int]:
        with self._cond:
            return dict(Counter(d["reason"] for d in self._dropped))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._jobs or self._jobs[0][0] > time.monotonic()):
                    wait = self._jobs[0][0] - time.monotonic() if self._jobs else None
                    self._cond.wait(wait)
                if self._closed:
                    self._thread = None  # under the lock, so submit() knows to start a new one
                    return
                _, store, body, item = self._jobs.popleft()
                self._busy = True
            try:
                store.settle_score(body, item)
            except Exception as exc:  # an emulator bug must not kill the thread and hang drain()
                reason = exc.reason if isinstance(exc, Dropped) else "unexpected_error"
                with self._cond:
                    self._dropped.append({"id": item["id"], "name": item["name"], "configId": item["configId"],
                                          "reason": reason, "message": str(exc)})
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
