"""The traffic-mix side of attribution: Kitagawa's mix/rate split of a drop, the dimension
whose mix term is largest, and a slice's expected after-mean with that mix removed.

The drop ΔM = μ₁ − μ₀ splits, along a dimension, into *mix* and *rate* (Kitagawa /
Oaxaca–Blinder): ΔM = Σ(w₁−w₀)·μ₀ [mix] + Σ w₁·(μ₁−μ₀) [rate]. A slice's expected after-mean
without a rate change is E_s = Σ_v w₁(v|s)·μ₀(s, v) over the mix dimension's values v (from the
pair aggregates); pairs take the average of their halves' adjustments (no triples are kept).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from worker.drift.attribution_index import CellIndex, mean_or
from worker.drift.attribution_types import MixDriver, Moments, SliceKey, slice_key


def decompose(slices: Sequence[tuple[Moments, Moments]], before_mean: float) -> tuple[float, float]:
    """Kitagawa's split of the change of a mean along one dimension's values, given each value's
    (before, after): (mix, rate) with mix + rate = μ₁ − μ₀ when the values partition the cell.
    A value with no scores before takes ``before_mean`` as its μ₀."""
    n0 = sum(b.n for b, _ in slices)
    n1 = sum(a.n for _, a in slices)
    mix = rate = 0.0
    for b, a in slices:
        w0 = b.n / n0 if n0 else 0.0
        w1 = a.n / n1 if n1 else 0.0
        mu0 = b.mean if b.n else before_mean
        mix += (w1 - w0) * mu0
        if a.n:
            rate += w1 * (a.mean - mu0)
    return mix, rate


def mix_dimension(ix: CellIndex, mu0: float) -> tuple[str | None, float, tuple[MixDriver, ...]]:
    """The dimension with the largest Kitagawa mix term (new values merged into their
    previous), its mix term, and its values' mix contributions."""
    best: tuple[float, str, float, tuple[MixDriver, ...]] | None = None
    for dim, values in ix.singles.items():
        if any(d == dim and (d, v) not in ix.previous for d, v in ix.new):
            continue  # its shares moved because of the change event, not the traffic mix
        merged: dict[str, tuple[Moments, Moments]] = {}
        for value, s in values.items():
            target = ix.merged((dim, value))[1]
            b, a = merged.get(target, (Moments(), Moments()))
            merged[target] = (b + (s.before if target == value else Moments()), a + s.after)
        if len(merged) < 2:
            continue
        mix, _ = decompose(list(merged.values()), mu0)
        n0 = sum(b.n for b, _ in merged.values())
        n1 = sum(a.n for _, a in merged.values())
        if not n0 or not n1:
            continue
        drivers = tuple(sorted(
            (MixDriver(dim, v, b.n / n0, a.n / n1, mean_or(b, mu0), (a.n / n1 - b.n / n0) * (mean_or(b, mu0) - mu0))
             for v, (b, a) in merged.items()), key=lambda d: -abs(d.contribution)))
        if best is None or abs(mix) > abs(best[0]):
            best = (mix, dim, mix, drivers)
    if best is None:
        return None, 0.0, ()
    return best[1], best[2], best[3]


def expected_single(ix: CellIndex, key: SliceKey, mix_dim: str | None) -> float:
    """A single slice's expected after-mean without a rate change: its before means in each
    value of the mix dimension, weighted by its after traffic there."""
    own = ix.before(key)
    mu = own.mean if own.n else math.nan
    if mix_dim is None or key[0][0] == mix_dim or math.isnan(mu):
        return mu
    total_w = 0.0
    acc = 0.0
    for value in ix.singles.get(mix_dim, {}):
        pk = slice_key(key[0], (mix_dim, value))
        p = ix.pairs.get(pk)
        if p is None or p.after.n == 0:
            continue
        b = ix.before(pk)
        mu_v = b.mean if b.n >= 5 else mu
        acc += p.after.n * mu_v
        total_w += p.after.n
    return acc / total_w if total_w else mu


def expected_of(ix: CellIndex, key: SliceKey, drift: Mapping[SliceKey, float], mix_dim: str | None,
                default: float) -> float:
    base = mean_or(ix.before(key), default)
    if len(key) == 1:
        return base + drift.get(key, 0.0)
    if mix_dim is not None and mix_dim in (key[0][0], key[1][0]):
        return base
    return base + (drift.get((key[0],), 0.0) + drift.get((key[1],), 0.0)) / 2
