"""The alert outbox: an alert is stored in Redis before any sink sees it and removed only when
every sink took it, so a failing sink delays an alert but never loses it."""
from __future__ import annotations

import json
import logging

import redis

from worker.alerts.kinds import Alert, from_json
from worker.alerts.sinks import Sink

OUTBOX = "tracejudge:alerts:outbox"
log = logging.getLogger("tracejudge.alerts")


def enqueue(client: redis.Redis, alert: Alert, sinks: list[Sink]) -> None:
    for sink in sinks:
        client.hset(OUTBOX, f"{sink.name}:{alert.id}", json.dumps(alert.as_json()))


def deliver(client: redis.Redis, sinks: list[Sink]) -> tuple[int, int]:
    """Send everything pending; returns (sent, still pending)."""
    by_name = {s.name: s for s in sinks}
    sent = 0
    for key, raw in client.hgetall(OUTBOX).items():
        sink_name = key.decode().split(":", 1)[0]
        sink = by_name.get(sink_name)
        if sink is None:
            continue  # that sink is not configured in this process; keep the alert
        try:
            sink.send(from_json(json.loads(raw)))
        except Exception as exc:  # boundary: any sink failure keeps the alert for the next run
            log.error("alert delivery failed; kept in the outbox", extra={"sink": sink_name, "error": str(exc)[:300]})
            continue
        client.hdel(OUTBOX, key)
        sent += 1
    return sent, client.hlen(OUTBOX)
