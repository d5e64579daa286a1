"""Which rubric versions a trace is selected for: applicability filters, then the hash."""
from __future__ import annotations

from collections.abc import Mapping

from samplers.hashing import is_sampled, sample_point
from samplers.plan import RatePlan, trace_rates
from samplers.quota import SegmentQuota
from samplers.source import TraceRef
from samplers.traffic import TrafficCounter
from worker.drift.contribution import segments
from worker.drift.weighting import Weighting
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
           quota: SegmentQuota | None = None, plans: Mapping[str, RatePlan] | None = None) -> list[Rubric]:
    """The rubrics ``ref`` is sampled for: the contract's ``u < rate``.

    ``quota`` (a samplers.quota.SegmentQuota) raises the rate of rubrics with a per-segment
    minimum for traces of small segments, and counts every applicable trace it is asked about;
    None samples at the plain rate. ``plans``: the rate plans of power-aware rubrics (by key).
    """
    return [rubric for rubric, _ in select_with_inclusion(rubrics, ref, rate_override, quota, plans)]


def select_with_inclusion(rubrics: list[Rubric], ref: TraceRef, rate_override: float | None,
                          quota: SegmentQuota | None = None, plans: Mapping[str, RatePlan] | None = None,
                          traffic: TrafficCounter | None = None) -> list[tuple[Rubric, Weighting | None]]:
    """``select``, with how each power-aware rubric (``sampling.detection_target``) picked the
    trace: its rate is the max of its cells' rates (samplers/plan.py ``trace_rates``: the plan's,
    the base rate, the quota's), still the contract's ``u < rate``, so a raised rate only adds
    traces. Other rubrics: None, and exactly the rate they always had. ``traffic`` counts every
    trace a power-aware rubric applies to (samplers/traffic.py)."""
    chosen: list[tuple[Rubric, Weighting | None]] = []
    for rubric in rubrics:
        if not applies(rubric, ref):
            continue
        rate = rate_for(rubric, override=rate_override)
        if rubric.power is not None:
            if traffic is not None:
                traffic.observe(rubric.key, ref.trace_id, ref.metadata, ref.timestamp)
            if rate <= 0:
                continue  # a rate of 0 switches the rubric off, its plan included
            quota_rate = quota.rate(rubric, ref, rate) if quota is not None and rate_override is None else None
            rates = trace_rates(segments(ref.metadata), rate, (plans or {}).get(rubric.key), rubric.segment_key,
                                quota_rate, override=rate_override)
            found = Weighting.of(rates, sample_point(ref.trace_id))
            if found.selected:
                chosen.append((rubric, found))
            continue
        if quota is not None:
            rate = quota.rate(rubric, ref, rate)
        if is_sampled(ref.trace_id, rate):
            chosen.append((rubric, None))
    return chosen
