"""The contract's deterministic sampling decision: the same in every replica and every re-run."""
from __future__ import annotations

import hashlib

_PREFIX = "tracejudge:v1:"


def sample_point(trace_id: str) -> float:
    """u in [0, 1) for a trace id, exactly as the public contract defines it."""
    digest = hashlib.sha256((_PREFIX + trace_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_sampled(trace_id: str, rate: float) -> bool:
    return sample_point(trace_id) < rate
