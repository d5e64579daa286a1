"""Which traces a power-aware sampler judges: a trace's inclusion probability (the max of its
cells' rates), the contract's hash decision against it, boosts after a change, and Kish's
effective sample size of a mixture of rates (samplers/power.py allocates the rates)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from samplers.hashing import sample_point

DEFAULT_BOOST_HOURS = 48.0


def inclusion_probability(rates: Mapping[str, float], cells: Iterable[str], base_rate: float = 0.0) -> float:
    """A trace's inclusion probability: the max of its cells' rates (a cell without a rate counts
    as ``base_rate``), capped at 1. The trace is judged when its hash point u < this, so it is
    judged if any of its cells' thresholds would pick it."""
    p = base_rate
    for cell in cells:
        p = max(p, rates.get(cell, base_rate))
    return min(1.0, max(0.0, p))


def selected(trace_id: str, rates: Mapping[str, float], cells: Iterable[str], base_rate: float = 0.0) -> bool:
    """The contract's decision with the trace's inclusion probability as the threshold:
    sample_point(trace_id) < inclusion_probability(...). Nested: monotone in every rate."""
    return sample_point(trace_id) < inclusion_probability(rates, cells, base_rate)


def boost_active(changed_at: float | None, now: float | None, hours: float = DEFAULT_BOOST_HOURS) -> bool:
    """True while a change event first seen at ``changed_at`` is less than ``hours`` old."""
    if changed_at is None or now is None:
        return False
    return changed_at <= now < changed_at + hours * 3600.0


def effective_n(parts: Iterable[tuple[float, float]]) -> float:
    """Kish's effective sample size of a weighted mean over pieces of traffic (traces a day N_s,
    inclusion probability p_s) sampled independently: (Σ N_s)² / Σ N_s/p_s. Equals p·N at one
    rate; a mixture of rates is worth less than its raw count (0 when a piece is never sampled)."""
    total = inv = 0.0
    for traffic, p in parts:
        if traffic <= 0:
            continue
        if p <= 0:
            return 0.0
        total += traffic
        inv += traffic / min(p, 1.0)
    return total * total / inv if inv else 0.0
