"""Rate-limit state in words, for ``tracejudge status``."""
from __future__ import annotations

import redis

from worker.rate_limits.backends.redis import RedisBackend


def status_lines(client: redis.Redis) -> list[str]:
    """One line per limited key: the learned pace if any, 429s seen, background share, pause left, waits."""
    lines: list[str] = []
    for key, s in RedisBackend(client).snapshot().items():
        limit = f"lowered to {s['adaptive_rpm']:.0f}/min" if s["adaptive_rpm"] is not None else "at its limit"
        lowest = f", lowest {s['lowest_rpm']:.0f}/min" if s["lowest_rpm"] is not None else ""
        paused = f", paused {s['paused_for']:.0f}s more" if s["paused_for"] > 0 else ""
        if s.get("background"):
            lowest += f", {s['background']:.0%} background refusals"
        lines.append(f"rate limit {key}: {limit}{lowest}, {s['throttled']} throttled{paused}, "
                     f"{s['waits']} waits ({s['wait_seconds']:.0f}s)")
    return lines
