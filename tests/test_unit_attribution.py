"""worker/drift/attribution.py on small synthetic cells: the mix-adjusted slice search names a
rate effect (single value or pair) with its share, never a pure mix shift; too little data says
"cause not yet known, n = …"; change events inside the start interval are named with old/new
means, those outside are not."""
from __future__ import annotations

import random
from itertools import combinations

import pytest

from worker.drift.attribution import (CellData, ChangeEvent, Moments, SliceData, attribute,
                                      decompose, describe, rank_events, slice_key)

DIMS = {
    "input_tokens": (["<1k", "1k-3k", "3k-10k"], [0.45, 0.30, 0.25]),
    "tool": (["search", "code", "none"], [0.5, 0.35, 0.15]),
    "tenant": (["acme", "globex", "initech", "other"], [0.55, 0.2, 0.15, 0.1]),
}
T0 = 1_800_000_000.0

Row = dict[str, str]


def rows(n: int, rng: random.Random, shares: dict[str, list[float]] | None = None) -> list[Row]:
    out = []
    for _ in range(n):
        row = {}
        for dim, (values, w) in DIMS.items():
            row[dim] = rng.choices(values, (shares or {}).get(dim, w))[0]
        out.append(row)
    return out


def score(row: Row, rng: random.Random, bad: dict[str, str] | None = None, effect: float = 0.0,
          offsets: dict[tuple[str, str], float] | None = None) -> float:
    mu = 72.0 + sum((offsets or {}).get((d, v), 0.0) for d, v in row.items())
    if bad and all(row.get(d) == v for d, v in bad.items()):
        mu -= effect
    return min(100.0, max(0.0, rng.gauss(mu, 28)))


def cell(before: list[tuple[Row, float]], after: list[tuple[Row, float]],
         events: tuple[ChangeEvent, ...] = (), interval: tuple[float, float] = (T0 - 1800, T0 + 1800)) -> CellData:
    def moments(data: list[tuple[Row, float]], key: tuple[tuple[str, str], ...]) -> Moments:
        return Moments.of(x for r, x in data if all(r.get(d) == v for d, v in key))

    dims = sorted({d for r, _ in before + after for d in r})
    keys: set[tuple[tuple[str, str], ...]] = set()
    for r, _ in before + after:
        for d in dims:
            keys.add(((d, r[d]),))
        for a, b in combinations(dims, 2):
            keys.add(slice_key((a, r[a]), (b, r[b])))
    slices = tuple(SliceData(k, moments(before, k), moments(after, k)) for k in sorted(keys))
    return CellData(Moments.of(x for _, x in before), Moments.of(x for _, x in after), slices,
                    events, interval)


def test_moments_and_decompose_add_up() -> None:
    m = Moments.of([10.0, 20.0, 30.0])
    assert m.mean == 20.0 and m.variance == pytest.approx(100.0)
    assert (m - Moments.of([10.0])).mean == 25.0
    # two values: shares 50/50 → 20/80, means 80 and 40 before, 80 and 30 after
    a0, a1 = Moments(50, 50 * 80.0, 0.0), Moments(20, 20 * 80.0, 0.0)
    b0, b1 = Moments(50, 50 * 40.0, 0.0), Moments(80, 80 * 30.0, 0.0)
    mix, rate = decompose([(a0, a1), (b0, b1)], 60.0)
    assert mix == pytest.approx((0.2 - 0.5) * 80 + (0.8 - 0.5) * 40)
    assert rate == pytest.approx(0.8 * (30 - 40))
    assert mix + rate == pytest.approx((0.2 * 80 + 0.8 * 30) - 60)


def test_pure_rate_effect_in_one_value_is_named_with_its_share() -> None:
    rng = random.Random(1)
    before = [(r, score(r, rng)) for r in rows(6000, rng)]
    after = [(r, score(r, rng, {"tool": "code"}, 30.0)) for r in rows(2000, rng)]
    a = attribute(cell(before, after))
    assert a.status == "slice", a.reason
    (s,) = a.slices
    assert s.key == (("tool", "code"),)
    assert s.share_of_drop == pytest.approx(1.0, abs=0.2)
    assert s.after_mean < s.before_mean - 20 and s.n_after > 500 and s.z < -5
    assert s.effect_low < s.effect < s.effect_high < 0
    assert "tool=code" in describe(a)[0]


def test_pure_mix_shift_is_not_named() -> None:
    """globex scores 20 lower and its share goes 20% → 50%; nothing gets worse."""
    rng = random.Random(2)
    offsets = {("tenant", "globex"): -20.0}
    before = [(r, score(r, rng, offsets=offsets)) for r in rows(6000, rng)]
    moved = {"tenant": [0.35, 0.5, 0.1, 0.05]}
    after = [(r, score(r, rng, offsets=offsets)) for r in rows(3000, rng, moved)]
    a = attribute(cell(before, after))
    assert a.drop < -4
    assert a.slices == ()
    assert a.status == "mix", a.reason
    assert a.mix_dimension == "tenant" and a.mix < -4 and abs(a.rate) < 2
    assert a.mix_drivers[0].value == "globex"


def test_rate_effect_beside_a_mix_decoy_names_the_rate_slice_only() -> None:
    rng = random.Random(3)
    offsets = {("tenant", "globex"): -20.0}
    before = [(r, score(r, rng, offsets=offsets)) for r in rows(6000, rng)]
    moved = {"tenant": [0.35, 0.5, 0.1, 0.05]}
    after = [(r, score(r, rng, {"input_tokens": "3k-10k"}, 35.0, offsets)) for r in rows(2000, rng, moved)]
    a = attribute(cell(before, after))
    assert [s.key for s in a.slices] == [(("input_tokens", "3k-10k"),)], a.reason
    assert a.mix_dimension == "tenant" and a.mix < -3


def test_pair_effect_is_named_as_the_pair() -> None:
    rng = random.Random(4)
    bad = {"input_tokens": "3k-10k", "tenant": "acme"}
    before = [(r, score(r, rng)) for r in rows(6000, rng)]
    after = [(r, score(r, rng, bad, 45.0)) for r in rows(2500, rng)]
    a = attribute(cell(before, after))
    assert a.status == "slice", a.reason
    assert [s.key for s in a.slices] == [slice_key(("input_tokens", "3k-10k"), ("tenant", "acme"))]
    assert a.slices[0].share_of_drop == pytest.approx(1.0, abs=0.25)


def test_too_little_data_says_cause_not_yet_known_with_n() -> None:
    rng = random.Random(5)
    before = [(r, score(r, rng)) for r in rows(3000, rng)]
    after = [(r, score(r, rng, {"tool": "code"}, 30.0)) for r in rows(60, rng)]
    a = attribute(cell(before, after))
    assert a.status == "unknown" and a.slices == ()
    assert "cause not yet known, n = 60" in a.reason


def test_no_significant_slice_says_cause_not_yet_known() -> None:
    """A drop spread evenly over all traffic has no slice to name."""
    rng = random.Random(6)
    before = [(r, score(r, rng)) for r in rows(6000, rng)]
    after = [(r, score(r, rng) - 10) for r in rows(2000, rng)]
    a = attribute(cell(before, after))
    assert a.status == "unknown" and a.slices == ()
    assert a.reason.startswith("cause not yet known, n = 2000") and a.searched > 10


def prompt_rows(n: int, rng: random.Random, new: float) -> list[Row]:
    out = rows(n, rng)
    for r in out:
        r["prompt"] = "summarize@13" if rng.random() < new else "summarize@12"
    return out


def test_change_event_inside_the_interval_is_named_with_old_and_new_means() -> None:
    rng = random.Random(7)
    before = [(r, score(r, rng)) for r in prompt_rows(5000, rng, 0.0)]
    after = [(r, score(r, rng, {"prompt": "summarize@13"}, 35.0)) for r in prompt_rows(2000, rng, 0.8)]
    events = (ChangeEvent("prompt", "summarize@13", T0 - 600, "summarize@12"),
              ChangeEvent("release", "app@2", T0 + 300))  # no traffic: listed without a comparison
    a = attribute(cell(before, after, events))
    assert [s.key for s in a.slices] == [(("prompt", "summarize@13"),)], a.reason
    first = a.events[0]
    assert first.event.value == "summarize@13" and first.old_value == "summarize@12"
    assert first.same_days and first.old_n > 300 and first.new_n > 1400
    assert first.old_mean is not None and first.new_mean is not None
    assert first.old_mean - first.new_mean > 25 and first.z < -10
    assert first.share_of_drop == pytest.approx(1.0, abs=0.25)
    assert any("summarize@12" in line and "on the same days" in line for line in describe(a))
    assert {f.event.value for f in a.events} == {"summarize@13", "app@2"}


def test_change_event_outside_the_interval_is_not_named() -> None:
    rng = random.Random(8)
    before = [(r, score(r, rng)) for r in prompt_rows(3000, rng, 0.0)]
    after = [(r, score(r, rng, {"prompt": "summarize@13"}, 35.0)) for r in prompt_rows(1000, rng, 0.8)]
    events = (ChangeEvent("prompt", "summarize@13", T0 - 2 * 86400, "summarize@12"),)
    c = cell(before, after, events)
    assert rank_events(c) == ()
    assert attribute(c).events == ()
