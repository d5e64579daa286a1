"""The Redis rate-limit store: per key a paced send time, a sliding-window log for a configured
limit and outcome counts, updated by atomic Lua scripts (redis_scripts.py) that read Redis's own
clock (``TIME``), so no host's clock skew can let a window overflow.

Keys (the ``{key}`` hash tag keeps one limit's keys on one cluster slot):
  tracejudge:ratelimit:{K}:log    ZSET request id -> admit time (ms)
  tracejudge:ratelimit:{K}:tok    ZSET request id -> admit time (ms), requests that reserved tokens
  tracejudge:ratelimit:{K}:amt    HASH request id -> tokens reserved (settled to real usage later)
  tracejudge:ratelimit:{K}:state  HASH tat (next send time of the pace), base/t0/oks (the learned
                                  pace, when it was set, whether a call succeeded since), bg
                                  (background refusal share), verify/pre_x/pre_n/pre_rate (a
                                  decrease awaiting its check), ep, pause_until, tokens (sum in window),
                                  active_until, last_decrease, lowest_rpm, throttled
  tracejudge:ratelimit:{K}:ok     HASH 100 ms of response time -> successes   (while active)
  tracejudge:ratelimit:{K}:thr    HASH 100 ms of response time -> refusals (429/529)
  tracejudge:ratelimit:keys       SET of every K seen (for status)
  tracejudge:ratelimit:waits      HASH K -> number of waits;  ...:wait_seconds  HASH K -> seconds
"""
from __future__ import annotations

from collections.abc import Mapping

import redis

from worker.rate_limits.backend import Grant, KeyState, RateLimitBackend
from worker.redis_client import as_text
from worker.rate_limits.backends.redis_scripts import ACQUIRE, SETTLE, SUCCEEDED, THROTTLED

PREFIX = "tracejudge:ratelimit:"
KEYS_SET = PREFIX + "keys"
WAITS = PREFIX + "waits"
WAIT_SECONDS = PREFIX + "wait_seconds"


def _keys(key: str) -> list[str]:
    base = f"{PREFIX}{{{key}}}:"
    return [base + "log", base + "tok", base + "amt", base + "state", base + "ok", base + "thr"]


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


class RedisBackend(RateLimitBackend):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._acquire = client.register_script(ACQUIRE)
        self._settle = client.register_script(SETTLE)
        self._throttled = client.register_script(THROTTLED)
        self._succeeded = client.register_script(SUCCEEDED)
        self._known: set[str] = set()

    def acquire(self, key: str, *, rpm: int | None, tpm: int | None, tokens: int, member: str,
                window: float, horizon: float, recovery: float) -> Grant:
        if key not in self._known:  # listed for status; outside the script, as it is another slot
            self.client.sadd(KEYS_SET, key)
            self._known.add(key)
        admitted, wait_ms, adaptive, slot = self._acquire(
            keys=_keys(key)[:4], args=[rpm or 0, tpm or 0, _ms(window), int(tokens), member, _ms(horizon),
                                       recovery])
        return Grant(bool(admitted), int(wait_ms) / 1000, bool(adaptive), int(slot))

    def settle(self, key: str, member: str, tokens: int) -> None:
        self._settle(keys=_keys(key)[1:4], args=[member, int(tokens)])

    def throttled(self, key: str, *, rpm: int | None, tpm: int | None, retry_after: float | None,
                  window: float, factor: float, evidence: float, recovery: float, floor: float,
                  latency: float) -> int:
        return int(self._throttled(keys=_keys(key), args=[
            rpm or 0, tpm or 0, _ms(window), _ms(retry_after or 0), factor, _ms(evidence), recovery, floor,
            _ms(latency)]))

    def succeeded(self, key: str) -> None:
        keys = _keys(key)
        self._succeeded(keys=[keys[3], keys[4]])

    def record_wait(self, key: str, seconds: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(WAITS, key, 1)
        pipe.hincrbyfloat(WAIT_SECONDS, key, seconds)
        pipe.execute()

    def snapshot(self) -> dict[str, KeyState]:
        now_s, now_us = self.client.time()
        now_ms = now_s * 1000 + now_us // 1000
        waits = _decoded(self.client.hgetall(WAITS))
        wait_seconds = _decoded(self.client.hgetall(WAIT_SECONDS))
        result: dict[str, KeyState] = {}
        for raw in sorted(self.client.smembers(KEYS_SET)):
            key = as_text(raw)
            state = _decoded(self.client.hgetall(_keys(key)[3]))
            pause = float(state.get("pause_until", 0))
            result[key] = {
                "adaptive_rpm": _maybe_float(state.get("base")),
                "background": float(state.get("bg", 0.0)),
                "lowest_rpm": _maybe_float(state.get("lowest_rpm")),
                "throttled": int(state.get("throttled", 0)),
                "paused_for": max(0.0, (pause - now_ms) / 1000),
                "waits": int(waits.get(key, 0)),
                "wait_seconds": float(wait_seconds.get(key, 0.0)),
            }
        return result


def _decoded(mapping: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {as_text(k): as_text(v) for k, v in mapping.items()}


def _maybe_float(value: str | None) -> float | None:
    return None if value is None else float(value)
