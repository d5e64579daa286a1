"""The alert outbox: an alert is stored in Redis before any sink sees it and removed only when
every sink took it, so a failing sink delays an alert but never loses it.

Delivery is idempotent per alert id and sink, however many processes deliver at once (two
schedulers during a lease hand-over, workers delivering budget alerts): a sender *claims* an
entry before it sends, and a successful send leaves a *delivered* marker in the same script
that drops the entry and the claim. A claim that finds the marker drops the entry instead of
sending; re-enqueuing a delivered alert is a no-op. The one gap left is a process that dies
between the sink's 2xx and the marker: its claim expires and the alert is sent again once
(PagerDuty folds that into the same incident by its dedup key).

    tracejudge:alerts:outbox                       hash  "<sink>:<alert id>" -> alert JSON
    tracejudge:alerts:outbox:since                 hash  same field -> when it was first stored
    tracejudge:alerts:claim:<sink>:<alert id>      a sender's claim (expires: a crashed sender)
    tracejudge:alerts:delivered:<sink>:<alert id>  delivered (kept DELIVERED_TTL_SECONDS)
"""
from __future__ import annotations

import json
import logging
import time
import uuid

import redis

from worker.alerts.kinds import Alert, from_json
from worker.alerts.sinks import Sink
from worker.redis_client import as_text
from worker.retrying import status_of

OUTBOX = "tracejudge:alerts:outbox"
SINCE = OUTBOX + ":since"
CLAIM = "tracejudge:alerts:claim:"
DELIVERED = "tracejudge:alerts:delivered:"
CLAIM_TTL_MS = 300_000  # well past a sink's own retry deadline (30 s)
DELIVERED_TTL_SECONDS = 30 * 86400  # far past any re-raise of the same alert id
# An entry for a sink no process configures any more (a removed Slack webhook) is dropped after this.
ORPHAN_SECONDS = 7 * 86400
log = logging.getLogger("tracejudge.alerts")

# KEYS: outbox, since, delivered marker; ARGV: field, alert JSON, now
_ENQUEUE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3])
return 1
"""
# KEYS: outbox, since, delivered marker, claim; ARGV: field, token, claim ttl ms
_CLAIM = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HDEL', KEYS[1], ARGV[1]); redis.call('HDEL', KEYS[2], ARGV[1])
  return 'delivered'
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 'gone' end
if redis.call('SET', KEYS[4], ARGV[2], 'NX', 'PX', ARGV[3]) then return 'claimed' end
return 'busy'
"""
# KEYS: outbox, since, delivered marker, claim; ARGV: field, token, delivered ttl s
_DELIVERED = """
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
redis.call('HDEL', KEYS[1], ARGV[1]); redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[4]) == ARGV[2] then redis.call('DEL', KEYS[4]) end
return 1
"""
_UNCLAIM = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def _keys(field: str) -> list[str]:
    return [OUTBOX, SINCE, DELIVERED + field, CLAIM + field]


def enqueue(client: redis.Redis, alert: Alert, sinks: list[Sink]) -> None:
    raw = json.dumps(alert.as_json())
    for sink in sinks:
        field = f"{sink.name}:{alert.id}"
        client.eval(_ENQUEUE, 3, *_keys(field)[:3], field, raw, time.time())


def delivered(client: redis.Redis, sink_name: str, alert_id: str) -> bool:
    return bool(client.exists(DELIVERED + f"{sink_name}:{alert_id}"))


def deliver(client: redis.Redis, sinks: list[Sink], now: float | None = None) -> tuple[int, int]:
    """Send everything pending that no other process is sending; returns (sent, still pending)."""
    now = time.time() if now is None else now
    by_name = {s.name: s for s in sinks}
    since = {as_text(k): float(v) for k, v in client.hgetall(SINCE).items()}
    sent = 0
    for key, raw in client.hgetall(OUTBOX).items():
        field = as_text(key)
        sink_name = field.split(":", 1)[0]
        sink = by_name.get(sink_name)
        if sink is None:
            _orphan(client, field, since.get(field), now)
            continue
        token = uuid.uuid4().hex
        state = client.eval(_CLAIM, 4, *_keys(field), field, token, CLAIM_TTL_MS)
        if state != b"claimed":
            continue  # delivered already, or another process is sending it right now
        try:
            sink.send(from_json(json.loads(raw)))
        except Exception as exc:  # boundary: any sink failure keeps the alert for the next run
            client.eval(_UNCLAIM, 1, CLAIM + field, token)
            # By status and sink name only: the exception text of an HTTP error carries the sink's
            # URL, and a Slack or webhook URL is a credential.
            log.error("alert delivery failed; kept in the outbox",
                      extra={"sink": sink_name, "status": _status(exc), "error_type": type(exc).__name__,
                             "alert_id": field.split(":", 1)[1]})
            continue
        client.eval(_DELIVERED, 4, *_keys(field), field, token, DELIVERED_TTL_SECONDS)
        sent += 1
    return sent, client.hlen(OUTBOX)


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a failed send, also when a retry wrapper raised it as transient."""
    cause: BaseException | None = exc
    while cause is not None:
        status = status_of(cause)
        if status is not None:
            return status
        cause = cause.__cause__
    return None


def _orphan(client: redis.Redis, field: str, first_seen: float | None, now: float) -> None:
    """An entry for a sink this process does not configure: kept for a process that does, but
    not forever (a removed sink's alerts would otherwise pile up)."""
    if first_seen is None:
        client.hsetnx(SINCE, field, now)  # written before ``since`` existed: the clock starts now
    elif now - first_seen > ORPHAN_SECONDS:
        client.hdel(OUTBOX, field)
        client.hdel(SINCE, field)
        log.warning("alert dropped: its sink has not been configured for a week",
                    extra={"sink": field.split(":", 1)[0], "alert_id": field.split(":", 1)[1]})
