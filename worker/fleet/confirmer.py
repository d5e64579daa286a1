"""The fleet reads back its own writes: no flow depends on a scheduler for its scores to count.

A written score counts (``status``, the drift aggregates, the report) only once Langfuse
returns it on a read (worker/judging/confirm.py), and a score the server dropped after its 200
is written again only by that read-back. It used to run in the scheduler alone, so the batch
flow (``sample --once`` or ``backfill``, then a worker that drains the queue) confirmed
nothing, healed nothing, and drift saw n = 0. Now whoever writes reads back:

- every worker process runs ``FleetConfirmer``: a thread that, every ``EVERY_SECONDS``, looks
  whether a written score is due (one ``ZCOUNT``) and, if so, reads the due ones back;
- the scheduler's tick, and ``drift --once``, ``status`` and ``report`` before they read the
  figures, do the same pass (``confirm_due``), so scores written by a fleet that has stopped
  since are counted too.

One reader at a time fleet-wide: the pass runs under a Redis lease (``CONFIRM_LOCK``); another
process that finds it held skips its turn. Counting stays exactly once per score id whoever
reads (the confirmation marker in accounting/outcomes.py); the lease only saves duplicate reads
and duplicate re-writes of a dropped score.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable

import dramatiq
import redis
from dramatiq.middleware import Middleware
from langfuse.api import LangfuseAPI
from redis import Redis

from worker.accounting.outcomes import UNCONFIRMED, OutcomeLog
from worker.alerts.sinks import Sink, sinks_for
from worker.fleet.lease import Lease
from worker.judging.confirm import GRACE_SECONDS, ConfirmSummary, confirm_writes
from worker.langfuse_io.client import build_langfuse_api
from worker.langfuse_io.score_configs import ScoreConfigs
from worker.langfuse_io.scores import ScoreWriter
from worker.rubrics.rubric import Rubric, load_rubrics
from worker.runtime import Runtime
from worker.settings import Settings

log = logging.getLogger("tracejudge.confirm")
CONFIRM_LOCK = "tracejudge:confirm:lock"
EVERY_SECONDS = 5.0  # how often each worker process looks for due read-backs (one ZCOUNT)
LEASE_SECONDS = 60.0  # renewed while a pass runs; a reader that died frees it this much later


def due(client: redis.Redis, now: float | None = None) -> int:
    """Written scores whose read-back is due now."""
    now = time.time() if now is None else now
    return client.zcount(UNCONFIRMED, "-inf", now - GRACE_SECONDS)


def confirm_due(rt: Runtime | WriteBack) -> ConfirmSummary | None:
    """Read back the due scores, unless another process is at it (then None). ``rt`` is a
    runtime, or the write-back parts of one (``WriteBack``)."""
    if not due(rt.redis):
        return ConfirmSummary()
    lease = Lease(rt.redis, LEASE_SECONDS, key=CONFIRM_LOCK, name="read-back")
    if not lease.hold():
        return None
    try:
        with lease.kept_alive():
            summary = confirm_writes(rt)  # type: ignore[arg-type]  # a WriteBack has every part it reads
    finally:
        lease.release()
    if summary.requests:
        log.info("write-back confirmed", extra={"summary": summary.line()})
    return summary


@dataclasses.dataclass
class WriteBack:
    """What a read-back needs, for a command that judges nothing (``drift --once``, ``status``,
    ``report``): no judge clients, so no judge keys are needed to count the fleet's scores."""
    settings: Settings
    redis: Redis  # (the field's name hides the module inside the class)
    rubrics: dict[str, Rubric]
    langfuse: LangfuseAPI
    outcomes: OutcomeLog
    score_configs: ScoreConfigs
    scores: ScoreWriter
    sinks: list[Sink]

    @classmethod
    def from_settings(cls, settings: Settings, client: Redis) -> WriteBack:
        api = build_langfuse_api(settings)
        return cls(settings, client, load_rubrics(settings.rubrics_dir), api, OutcomeLog(client),
                   ScoreConfigs(api, client), ScoreWriter(api, redis_client=client), sinks_for(settings))


def read_back_before_reading(settings: Settings, client: redis.Redis) -> str | None:
    """The pass ``drift --once``, ``status`` and ``report`` make before they read the figures.
    Returns a line for the user when scores still wait (or the read-back failed), else None;
    never raises: the figures are shown either way."""
    if not client.zcard(UNCONFIRMED):
        return None
    try:
        summary = confirm_due(WriteBack.from_settings(settings, client))
    except Exception as exc:  # boundary: Langfuse down or a revoked key must not hide the figures
        log.warning("read-back before the report failed", exc_info=True)
        return (f"read-back of written scores failed ({type(exc).__name__}); "
                f"{client.zcard(UNCONFIRMED)} written score(s) are not counted yet")
    waiting = client.zcard(UNCONFIRMED)
    if not waiting:
        return None
    busy = " (another process is reading them back now)" if summary is None else ""
    return (f"{waiting} written score(s) await read-back from Langfuse{busy}: they count once Langfuse "
            f"returns them (within ~{int(GRACE_SECONDS)} s of their write while a worker runs)")


class FleetConfirmer(Middleware):
    """In each worker process: a thread that reads back the fleet's due writes (see the module),
    with the runtime ``runtime()`` returns (worker/fleet/boot.py: the process's)."""

    def __init__(self, runtime: Callable[[], Runtime | WriteBack], every: float = EVERY_SECONDS) -> None:
        self._runtime, self._every = runtime, every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="read-back", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        # Processes started together would look at the same instant: spread them over a period.
        if self._stop.wait(random.uniform(0, self._every)):
            return
        while True:
            try:
                confirm_due(self._runtime())
            except Exception:  # boundary: Redis or Langfuse away; the due scores wait for the next pass
                log.warning("read-back pass failed; retried in a few seconds", exc_info=True)
            if self._stop.wait(self._every):
                return
