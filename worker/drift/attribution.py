"""Name the cause of one cell's quality drop: which slice, and which change (issue 27, item 2).

Pure functions on aggregates: no Redis, no clock, no I/O. The caller (the alert, later) reads,
for the alerting cell, the scores *before* the estimated start (e.g. [τ̂ − 7 d, τ̂)) and *after*
it ([τ̂, now]) as ``Moments`` (n, Σx, Σx², quality points 0–100) for the whole cell, for every
tracked value of every dimension (``prompt`` = name@version, ``release``, ``version``,
``environment``, ``model``, ``input_tokens`` bucket, ``tool``, metadata keys; each bounded to
its top-K values and "other") and for every pair of values of two dimensions, plus the change
events it saw (a prompt version, release, version or judged model first seen in the cell), and
calls ``attribute(CellData(...))``.

**Slices (mix-adjusted).** The drop ΔM = μ₁ − μ₀ splits, along a dimension, into *mix* and
*rate* (Kitagawa / Oaxaca–Blinder): ΔM = Σ(w₁−w₀)·μ₀ [mix] + Σ w₁·(μ₁−μ₀) [rate]. The dimension
whose mix term is largest (``mix_dimension``, e.g. more traffic from a low-scoring tenant) is
the one every slice is adjusted for: a slice's expected after-mean without a rate change is
E_s = Σ_v w₁(v|s)·μ₀(s, v) over that dimension's values v (from the pair aggregates), so a
slice whose share moved without its score changing (a mix decoy) shows no rate effect and is
never named. Each candidate slice s (single values and pairs with enough support) has a rate
effect δ_s = μ₁ₛ − E_s, a contribution C_s = w₁ₛ·δ_s and explanatory power EP = C_s / rate.
A slice is named when it is significantly worse than the rest of the cell (two-sample z of δ_s
against the complement's δ, Bonferroni over all slices searched), explains ≥ ``ep_min`` of the
rate part, and leaves a complement with no significant drop of its own. Succinctness (as
Adtributor): the most significant single value wins; one of its pairs replaces it only when the
drop inside the value is significantly concentrated in that pair (the rest of the value is
not as bad). When nothing passes, the status says so: "cause not yet known, n = …" (or "mix"
when the drop is the traffic mix), never a guess.

**Change events** inside the start interval are compared old value against new on the same
days and ranked (worker/drift/change_events.py); the one in the named slice comes first.

Modules: the inputs and outputs are in attribution_types.py, the mix/rate split and the
mix-adjusted expectations in attribution_mix.py, the cell index in attribution_index.py, the alert's lines (``describe``) in
attribution_text.py; every public name is importable from here.

Known limits: the adjustment uses one mix dimension (the largest), and pairs are adjusted with
the average of their halves' adjustments (no triples are kept); a cause spread over two values
of a dimension is named as the two values only when neither alone explains enough.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from statistics import NormalDist

from worker.drift.attribution_index import CellIndex, diff_variance, mean_or
from worker.drift.attribution_mix import decompose, expected_of, expected_single, mix_dimension
from worker.drift.attribution_text import describe
from worker.drift.attribution_types import (Attribution, CellData, ChangeEvent, EventFinding, Item, MixDriver,
                                            Moments, NamedSlice, Settings, SliceData, SliceKey, Status, label,
                                            slice_key)
from worker.drift.change_events import Z_EVENT, named_first, rank_events

__all__ = [
    "Attribution", "CellData", "ChangeEvent", "EventFinding", "Item", "MixDriver", "Moments", "NamedSlice",
    "Settings", "SliceData", "SliceKey", "Status", "Z_EVENT", "attribute", "decompose", "describe", "label",
    "rank_events", "slice_key",
]

_NORMAL = NormalDist()


@dataclasses.dataclass(frozen=True)
class _Candidate:
    key: SliceKey
    before: Moments
    after: Moments
    expected: float
    delta: float
    se: float
    contribution: float
    ep: float
    z: float  # against the complement
    z_complement: float  # the complement's own δ


def attribute(cell: CellData, settings: Settings = Settings()) -> Attribution:
    """The cause of the cell's drop: the mix/rate split, the named slice(s) or the reason none
    is named yet, and the change events inside the start interval. See the module doc."""
    ix = CellIndex(cell, settings)
    n0, n1 = cell.before.n, cell.after.n
    mu0, mu1 = cell.before.mean, cell.after.mean
    drop = mu1 - mu0 if n0 and n1 else math.nan
    events = rank_events(cell, settings)
    floor = 0.25 * max(cell.before.variance, 1.0)

    mix_dim, mix, drivers = mix_dimension(ix, mu0)
    rate = drop - mix
    expected_total = mu0 + mix  # Σ w₁(v)·μ₀(v) along the mix dimension

    def result(status: Status, reason: str, named: tuple[NamedSlice, ...] = (), searched: int = 0,
               z_crit: float = math.nan) -> Attribution:
        return Attribution(status, reason, n0, n1, drop, mix, rate, mix_dim, drivers, named, events,
                           searched, z_crit)

    if n1 < settings.min_after or n0 < settings.min_after:
        return result("unknown", f"cause not yet known, n = {n1} after the start "
                                 f"(a slice search needs ≥ {settings.min_after} on each side)")
    se_rate = math.sqrt(diff_variance(cell.after, cell.before, floor))
    if rate > -2 * se_rate and mix < 0 and abs(mix) >= 0.5 * abs(drop):
        top = drivers[0] if drivers else None
        what = (f"; {top.dimension}={top.value} {top.share_before:.0%} → {top.share_after:.0%} of "
                f"traffic" if top else "")
        return result("mix", f"the traffic mix explains the drop: {mix:+.1f} of {drop:+.1f} points "
                             f"along {mix_dim}{what}; no slice got worse (rate {rate:+.1f}, n = {n1})")

    drift: dict[SliceKey, float] = {}
    for dim, values in ix.singles.items():
        for value in values:
            key = ((dim, value),)
            drift[key] = expected_single(ix, key, mix_dim) - mean_or(ix.before(key), mu0)

    candidates: dict[SliceKey, _Candidate] = {}
    for s in ix.singles_list() + list(ix.pairs.values()):
        cand = _candidate(ix, s.key, drift, mix_dim, expected_total, rate, floor)
        if cand is not None:
            candidates[s.key] = cand
    m = len(candidates)
    if m == 0:
        return result("unknown", f"cause not yet known, n = {n1} after the start: no slice has "
                                 f"≥ {settings.min_slice_after} scores and ≥ {settings.min_share:.0%} "
                                 f"of the traffic on both sides")
    z_crit = _NORMAL.inv_cdf(1 - settings.alpha / m)

    def passes(c: _Candidate) -> bool:
        return (c.delta < 0 and c.z <= -z_crit and c.ep >= settings.ep_min
                and c.z_complement > -settings.z_complement)

    if rate >= 0:
        return result("unknown", f"cause not yet known, n = {n1} after the start: no rate drop "
                                 f"once the mix is removed (rate {rate:+.1f})", searched=m,
                      z_crit=z_crit)
    passing = sorted((c for c in candidates.values() if passes(c)), key=lambda c: c.z)
    chosen: _Candidate | None = passing[0] if passing else None
    if chosen is not None and len(chosen.key) == 1:
        child = _concentrated_child(ix, chosen, candidates, passes, floor)
        if child is not None:
            chosen = child
    elif chosen is not None:  # a pair: one of its values is the simpler name unless the drop
        for item in chosen.key:  # concentrates in the pair
            parent = candidates.get((item,))
            if parent is not None and passes(parent) and _concentrated_child(
                    ix, parent, candidates, passes, floor, only=chosen.key) is None:
                chosen = parent
                break
    if chosen is not None:
        named = (_named(chosen, cell, drop, rate),)
        events = named_first(events, chosen.key)
        return result("slice", f"{label(chosen.key)} explains {named[0].share_of_drop:.0%} of the "
                               f"drop (z {chosen.z:.1f}; n = {n1} after the start)", named, m, z_crit)
    two = _value_set(candidates, z_crit, rate, settings, cell, expected_total, floor)
    if two:
        both = tuple(_named(c, cell, drop, rate) for c in two)
        events = named_first(events, tuple(item for c in two for item in c.key))
        share = sum(x.share_of_drop for x in both)
        return result("slice", f"{' + '.join(label(c.key) for c in two)} explain {share:.0%} of the "
                               f"drop (n = {n1} after the start)", both, m, z_crit)
    best = min(candidates.values(), key=lambda c: c.z)
    return result("unknown", f"cause not yet known, n = {n1} after the start: no slice is "
                             f"significantly worse than the rest and explains ≥ {settings.ep_min:.0%} "
                             f"of the drop after a Bonferroni correction over {m} slices "
                             f"(|z| ≥ {z_crit:.2f}; closest {label(best.key)} z {best.z:.1f})",
                  searched=m, z_crit=z_crit)


def _candidate(ix: CellIndex, key: SliceKey, drift: Mapping[SliceKey, float], mix_dim: str | None,
               expected_total: float, rate: float, floor: float) -> _Candidate | None:
    st = ix.settings
    s = ix.get(key)
    if s is None:
        return None
    cell = ix.cell
    before = ix.before(key)
    n1 = cell.after.n
    if (s.after.n < st.min_slice_after or before.n < st.min_slice_before
            or s.after.n / n1 < st.min_share or n1 - s.after.n < st.min_slice_after):
        return None
    expected = expected_of(ix, key, drift, mix_dim, cell.before.mean)
    delta = s.after.mean - expected
    se2 = diff_variance(s.after, before, floor)
    comp_after = cell.after - s.after
    comp_before = cell.before - before if cell.before.n - before.n >= st.min_slice_before else cell.before
    comp_expected = (n1 * expected_total - s.after.n * expected) / comp_after.n
    comp_delta = comp_after.mean - comp_expected
    comp_se2 = diff_variance(comp_after, comp_before, floor)
    contribution = s.after.n / n1 * delta
    ep = contribution / rate if rate < 0 else 0.0
    z = (delta - comp_delta) / math.sqrt(se2 + comp_se2)
    return _Candidate(key, before, s.after, expected, delta, math.sqrt(se2), contribution, ep, z,
                      comp_delta / math.sqrt(comp_se2))


def _concentrated_child(ix: CellIndex, parent: _Candidate, candidates: Mapping[SliceKey, _Candidate],
                        passes: Callable[[_Candidate], bool], floor: float,
                        only: SliceKey | None = None) -> _Candidate | None:
    """The pair inside the named value where its drop concentrates: the pair passes on its own
    and is significantly worse than the rest of the value (Bonferroni over the pairs tried).
    ``only``: test that one pair (still corrected over all of the value's pairs)."""
    item = parent.key[0]
    children = [c for k, c in candidates.items() if len(k) == 2 and item in k]
    if not children:
        return None
    z_crit = _NORMAL.inv_cdf(1 - ix.settings.alpha / len(children))
    best: tuple[float, _Candidate] | None = None
    for c in children:
        if not passes(c) or (only is not None and c.key != only):
            continue
        rest_after = parent.after - c.after
        rest_before = parent.before - c.before
        if rest_after.n < ix.settings.min_slice_after or rest_before.n < ix.settings.min_slice_before:
            continue  # the pair is (nearly) all of the value: the value is the simpler name
        rest_expected = (parent.after.n * parent.expected - c.after.n * c.expected) / rest_after.n
        rest_delta = rest_after.mean - rest_expected
        z = (c.delta - rest_delta) / math.sqrt(c.se ** 2 + diff_variance(rest_after, rest_before, floor))
        if z <= -z_crit and (best is None or z < best[0]):
            best = (z, c)
    return best[1] if best else None


def _value_set(candidates: Mapping[SliceKey, _Candidate], z_crit: float, rate: float,
               settings: Settings, cell: CellData, expected_total: float, floor: float) -> tuple[_Candidate, ...]:
    """Adtributor's set, at most two values of one dimension: when no single slice explains
    enough, two significant values that together do, leaving no significant drop elsewhere."""
    best: tuple[float, tuple[_Candidate, ...]] | None = None
    by_dim: dict[str, list[_Candidate]] = {}
    for c in candidates.values():
        if len(c.key) == 1 and c.delta < 0 and c.z <= -z_crit:
            by_dim.setdefault(c.key[0][0], []).append(c)
    for cs in by_dim.values():
        cs.sort(key=lambda c: c.contribution)
        if len(cs) < 2:
            continue
        a, b = cs[0], cs[1]
        ep = (a.contribution + b.contribution) / rate
        if ep < settings.ep_min:
            continue
        comp_after = cell.after - a.after - b.after
        comp_before = cell.before - a.before - b.before
        if comp_after.n < settings.min_slice_after or comp_before.n < settings.min_slice_before:
            continue
        n1 = cell.after.n
        comp_expected = (n1 * expected_total - a.after.n * a.expected
                         - b.after.n * b.expected) / comp_after.n
        z_c = (comp_after.mean - comp_expected) / math.sqrt(diff_variance(comp_after, comp_before, floor))
        if z_c > -settings.z_complement and (best is None or ep > best[0]):
            best = (ep, (a, b))
    return best[1] if best else ()


def _named(c: _Candidate, cell: CellData, drop: float, rate: float) -> NamedSlice:
    return NamedSlice(
        key=c.key,
        share_of_drop=c.contribution / drop if drop < 0 else math.nan,
        share_of_rate=c.ep,
        before_mean=c.before.mean,
        after_mean=c.after.mean,
        expected_after_mean=c.expected,
        n_before=c.before.n,
        n_after=c.after.n,
        share_before=c.before.n / cell.before.n if cell.before.n else math.nan,
        share_after=c.after.n / cell.after.n,
        effect=c.delta,
        effect_low=c.delta - 1.96 * c.se,
        effect_high=c.delta + 1.96 * c.se,
        z=c.z,
    )
