"""The contract's deterministic sampling decision: the same in every replica and every re-run."""
from __future__ import annotations

import hashlib

from worker.rubrics.rubric import Rubric

_PREFIX = "tracejudge:v1:"


def sample_point(trace_id: str) -> float:
    """u in [0, 1) for a trace id, exactly as the public contract defines it."""
    digest = hashlib.sha256((_PREFIX + trace_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_sampled(trace_id: str, rate: float) -> bool:
    return sample_point(trace_id) < rate


def quota_scope(rubric: Rubric, trace_id: str, rate_override: float | None) -> str | None:
    """The segment key a trace is confined to in the drift cells when only its segment's quota
    (not the base rate) picked it; None when the base rate would have picked it anyway."""
    if not rubric.segment_key:
        return None
    rate = rubric.sampling_rate if rate_override is None else rate_override
    return None if is_sampled(trace_id, rate) else rubric.segment_key
