"""Whether the Redis server may evict tracejudge's keys, for ``tracejudge status``.

tracejudge keeps its state in Redis and bounds it itself (every key family has a TTL or a
cap, see worker/fleet/housekeeping.py). A server that evicts under memory pressure breaks
that state: ``volatile-*`` policies evict the keys that *have* a TTL first, and those are the
exactly-once markers (enqueue dedup, done markers, delivered alerts), so traces would be
judged, paid and counted twice; ``allkeys-*`` may drop queues and aggregates too. Only
``noeviction`` (or no memory limit) is safe: writes then fail loudly and are retried.
"""
from __future__ import annotations

import redis

from worker.redis_client import as_text

SAFE_POLICY = "noeviction"


def eviction_warning(client: redis.Redis) -> str | None:
    """A one-line warning when the server's ``maxmemory-policy`` could evict our keys; None when
    it cannot (``noeviction``, or no ``maxmemory`` limit). A server that hides CONFIG (some
    managed services) gets a warning to check the policy by hand."""
    try:
        config = client.config_get("maxmemory*")
    except redis.ResponseError:
        return ("cannot read the Redis maxmemory-policy (CONFIG is disabled): make sure it is noeviction, "
                "or evictions will drop tracejudge's exactly-once markers")
    # redis-py types the reply as str, but our clients (no ``decode_responses``) answer bytes
    settings = {as_text(k): as_text(v) for k, v in config.items() if k is not None and v is not None}
    policy = settings.get("maxmemory-policy") or SAFE_POLICY
    limit = int(settings.get("maxmemory") or 0)
    if policy == SAFE_POLICY or limit == 0:
        return None
    what = ("keys with a TTL first: tracejudge's exactly-once markers, so traces get judged and counted twice"
            if policy.startswith("volatile-") else "any key: queues, dedup markers and drift aggregates")
    return (f"Redis maxmemory-policy is {policy} (maxmemory {limit} bytes): under memory pressure it evicts "
            f"{what}; set maxmemory-policy noeviction")

