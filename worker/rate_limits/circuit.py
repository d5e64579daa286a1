"""Circuit breakers for errors that cannot heal by retrying a job: a revoked judge key (401),
an unknown or retired model (404), Langfuse Cloud's 403 "ingestion suspended".

Without them every job of the backlog retries such an error its eight times (after paying the
judge, for a write) and dead-letters. A breaker is fleet-wide state in Redis, one per judge
endpoint × model (``judge_key``) and one for Langfuse writes:

- closed: calls go through (one HGETALL of a missing key per call);
- the first permanent error *opens* it: logged and alerted once fleet-wide (by the process
  that opened it: ``CircuitOpen.opened``); every job that needs it then waits (``CircuitOpen``: a delayed retry that burns none)
  without calling, so nothing is paid, retried per job or dead-lettered;
- after ``PROBE_AFTER`` one call (a *probe*, elected by a Redis lock) goes through; success
  closes the breaker and the waiting jobs flow again; the same error on the probe keeps it open
  and the next probe waits twice as long (up to ``MAX_PROBE_AFTER``). Calls already in flight
  when it opened that fail the same way change nothing.
"""
from __future__ import annotations

import logging
import random
import time

import redis

from worker.errors import CircuitOpen
from worker.redis_client import as_text
from worker.retrying import status_of

PREFIX = "tracejudge:circuit:"
LANGFUSE = "langfuse"  # writes (and reads): a revoked key or suspended ingestion stops every job alike
PROBE_AFTER = 30.0
MAX_PROBE_AFTER = 600.0
_PROBE_LOCK_MS = 60_000
log = logging.getLogger("tracejudge.circuit")

# KEYS: the breaker; ARGV: reason, now, first probe delay, max delay, whether the call was the
# probe. Opens it (1); when the probe failed, pushes the next probe out (0). A call that was
# already in flight when the breaker opened and fails the same way changes nothing (0): a
# fleet's in-flight calls must not push the first probe out exponentially (64 threads: ten
# minutes instead of thirty seconds, long after the key was restored).
_OPEN = """
local wait = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[5] ~= '1' then return 0 end
  wait = math.min(tonumber(ARGV[4]), 2 * tonumber(redis.call('HGET', KEYS[1], 'wait') or ARGV[3]))
  redis.call('HSET', KEYS[1], 'reason', ARGV[1], 'wait', wait, 'probe_at', tonumber(ARGV[2]) + wait)
  return 0
end
redis.call('HSET', KEYS[1], 'reason', ARGV[1], 'opened_at', ARGV[2], 'wait', wait, 'probe_at', tonumber(ARGV[2]) + wait)
return 1
"""

# KEYS: the breaker, its probe lock; ARGV: now, lock ms. 1 when this call is the probe.
_ELECT = """
local probe_at = redis.call('HGET', KEYS[1], 'probe_at')
if not probe_at or tonumber(ARGV[1]) < tonumber(probe_at) then return 0 end
if redis.call('SET', KEYS[2], 1, 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""


def permanent_problem(exc: BaseException, *, service: str) -> str | None:
    """What makes ``exc`` unhealable for every job (``service``: "judge" or "langfuse"), or None.
    The reason names the status only: an error's text may carry a URL or a key fragment."""
    status = status_of(exc)
    if status == 401:
        return "authentication failed (HTTP 401): the key was revoked or is wrong"
    if status == 403:
        if service == "langfuse":
            suspended = "suspend" in str(getattr(exc, "body", "") or exc).lower()
            return "ingestion suspended (HTTP 403)" if suspended else "writes forbidden (HTTP 403)"
        return "permission denied (HTTP 403)"
    if status == 404 and service == "judge" and "model" in str(exc).lower():
        return "unknown or retired model (HTTP 404)"
    return None


class Breaker:
    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client, self.name, self.key = client, name, PREFIX + name
        self._open = client.register_script(_OPEN)
        self._elect = client.register_script(_ELECT)

    def before_call(self, now: float | None = None) -> bool:
        """Raise CircuitOpen when the breaker is open and this call is not its probe; returns
        True when this call is the probe."""
        state = self.client.hgetall(self.key)
        if not state:
            return False
        now = time.time() if now is None else now
        probe_at = float(state.get(b"probe_at") or 0)
        reason = as_text(state.get(b"reason") or b"")
        # Elected in one script against the breaker's current probe_at: a probe that just failed
        # (probe_at pushed out, lock freed) must not let a call that read the old state probe again.
        if now >= probe_at and self._elect(keys=[self.key, self.key + ":probe"], args=[now, _PROBE_LOCK_MS]):
            log.info("circuit probe", extra={"circuit": self.name})
            return True
        wait = max(probe_at - now, 5.0) * random.uniform(1.0, 1.5)  # jitter: the backlog must not stampede the probe
        raise CircuitOpen(self.name, reason, retry_after=wait)

    def succeeded(self, probing: bool) -> None:
        if probing:
            self.client.delete(self.key, self.key + ":probe")
            log.warning("circuit closed: the probe succeeded, work resumes", extra={"circuit": self.name})

    def failed(self, exc: BaseException, *, service: str, probing: bool, now: float | None = None) -> CircuitOpen | None:
        """For a permanent problem: open (or keep open) the breaker and return the CircuitOpen to
        raise instead of ``exc``; None for any other error (and a failed probe's lock is freed)."""
        reason = permanent_problem(exc, service=service)
        if reason is None:
            if probing:
                self.client.delete(self.key + ":probe")
            return None
        now = time.time() if now is None else now
        opened = self._open(keys=[self.key], args=[reason, now, PROBE_AFTER, MAX_PROBE_AFTER, int(probing)])
        if probing:  # only the probe holds the lock: another call's failure must not free it
            self.client.delete(self.key + ":probe")
        if opened:
            # Once fleet-wide: only the process whose script opened the breaker says so.
            log.error("circuit opened: this work waits until a probe succeeds",
                      extra={"circuit": self.name, "reason": reason})
        return CircuitOpen(self.name, reason, retry_after=PROBE_AFTER, opened=bool(opened))

    def state(self) -> dict[str, str]:
        return {as_text(k): as_text(v) for k, v in self.client.hgetall(self.key).items()}


def open_circuits(client: redis.Redis) -> dict[str, dict[str, str]]:
    """Every open breaker and why (for ``status``)."""
    out: dict[str, dict[str, str]] = {}
    for key in client.scan_iter(match=PREFIX + "*", count=200):
        name = as_text(key)[len(PREFIX):]
        if not name.endswith(":probe"):
            out[name] = Breaker(client, name).state()
    return out
