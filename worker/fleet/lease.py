"""The scheduler's Redis lease: one active scheduler fleet-wide, kept alive while it works (and,
under its own key, one reader of the written scores at a time: worker/fleet/confirmer.py).

The lease is renewed at every tick and, while a tick runs, by a keeper thread every third of
its time to live, so a long catch-up pass, batch collect or drift run does not outlive it and
let a second scheduler start the same work. A renewal that finds another holder marks the
lease lost; the tick checks that between its phases and stops. A renewal that cannot reach
Redis is retried (the client rides out the outage): only another holder ends our lease.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator

import redis

LOCK_KEY = "tracejudge:scheduler:lock"
log = logging.getLogger("tracejudge.scheduler")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Lease:
    def __init__(self, client: redis.Redis, ttl_seconds: float, *, key: str = LOCK_KEY, name: str = "scheduler"):
        self.client, self.key, self.name = client, key, name
        self.token = uuid.uuid4().hex
        self.ttl_ms = int(ttl_seconds * 1000)
        self.lost = threading.Event()
        self._renew = client.register_script(_RENEW)

    def hold(self) -> bool:
        """Take the lease if free, renew it if ours; False when another scheduler holds it."""
        if self._renew(keys=[self.key], args=[self.token, self.ttl_ms]) or \
                self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            self.lost.clear()
            return True
        self.lost.set()
        return False

    def renew(self) -> bool:
        """Extend the lease only if it is still ours (never takes it over)."""
        if self._renew(keys=[self.key], args=[self.token, self.ttl_ms]):
            return True
        self.lost.set()
        return False

    @contextlib.contextmanager
    def kept_alive(self) -> Iterator[Lease]:
        """Renew every third of the time to live until the block ends (or the lease is lost)."""
        done = threading.Event()

        def keep() -> None:
            while not done.wait(self.ttl_ms / 3000):
                try:
                    if not self.renew():
                        log.warning(f"{self.name} lease taken over while it was in use")
                        return
                except redis.RedisError as exc:  # boundary: tried again at the next renewal
                    log.warning(f"{self.name} lease renewal failed; retrying", extra={"error_type": type(exc).__name__})

        keeper = threading.Thread(target=keep, name="lease-keeper", daemon=True)
        keeper.start()
        try:
            yield self
        finally:
            done.set()
            keeper.join(timeout=5)

    def release(self) -> None:
        self.client.eval(_RELEASE, 1, self.key, self.token)
