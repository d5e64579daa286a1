"""Provider rate limits for the judge emulator: a token bucket per provider that answers 429 with
Retry-After when empty, as the Anthropic and OpenAI APIs do, changeable or lifted at run time.

A bucket refills continuously at ``requests_per_minute / 60`` per second (optionally also a
tokens-per-minute bucket) and holds ``burst_seconds`` of it; a request that finds it empty is
refused before it is answered, with ``retry-after`` the whole seconds until it would pass.

    python -m emulators.judge_limits --port 8788 --latency-ms 500      # the judge emulator, limitable
    POST /_emulator/limits {"anthropic": {"requests_per_minute": 1200}}  # set (null lifts it)
    GET  /_emulator/limits                                              # limits and counts
"""
from __future__ import annotations

import argparse
import json
import math
import threading
import time
from collections import Counter

from emulators.http_base import Reply, serve_until_signalled
from emulators.judge_api import JudgeEmulator, _error
from emulators.judge_verdicts import tokens as count_tokens


class _Bucket:
    def __init__(self, per_minute: float, burst_seconds: float, now: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level, self.at = self.capacity, now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` fits (0 if it does now)."""
        amount = min(amount, self.capacity)
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate


class ProviderLimits:
    """Token buckets per provider ("anthropic", "openai"); thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._config: dict[str, dict] = {}
        self._buckets: dict[str, tuple[_Bucket | None, _Bucket | None]] = {}
        self.counts: Counter = Counter()

    def set(self, provider: str, requests_per_minute: float | None = None,
            tokens_per_minute: float | None = None, burst_seconds: float = 1.0) -> None:
        """Set (or, with neither limit, lift) ``provider``'s limit; a new bucket starts full."""
        now = time.monotonic()
        with self._lock:
            if requests_per_minute is None and tokens_per_minute is None:
                self._config.pop(provider, None)
                self._buckets.pop(provider, None)
                return
            self._config[provider] = {"requests_per_minute": requests_per_minute,
                                      "tokens_per_minute": tokens_per_minute, "burst_seconds": burst_seconds}
            self._buckets[provider] = (
                _Bucket(requests_per_minute, burst_seconds, now) if requests_per_minute else None,
                _Bucket(tokens_per_minute, burst_seconds, now) if tokens_per_minute else None)

    def admit(self, provider: str, body) -> None:
        """Take one request (and its tokens) from the bucket, or raise the provider's 429."""
        with self._lock:
            buckets = self._buckets.get(provider)
            if buckets is None:
                return
            now = time.monotonic()
            requests, tokens = buckets
            cost = count_tokens(json.dumps(body)) + int((body or {}).get("max_tokens") or 0) if tokens else 0
            wait = 0.0
            for bucket, amount in ((requests, 1.0), (tokens, cost)):
                if bucket is not None:
                    bucket.refill(now)
                    wait = max(wait, bucket.wait_for(amount))
            if wait > 0:
                self.counts[f"{provider}:429"] += 1
                kind = "rate_limit_error" if provider == "anthropic" else "rate_limit_exceeded"
                raise _error(provider, 429, kind, "emulated provider rate limit",
                             {"retry-after": str(max(1, math.ceil(wait)))})
            for bucket, amount in ((requests, 1.0), (tokens, cost)):
                if bucket is not None:
                    bucket.level -= min(amount, bucket.capacity)
            self.counts[f"{provider}:admitted"] += 1

    def describe(self) -> dict:
        with self._lock:
            return {"limits": dict(self._config), "counts": dict(self.counts)}


class LimitedJudgeEmulator(JudgeEmulator):
    """The judge emulator with provider limits (judge_api.py asks ``provider_limits`` first)."""

    def __init__(self, *args, **kwargs):
        self.provider_limits = ProviderLimits()
        super().__init__(*args, **kwargs)

    def handle(self, method, path, query, headers, body, raw: bytes = b""):
        if path == "/_emulator/limits":
            if method == "POST":
                try:
                    for provider, limit in (body or {}).items():
                        self.provider_limits.set(provider, **(limit or {}))
                except (TypeError, ValueError, AttributeError) as exc:
                    raise Reply(400, {"error": str(exc)}) from None
            return 200, self.provider_limits.describe(), {}
        return super().handle(method, path, query, headers, body, raw)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="judge API emulator with provider rate limits")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    serve_until_signalled(LimitedJudgeEmulator(args.host, args.port, latency_ms=args.latency_ms, seed=args.seed))


if __name__ == "__main__":
    main()
