"""Which rubric versions a trace is selected for: applicability filters, then the hash."""
from __future__ import annotations

from samplers.hashing import is_sampled
from samplers.quota import SegmentQuota
from samplers.source import TraceRef
from worker.rubrics.fields import metadata_text
from worker.rubrics.rubric import Rubric


def applies(rubric: Rubric, ref: TraceRef) -> bool:
    a = rubric.applies_to
    if a.environments and ref.environment not in a.environments:
        return False
    if a.trace_names and ref.name not in a.trace_names:
        return False
    if a.tags and not set(a.tags) <= set(ref.tags):
        return False
    return all(metadata_text(ref.metadata.get(k)) == v for k, v in a.metadata)


def rate_for(rubric: Rubric, override: float | None) -> float:
    return rubric.sampling_rate if override is None else override


def select(rubrics: list[Rubric], ref: TraceRef, rate_override: float | None,
           quota: SegmentQuota | None = None) -> list[Rubric]:
    """The rubrics ``ref`` is sampled for: the contract's ``u < rate``.

    ``quota`` (a samplers.quota.SegmentQuota) raises the rate of rubrics with a per-segment
    minimum for traces of small segments, and counts every applicable trace it is asked about;
    None samples at the plain rate.
    """
    chosen = []
    for rubric in rubrics:
        if not applies(rubric, ref):
            continue
        rate = rate_for(rubric, override=rate_override)
        if quota is not None:
            rate = quota.rate(rubric, ref, rate)
        if is_sampled(ref.trace_id, rate):
            chosen.append(rubric)
    return chosen

