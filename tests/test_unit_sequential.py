"""The sequential detector's pure core: reference and design (worker/drift/sequential.py), the
O(1) update with late scores and recovery (worker/drift/cusum.py), the bounded history and what
an alarm pins, start and effect (worker/drift/incident.py)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from worker.drift import cusum as cs
from worker.drift import incident
from worker.drift import sequential as sq

HOUR = 3600.0


def days_of(rng, mean, sd, n_per_day, days=28, changed=()):
    out = []
    for i in range(days):
        x = rng.normal(mean, sd, n_per_day)
        out.append(sq.DayAggregate(f"2026-11-{i + 1:02d}", len(x), float(x.sum()), float((x * x).sum()),
                                   changed=i in changed))
    return out


def exact_reference(mean, sd, n_per_day, days=28) -> sq.Reference:
    return sq.Reference(mean, sd, n_per_day * days, days, "2026-11-01", "2026-11-28", "ok")


def times(n_per_day, count, start=0.0):
    return start + (np.arange(count) + 0.5) * 86400.0 / n_per_day


# --- reference -------------------------------------------------------------------------------

def test_reference_pools_the_days_and_leaves_out_flagged_ones():
    rng = np.random.default_rng(1)
    days = days_of(rng, 70, 25, 50, changed={3, 4})
    days[3] = dataclasses.replace(days[3], total=days[3].total - 50 * 30)  # a bad day, flagged
    ref = sq.reference(days)
    kept = [d for i, d in enumerate(days) if i not in (3, 4)]
    n = sum(d.n for d in kept)
    mean = sum(d.total for d in kept) / n
    var = (sum(d.total_sq for d in kept) - n * mean * mean) / (n - 1)
    assert ref.status == "ok" and ref.sufficient
    assert ref.n == n == 26 * 50 and ref.days == 26
    assert ref.mean == pytest.approx(mean) and ref.sd == pytest.approx(math.sqrt(var))
    assert (ref.since, ref.until) == ("2026-11-01", "2026-11-28")
    assert ref.n_per_day == pytest.approx(50) and ref.se == pytest.approx(ref.sd / math.sqrt(n))


def test_reference_sd_is_floored_at_ten_points():
    ref = sq.reference([sq.DayAggregate("2026-11-01", 300, 300 * 80.0, 300 * 80.0 ** 2)])
    assert ref.mean == pytest.approx(80) and ref.sd == sq.MIN_SD == 10.0


def test_too_little_reference_is_insufficient_and_cannot_alarm():
    rng = np.random.default_rng(2)
    ref = sq.reference(days_of(rng, 70, 25, 7))  # 196 scores < 200
    assert ref.n == 196 and ref.status == "insufficient_reference" and not ref.sufficient
    assert sq.design(ref) is None
    assert not cs.alarmed(cs.State(s=1e9, detected_at=1.0), None)
    assert sq.reference([]).status == "insufficient_reference"
    assert sq.reference(days_of(rng, 70, 25, 8)).sufficient  # 224


def test_reference_days_are_the_28_before():
    import datetime as dt
    days = sq.reference_days(dt.date(2026, 12, 9))
    assert len(days) == 28 and days[0] == "2026-11-11" and days[-1] == "2026-12-08"


# --- design ----------------------------------------------------------------------------------

def test_siegmund_arl_matches_its_formula_and_limits():
    for delta, h in [(-0.08, 40.0), (0.3, 40.0), (-0.5, 3.0), (1.0, 5.0)]:
        b = h + 1.166
        want = (math.exp(-2 * delta * b) + 2 * delta * b - 1) / (2 * delta * delta)
        assert sq.siegmund_arl(delta, h) == pytest.approx(want, rel=1e-9)
    assert sq.siegmund_arl(0.0, 10.0) == pytest.approx(11.166 ** 2)
    assert sq.siegmund_arl(-0.08, 3000.0) > 1e100  # no overflow on long runs


def test_limit_is_solved_for_the_arl_and_grows_with_budget_and_reference_error():
    k = 2.5 / 30
    h = sq.limit_for_arl(k, 73_000)
    assert sq.siegmund_arl(-k, h) == pytest.approx(73_000, rel=1e-6)
    assert sq.limit_for_arl(k, 4 * 73_000) > h
    # An estimated reference costs more the smaller it is (1,400 vs 28,000 scores).
    small, large = sq.limit_for_arl(k, 73_000, 1_400), sq.limit_for_arl(k, 73_000, 28_000)
    assert small > large > h
    assert large / h < 1.02 < 1.08 < small / h


def test_design_k_h_and_budget():
    ref = exact_reference(71.75, 31.0, 200)
    d = sq.design(ref)
    # k = 0.6·D/σ₀ by default (K_RATIO), Page's classical D/(2σ₀) on request; no extra arms.
    assert sq.K_RATIO == 0.6 and sq.DEFAULT_ALSO == () and d.arms == ()
    assert d.k == pytest.approx(0.6 * 5 / 31) and d.drop == 5 and d.n_per_day == pytest.approx(200)
    assert sq.design(ref, k_ratio=0.5).k == pytest.approx(5 / 31 / 2)
    assert d.arl0 == pytest.approx(365 * 200)
    assert d.skew == sq.DEFAULT_SKEW
    assert d.h == pytest.approx(sq.limit_for_arl(d.k, d.arl0 * sq.ARL_MARGIN, ref.n, sq.DEFAULT_SKEW))
    assert sq.design(ref, drop=12).k == pytest.approx(0.6 * 12 / 31)
    # The recovery CUSUM keeps Page's k for D and gets its own limit for ARL₀ (no skew term).
    assert d.recovery == pytest.approx((5 / 31 / 2, sq.limit_for_arl(5 / 31 / 2, d.arl0 * sq.ARL_MARGIN, ref.n, 0.0)))
    # "at most one false page a week across 200 cells" -> 200/52 cell-years per false alarm each
    a = sq.cell_years_for_weekly_pages(200)
    assert a == pytest.approx(200 / 52)
    assert sq.design(ref, cell_years=a).h > d.h
    assert sq.design(ref, n_per_day=1000).n_per_day == 1000


def test_skewed_scores_get_a_higher_limit_and_a_known_skew_is_used():
    rng = np.random.default_rng(3)
    levels, p = np.array([0, 25, 50, 75, 100.0]), np.array([.08, .07, .15, .30, .40])
    days = []
    for i in range(28):
        x = rng.choice(levels, 200, p=p)
        days.append(sq.DayAggregate(f"d{i:02d}", 200, float(x.sum()), float((x * x).sum()),
                                    total_cube=float((x ** 3).sum())))
    ref = sq.reference(days)
    assert ref.skew == pytest.approx(-0.985, abs=0.05)  # piled up at the top: negative skew
    d = sq.design(ref)
    assert d.skew == pytest.approx(-ref.skew)
    normal = sq.design(ref, skew=0.0)
    assert normal.h < d.h < sq.design(ref, skew=2.0).h
    # Without sums of cubes the default skew is assumed.
    plain = sq.reference([dataclasses.replace(day, total_cube=None) for day in days])
    assert plain.skew is None and sq.design(plain).skew == sq.DEFAULT_SKEW
    # The third-order root is close to the exact tilt of these scores (for k of 5 and 12 points).
    from scipy import optimize
    mean, sd = (p * levels).sum(), math.sqrt((p * levels ** 2).sum() - (p * levels).sum() ** 2)
    u = (mean - levels) / sd
    for k in (5 / sd / 2, 12 / sd / 2):
        exact = optimize.brentq(lambda th: np.log((p * np.exp(th * (u - k))).sum()), 1e-6, 5)
        assert float(sq._theta(np.array(-k), 0.985)) == pytest.approx(exact, rel=0.01)
        assert exact < 2 * k * 0.97  # normal theory's root would be 3–10% too large


def test_extra_arms_share_the_budget_and_catch_big_drops_sooner():
    """With Page's k (k_ratio 0.5), as in the research's variant; with the default k = 0.6·D/σ₀
    a 12-point arm no longer pays for its share (why DEFAULT_ALSO is empty)."""
    ref = exact_reference(72.0, 30.0, 200)
    single, double = sq.design(ref, k_ratio=0.5), sq.design(ref, also=((12.0, 0.2),), k_ratio=0.5)
    (drop, k12, h12), = double.arms
    assert drop == 12.0 and k12 == pytest.approx(12 / 30 / 2)
    assert sq.design(ref, also=((12.0, 0.2),)).arms[0][1] == pytest.approx(0.6 * 12 / 30)
    assert double.h == pytest.approx(sq.limit_for_arl(single.k, single.arl0 / 0.8 * sq.ARL_MARGIN, ref.n, 1.0))
    assert h12 == pytest.approx(sq.limit_for_arl(k12, single.arl0 / 0.2 * sq.ARL_MARGIN, ref.n, 1.0))
    assert sq.expected_delay_hours(double, 12) < sq.expected_delay_hours(single, 12)
    assert sq.expected_delay_hours(double, 5) > sq.expected_delay_hours(single, 5)
    default, default2 = sq.design(ref), sq.design(ref, also=((12.0, 0.2),))
    delay12 = [sq.expected_delay_hours(x, 12) for x in (default, default2, single)]
    assert delay12 == sorted(delay12)
    with pytest.raises(ValueError):
        sq.design(ref, also=((12.0, 1.0),))
    with pytest.raises(ValueError):
        sq.design(ref, also=((4.0, 0.2),))
    # The 12-point arm crosses first on a big drop: the alarm comes from either arm.
    rng = np.random.default_rng(18)
    xs, ts = rng.normal(55, 30, 4000), times(200, 4000)
    first = {}
    for name, d in (("single", single), ("double", double)):
        state = cs.new_state(0.0)
        for t, x in zip(ts, xs):
            state = cs.update(state, float(x), float(t), d)
            if state.detected_at is not None:
                break
        first[name] = state.detected_at
        if name == "double":
            assert len(state.arms) == 1 and state.arms[0][0] > 0
    assert first["double"] < first["single"]


def test_expected_delay_and_power_note_for_under_powered_cells():
    small = sq.design(exact_reference(71.75, 31.0, 50))
    big = sq.design(exact_reference(71.75, 31.0, 1000))
    assert sq.expected_delay_hours(big, 12) < sq.expected_delay_hours(big) < sq.expected_delay_hours(small)
    h = sq.siegmund_arl(5 / 31 - small.k, small.h) / 50 * 24
    assert sq.expected_delay_hours(small) == pytest.approx(h)
    assert sq.under_powered(small) and not sq.under_powered(big)
    note = sq.power_note(small)
    assert note.startswith("a 5-point drop would take ~") and f"~{h:.0f} h" in note and "50 judged a day" in note


# --- state and update ------------------------------------------------------------------------

def test_update_is_the_cusum_recursion_and_counts_since_the_last_zero():
    d = sq.design(exact_reference(70.0, 20.0, 200))
    xs = [50.0, 90.0, 90.0, 40.0, 45.0, 60.0]
    state, s, since = cs.new_state(0.0), 0.0, []
    for i, x in enumerate(xs):
        state = cs.update(state, x, i + 1.0, d)
        s = max(0.0, s + (70 - x) / 20 - d.k)
        since = [] if s == 0 else since + [x]
        assert state.s == pytest.approx(s)
        assert state.n == len(since) and state.total == pytest.approx(sum(since))
    assert state.last_zero == 3.0  # S was 0 after the third score
    assert state.frontier == 6.0 and state.count == 6 and state.late == 0


def test_no_alarm_over_a_long_in_control_run():
    """A year at 200 a day of in-control scores from a design with a 10-cell-year budget."""
    rng = np.random.default_rng(11)
    d = sq.design(exact_reference(70.0, 25.0, 200), cell_years=10.0)
    xs = rng.normal(70, 25, 365 * 200)
    state = cs.new_state(0.0)
    for t, x in zip(times(200, len(xs)), xs):
        state = cs.update(state, float(x), float(t), d)
    assert state.detected_at is None and not cs.alarmed(state, d) and state.count == len(xs)


def test_false_alarm_rate_is_the_designs_arl():
    """Siegmund's ARL₀ holds for normal scores: alarms per score × ARL₀ ≈ 1 (restarting)."""
    rng = np.random.default_rng(12)
    ref = sq.Reference(70.0, 30.0, 10 ** 9, 28, None, None, "ok")  # a known reference
    d = sq.design(ref, drop=15.0, cell_years=1.0, n_per_day=1000 / 365, skew=0.0, margin=1.0)  # ARL₀ = 1,000
    assert d.arl0 == pytest.approx(1000)
    xs = rng.normal(70, 30, 200_000)
    state, alarms = cs.new_state(0.0), 0
    for t, x in enumerate(xs):
        state = cs.update(state, float(x), float(t), d)
        if state.detected_at is not None:
            alarms += 1
            state = cs.new_state(float(t))
    assert 0.8 < alarms * d.arl0 / len(xs) < 1.25  # ~200 alarms expected


def test_a_planted_step_is_detected_and_pinned():
    rng = np.random.default_rng(13)
    n = 1000
    d = sq.design(exact_reference(72.0, 30.0, n))
    change = 62 * HOUR
    ts = times(n, 5 * n)
    xs = np.where(ts < change, rng.normal(72, 30, len(ts)), rng.normal(60, 30, len(ts)))
    state, hist = cs.new_state(0.0), incident.History()
    for t, x in zip(ts, xs):
        state = cs.update(state, float(x), float(t), d)
        hist.add(float(x), float(t))
        if state.detected_at is not None:
            break
    assert cs.alarmed(state, d)
    assert change < state.detected_at < change + 8 * HOUR
    pinned = incident.pin(state, d, hist)
    assert abs(pinned.started_at - change) < 1 * HOUR
    assert pinned.started_between[0] <= change <= pinned.started_between[1]
    assert pinned.started_between[1] - pinned.started_between[0] < 6 * HOUR
    assert pinned.effect_interval[0] <= 12 <= pinned.effect_interval[1]
    assert pinned.effect_interval[0] > 0 and abs(pinned.effect_points - 12) < 6
    assert pinned.detected_at == state.detected_at and pinned.reference_mean == 72.0 and pinned.n_after > 100
    assert incident.pin(cs.new_state(0.0), d, hist) is None


def test_detected_at_is_the_trace_time_of_the_crossing_score():
    d = sq.design(exact_reference(70.0, 20.0, 200))
    state = cs.new_state(0.0)
    t = 0.0
    while state.detected_at is None:
        t += 60.0
        state = cs.update(state, 0.0, t, d)
    assert state.detected_at == t and state.s_at_detection > d.h
    assert state.s_at_detection - ((70 - 0) / 20 - d.k) <= d.h  # the score before was under the limit


# --- late scores -----------------------------------------------------------------------------

def in_place(d, items):
    state = cs.new_state(0.0)
    for t, x in sorted(items):
        state = cs.update(state, x, t, d)
    return state


def test_late_scores_land_in_their_trace_time_place():
    d = sq.design(exact_reference(70.0, 20.0, 200))
    rng = np.random.default_rng(14)
    base = [(float(t), float(x)) for t, x in zip(range(1, 401), rng.normal(68, 20, 400))]
    assert in_place(d, base).detected_at is None  # long excursions, no alarm
    exact = 0
    for trial in range(200):
        i = int(rng.integers(0, 399))
        late = base[i]
        arrived = in_place(d, base[:i] + base[i + 1:])
        got = cs.update(arrived, late[1], late[0], d)
        want = in_place(d, base)
        z = (70 - late[1]) / 20 - d.k
        assert got.late == 1 and got.count == 400 and got.frontier == 400.0
        # Never above the in-place value, never further than the late score's own increment.
        assert got.s <= want.s + 1e-9 and want.s - got.s <= abs(z) + 1e-9
        inside = arrived.last_zero is None or late[0] > arrived.last_zero
        if (inside and z >= 0) or (not inside and z < 0):
            assert got.s == pytest.approx(want.s)  # the two exact cases
            exact += 1
    assert exact > 50


def test_a_late_bad_score_inside_the_excursion_counts_and_one_before_it_does_not():
    d = sq.design(exact_reference(70.0, 20.0, 200))
    state = cs.new_state(0.0)
    for t, x in [(1.0, 90.0), (2.0, 40.0), (3.0, 45.0)]:  # S is 0 after t=1, then climbs
        state = cs.update(state, x, t, d)
    assert state.last_zero == 1.0 and state.n == 2
    inside = cs.update(state, 30.0, 2.5, d)
    assert inside.s == pytest.approx(state.s + (70 - 30) / 20 - d.k) and inside.n == 3 and inside.late == 1
    before = cs.update(state, 30.0, 0.5, d)
    assert before.s == state.s and before.n == 2 and before.late == 1 and before.frontier == 3.0


def test_advance_orders_a_shuffled_batch_by_trace_time():
    d = sq.design(exact_reference(70.0, 20.0, 200))
    rng = np.random.default_rng(15)
    items = [(float(t), float(x)) for t, x in zip(range(300), rng.normal(60, 20, 300))]
    shuffled = list(items)
    rng.shuffle(shuffled)
    got = cs.advance(cs.new_state(0.0), shuffled, d)
    assert got == in_place(d, items) and got.late == 0


def test_history_is_bounded_and_takes_late_scores_in_their_bucket():
    hist = incident.History()
    ts = times(1000, 30 * 1000)
    for t in ts:
        hist.add(70.0, float(t))
    assert len(hist.fine) <= incident.FINE_SECONDS // incident.BUCKET_SECONDS + 1
    assert len(hist.coarse) <= incident.HISTORY_SECONDS // incident.COARSE_BUCKET_SECONDS + 1
    starts, ends, n, totals, sqs = hist.arrays()
    assert np.all(starts[1:] == ends[:-1])  # contiguous, no overlap between the resolutions
    assert ends[-1] - starts[0] <= incident.HISTORY_SECONDS + 2 * incident.COARSE_BUCKET_SECONDS
    assert set(ends - starts) == {incident.BUCKET_SECONDS, incident.COARSE_BUCKET_SECONDS}
    assert n.sum() == pytest.approx(((ts > ts[-1] - incident.HISTORY_SECONDS - HOUR) & (ts >= starts[0])).sum())
    # A late score: into its 5-minute bucket if recent, its hour if older, dropped if too old.
    before = n.sum()
    hist.add(10.0, float(ts[-1] - 600))
    hist.add(10.0, float(ts[-1] - 5 * 86400))
    hist.add(10.0, float(ts[-1] - 20 * 86400))
    starts, ends, n, totals, _ = hist.arrays()
    assert n.sum() == before + 2
    recent = np.flatnonzero((starts <= ts[-1] - 600) & (ends > ts[-1] - 600))[0]
    assert ends[recent] - starts[recent] == incident.BUCKET_SECONDS and totals[recent] < 70 * n[recent]


def test_start_estimate_on_buckets_and_its_interval():
    d = sq.design(exact_reference(70.0, 20.0, 1000))
    starts = np.arange(0, 48) * 300.0
    n = np.full(48, 4.0)
    totals = np.where(starts < 20 * 300, 70.0, 55.0) * n  # a clean step at bucket 20
    est = incident.estimate_start(starts, starts + 300, n, totals, d)
    assert est.at == 20 * 300 and est.low <= est.at <= est.high and est.log_lr > 0
    # Empty buckets in between: the estimate is the middle of the gap.
    n2 = n.copy()
    n2[18:20] = 0
    est2 = incident.estimate_start(starts, starts + 300, n2, totals, d)
    assert est2.at == pytest.approx((18 * 300 + 20 * 300) / 2)
    empty = incident.estimate_start(starts, starts + 300, np.zeros(48), totals, d, last_zero=123.0)
    assert empty.at == 123.0


# --- effect and recovery ---------------------------------------------------------------------

def test_the_effect_interval_covers_the_true_drop_at_every_look():
    """Always valid: over 400 post-change paths, the interval covers the true drop at all of 8
    looks (n = 25 ... 3,200) in ≥ 95% of paths."""
    rng = np.random.default_rng(16)
    ref = exact_reference(72.0, 30.0, 1000)
    d = sq.design(ref)
    looks = [25, 50, 100, 200, 400, 800, 1600, 3200]
    always = 0
    for _ in range(400):
        xs = rng.normal(60.0, 30.0, looks[-1])
        ok = True
        for m in looks:
            x = xs[:m]
            e = incident.effect(d, m, float(x.sum()), float((x * x).sum()))
            ok &= e.low <= 12.0 <= e.high
            assert e.points == pytest.approx(72.0 - x.mean()) and e.n == m
        always += ok
    assert always / 400 >= 0.95


def test_the_effect_interval_includes_the_reference_error():
    d_small = sq.design(exact_reference(72.0, 30.0, 10))  # 280 reference scores
    d_large = sq.design(exact_reference(72.0, 30.0, 1000))
    a = incident.effect(d_small, 500, 500 * 60.0, 500 * (60.0 ** 2 + 900))
    b = incident.effect(d_large, 500, 500 * 60.0, 500 * (60.0 ** 2 + 900))
    assert a.points == b.points == pytest.approx(12)
    assert (a.high - a.low) > (b.high - b.low) + 2 * 1.9 * 30 * (1 / math.sqrt(280) - 1 / math.sqrt(28000))
    assert incident.mixture_half_width(100, 900, 0.04, 100) > incident.mixture_half_width(400, 900, 0.04, 100)
    assert math.isinf(incident.effect(d_large, 0, 0.0, 0.0).high)


def test_the_cell_stays_alerted_while_the_drop_lasts_then_recovers():
    rng = np.random.default_rng(17)
    n = 200
    d = sq.design(exact_reference(72.0, 30.0, n))
    state = cs.new_state(0.0)
    ts = iter(times(n, 100 * n))
    while state.detected_at is None:
        state = cs.update(state, float(rng.normal(60, 30)), float(next(ts)), d)
    n_at_alarm = state.n
    for _ in range(20 * n):  # 20 more days of the drop: still one open incident
        state = cs.update(state, float(rng.normal(60, 30)), float(next(ts)), d)
    assert cs.alarmed(state, d) and not cs.recovered(state) and state.n == n_at_alarm + 20 * n
    while not cs.recovered(state):  # back to the reference
        state = cs.update(state, float(rng.normal(72, 30)), float(next(ts)), d)
    assert not cs.alarmed(state, d) and state.recovered_at is not None
    flagged = incident.flagged_days(state.last_zero, state.recovered_at)
    assert flagged[0] == "1970-01-01" and len(flagged) >= 20


def test_recovery_means_back_above_the_reference_minus_half_the_threshold_drop():
    """The mirror CUSUM has Page's k for D whatever the alarm's k: scores steady at μ₀ − 0.55·D
    never recover (with the alarm's k = 0.6·D/σ₀ they would), at μ₀ − 0.45·D they do."""
    d = sq.design(exact_reference(72.0, 30.0, 200))
    k_rec, h_rec = d.recovery
    assert k_rec == pytest.approx(5 / 30 / 2) and k_rec < d.k and h_rec > d.h
    alarmed = cs.State(detected_at=0.0, last_zero=0.0, frontier=0.0, recovery_zero=0.0)
    for points, recovers in ((72.0 - 0.55 * 5, False), (72.0 - 0.45 * 5, True)):
        state = alarmed
        for t in range(1, 50_000):
            state = cs.update(state, points, float(t), d)
            if cs.recovered(state):
                break
        assert cs.recovered(state) is recovers
        if recovers:  # after about h / (0.05·D/σ₀) scores
            assert state.recovered_at == pytest.approx(h_rec / (0.05 * 5 / 30), rel=0.01, abs=2)
