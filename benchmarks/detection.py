"""Detection of a quality drop per cell: the sequential CUSUM (worker/drift/sequential.py) beside
today's weekly rule and a Langfuse-style threshold, on the same replayed score streams.

    python -m benchmarks.detection [--quick] [--cell-years 500] [--streams 1000] [--seed N]
    python -m benchmarks detection [--quick] ...   (the same)

Streams (research /work/shared/research/detection.md, Appendix A): judge scores on 0–100, n
judged a day in the cell evenly spaced (50 / 200 / 1,000), from
  * "5-level": {0, 25, 50, 75, 100} with p = .08/.07/.15/.30/.40 (mean 71.75, SD 31.0); after a
    5-point drop .11/.09/.16/.30/.34 (66.75), after a "12-point" drop .15/.12/.20/.28/.25 (59.0,
    a 12.75-point drop), as in A.1;
  * "normal SD 25/30/35": a normal clipped to 0..100 whose clipped mean is 71.75 and clipped SD
    25, 30 or 35; a drop moves the normal's centre until the clipped mean is 5 or 12 lower.
Each stream has its own reference: the 28 days before monitoring starts (Monday 00:00), so
every design is built from an *estimated* mean and SD. A drop starts on Wednesday 14:00 (62 h
in) and lasts; delays are hours from 14:00 to the alarm, conditional on no alarm before the
change (the share that alarmed before is shown), "caught" = alarmed within 14 days. False alarms
come from separate in-control year-long streams, each with its own reference, counted per
cell-year (CUSUMs restart after an alarm; the window rules count episodes, entering alert).

Rules, all on the same streams:
  * cusum: worker.drift.sequential.design as shipped: one CUSUM (DEFAULT_ALSO adds no arm) with
    k = K_RATIO·D/σ₀ = 0.6·D/σ₀ for the 5-point threshold, h for one false alarm a cell-year
    (Siegmund with a skew term, averaged over the reference's error, ARL_MARGIN); its alert's
    start = worker.drift.incident's change-point MLE on the bounded history (5-minute buckets
    for 2 days, hourly for 14) up to the alarm, effect = its always-valid interval.
  * page: one CUSUM with Page's classical k = D/(2σ₀) (design(..., k_ratio=0.5)), the default
    until K_RATIO, at the same calibration.
  * cusum2: the research's variant, design(..., also=((12, 0.5),), k_ratio=0.5): two CUSUMs in
    parallel, Page's k for 5 and for 12 points, each at 2·ARL₀; the first to cross alarms.
  * weekly: today's rule (worker/drift/stats.py), daily at midnight: the last 7 trace-days vs
    the 7 before, one-sided Welch with variances floored at 10², p < .01 and drop ≥ 2.5 (A.2).
  * langfuse: the mean of the last 24 h below the reference mean − 5, checked every 30 min.

The vectorised CUSUM is cross-checked against cusum.update, the weekly rule against
stats.decide, and the bucketed history against incident.History before anything is measured.
Prints the tables, PASS/FAIL per goal of issue 25 per CUSUM design (with the 95% interval of
each median and of each false-alarm rate: the goals sit close to what any detector can do, so
a figure within its interval of the limit is marked; for the shipped design such a delay is
measured again on --precise-streams fresh streams, 20,000 by default, and the verdict reads
that figure), and writes benchmarks/results/detection.json.
About 4–5 minutes on 2 cores; --quick (60 cell-years, 150 streams) about 40 s.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import time

import numpy as np
from scipy import integrate, optimize
from scipy import stats as sps

from worker.drift import cusum as cs
from worker.drift import incident
from worker.drift import sequential as sq
from worker.drift.stats import CellInput, WeekStats, decide

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
NS = (50, 200, 1000)
DROPS = (5, 12)
CHANGE_H = 62.0  # Wednesday 14:00, monitoring from Monday 00:00
HORIZON_H = 14 * 24.0  # "caught within 14 days"
REF_DAYS = sq.REFERENCE_DAYS
MON_DAYS = 17  # 62 h + 14 days fits in 17 days
BASE_MEAN = 71.75
LEVELS = np.array([0.0, 25.0, 50.0, 75.0, 100.0])
LEVEL_P = {0: (.08, .07, .15, .30, .40), 5: (.11, .09, .16, .30, .34), 12: (.15, .12, .20, .28, .25)}
WEEKLY_ALPHA, WEEKLY_MIN_DROP, WEEKLY_VAR_FLOOR = 0.01, 2.5, 100.0
LF_WINDOW_H, LF_EVERY_H, LF_BELOW = 24.0, 0.5, 5.0

GOAL_DISTS = ("5-level", "normal SD 30")  # the case: score SD ~30
# In-control cell-years per configuration, as multiples of --cell-years: a reference from 28 days
# of 50 scores is uncertain enough that false alarms vary a lot between cells; it is also cheap.
FA_SCALE = {50: 4, 200: 2, 1000: 1}


# --- score distributions ---------------------------------------------------------------------

@dataclasses.dataclass
class Dist:
    name: str
    kind: str  # "levels" | "clipped"
    params: dict  # drop -> probabilities, or drop -> (centre, sd) of the normal
    means: dict  # drop -> true mean of the scores

    def draw(self, rng: np.random.Generator, drop: int, shape) -> np.ndarray:
        if self.kind == "levels":
            cum = np.cumsum(self.params[drop])
            return LEVELS[np.minimum(np.searchsorted(cum, rng.random(shape)), 4)]
        centre, sd = self.params[drop]
        return np.clip(rng.normal(centre, sd, shape), 0.0, 100.0)

    @property
    def sd(self) -> float:
        if self.kind == "levels":
            p = np.array(self.params[0])
            return float(math.sqrt((p * LEVELS ** 2).sum() - (p * LEVELS).sum() ** 2))
        return clipped_moments(*self.params[0])[1]


def clipped_moments(centre: float, sd: float) -> tuple[float, float]:
    """(mean, sd) of normal(centre, sd) clipped to 0..100."""
    pdf = lambda x: sps.norm.pdf(x, centre, sd)  # noqa: E731
    top = sps.norm.sf(100, centre, sd)
    m1 = integrate.quad(lambda x: x * pdf(x), 0, 100)[0] + 100 * top
    m2 = integrate.quad(lambda x: x * x * pdf(x), 0, 100)[0] + 1e4 * top
    return m1, math.sqrt(max(m2 - m1 * m1, 0.0))


def clipped_normal(target_sd: float) -> Dist:
    centre, sd = optimize.fsolve(lambda p: np.array(clipped_moments(*p)) - (BASE_MEAN, target_sd),
                                 [BASE_MEAN + 3, target_sd * 1.4])
    params, means = {0: (centre, sd)}, {0: BASE_MEAN}
    for drop in DROPS:
        c = optimize.brentq(lambda c: clipped_moments(c, sd)[0] - (BASE_MEAN - drop), centre - 5 * drop, centre)
        params[drop], means[drop] = (c, sd), BASE_MEAN - drop
    return Dist(f"normal SD {target_sd:g}", "clipped", params, means)


def distributions() -> list[Dist]:
    means = {d: float((np.array(p) * LEVELS).sum()) for d, p in LEVEL_P.items()}
    return [Dist("5-level", "levels", dict(LEVEL_P), means)] + [clipped_normal(s) for s in (25.0, 30.0, 35.0)]


# --- designs per stream ----------------------------------------------------------------------

def day_aggregates(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, sum, sum of squares) per stream × day of scores laid out n a day."""
    days = x.reshape(x.shape[0], -1, n)
    return np.full(days.shape[:2], n), days.sum(-1), (days * days).sum(-1)


@dataclasses.dataclass
class Designs:
    mean: np.ndarray
    sd: np.ndarray
    k: np.ndarray  # (streams, arms)
    h: np.ndarray
    designs: list  # the first arm's sequential.Design per stream (start and effect use it)


# The CUSUM designs compared, as sequential.design(ref, **kwargs): ``also`` adds arms (drop, share
# of the false-alarm budget) beside the 5-point arm, which keeps the rest of the budget; each
# arm's k is k_ratio · its drop / σ₀.
CUSUMS = {
    "cusum": {},  # the module's default: DEFAULT_ALSO (no extra arm), k = K_RATIO·D/σ₀, ARL₀ = 1 cell-year
    "page": {"k_ratio": 0.5},  # one CUSUM with Page's k = D/(2σ₀): the default until K_RATIO
    "cusum2": {"also": ((12.0, 0.5),), "k_ratio": 0.5},  # the research's: Page's k for 5 and for 12, each at 2·ARL₀
}
RULES = (*CUSUMS, "weekly", "langfuse")


def build_designs(ref: np.ndarray, n: int, names=tuple(CUSUMS)) -> dict[str, Designs]:
    """The module's reference and design per stream for the named CUSUM designs."""
    cnt, tot, sq_ = day_aggregates(ref, n)
    out = {}
    refs = [sq.reference(sq.DayAggregate(str(j), int(cnt[i, j]), float(tot[i, j]), float(sq_[i, j]))
                         for j in range(cnt.shape[1])) for i in range(ref.shape[0])]
    for name in names:
        ds = [sq.design(r, **CUSUMS[name]) for r in refs]
        out[name] = Designs(np.array([d.mean for d in ds]), np.array([d.sd for d in ds]),
                            np.array([[d.k, *(a[1] for a in d.arms)] for d in ds]),
                            np.array([[d.h, *(a[2] for a in d.arms)] for d in ds]), ds)
    return out


# --- the vectorised CUSUM --------------------------------------------------------------------

def first_crossing(x: np.ndarray, des: Designs, rows=slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first score whose CUSUM, any arm, exceeds h, or −1; last zero index of the
    arm that crossed, or −1 for 'since monitoring began'), from S = 0 at column 0."""
    mean, sd = des.mean[rows][:, None], des.sd[rows][:, None]
    first = np.full(x.shape[0], -1)
    last_zero = np.full(x.shape[0], -1)
    idx = np.arange(x.shape[1])
    for a in range(des.k.shape[1]):
        w = np.cumsum((mean - x) / sd - des.k[rows, a][:, None], axis=1)
        s = w - np.minimum(np.minimum.accumulate(w, axis=1), 0.0)
        cross = s > des.h[rows, a][:, None]
        has = cross.any(1)
        pos = np.where(has, cross.argmax(1), -1)
        zeros = np.maximum.accumulate(np.where(s <= 0, idx, -1), axis=1)
        lz = np.where(has, zeros[np.arange(len(pos)), np.maximum(pos, 0)], -1)
        better = has & ((first < 0) | (pos < first))
        first = np.where(better, pos, first)
        last_zero = np.where(better, lz, last_zero)
    return first, last_zero


def count_alarms_day(x: np.ndarray, des: Designs, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Advance the CUSUM arms (state: streams × arms) over one day of scores, restarting every
    arm at 0 after an alarm; returns (alarms per stream, new state)."""
    streams, n = x.shape
    arms = des.k.shape[1]
    z = [(des.mean[:, None] - x) / des.sd[:, None] - des.k[:, a][:, None] for a in range(arms)]
    idx = np.arange(n)[None, :]
    start = np.zeros(streams, int)
    s_in = state.copy()
    active = np.arange(streams)
    alarms = np.zeros(streams, int)
    while len(active):
        first = np.full(len(active), n)
        s_end = np.zeros((len(active), arms))
        for a in range(arms):
            zz = np.where(idx >= start[active][:, None], z[a][active], 0.0)
            w = np.cumsum(zz, axis=1)
            s = w - np.minimum(np.minimum.accumulate(w, axis=1), -s_in[active, a][:, None])
            cross = s > des.h[active, a][:, None]
            first = np.minimum(first, np.where(cross.any(1), cross.argmax(1), n))
            s_end[:, a] = s[:, -1]
        state[active] = s_end
        hit = first < n
        again = active[hit]
        alarms[again] += 1
        start[again] = first[hit] + 1
        s_in[again] = 0.0
        state[again] = 0.0
        active = again[start[again] < n]
    return alarms, state


# --- today's weekly rule and the Langfuse-style threshold -------------------------------------

def weekly_alerts(cnt: np.ndarray, tot: np.ndarray, sqs: np.ndarray, first_eval_day: int) -> np.ndarray:
    """Alerts (streams × evaluations) at each midnight from day index ``first_eval_day``:
    the 7 trace-days ending before it vs the 7 before those."""
    c7 = np.cumsum(np.pad(cnt, ((0, 0), (1, 0))), 1)
    t7 = np.cumsum(np.pad(tot, ((0, 0), (1, 0))), 1)
    q7 = np.cumsum(np.pad(sqs, ((0, 0), (1, 0))), 1)
    ends = np.arange(first_eval_day, cnt.shape[1] + 1)

    def week(lo, hi):
        n = c7[:, hi] - c7[:, lo]
        s = t7[:, hi] - t7[:, lo]
        v = (q7[:, hi] - q7[:, lo] - s * s / n) / (n - 1)
        return n, s / n, np.maximum(v, WEEKLY_VAR_FLOOR)

    n2, m2, v2 = week(ends - 7, ends)
    n1, m1, v1 = week(ends - 14, ends - 7)
    se2 = v1 / n1 + v2 / n2
    df = se2 ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    p = sps.t.cdf((m2 - m1) / np.sqrt(se2), df)
    return (p < WEEKLY_ALPHA) & (m1 - m2 >= WEEKLY_MIN_DROP)


def half_hour_sums(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, sum) per stream × half-hour of scores laid out n a day from a midnight."""
    per_day = int(24 / LF_EVERY_H)
    days = x.shape[1] // n
    j = np.arange(n)
    bucket = np.floor((j + 0.5) * per_day / n).astype(int)
    starts = np.searchsorted(bucket, np.arange(per_day))
    counts = np.diff(np.append(starts, n))
    sums = np.add.reduceat(x.reshape(x.shape[0], days, n), starts, axis=2)
    return np.broadcast_to(counts, sums.shape).reshape(x.shape[0], -1), sums.reshape(x.shape[0], -1)


def langfuse_alerts(cnt: np.ndarray, tot: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Alerts (streams × checks) every 30 min: the last 24 h's mean below baseline − 5; check j
    covers the 48 half-hours ending at bucket 48 + j (the first check has a full window)."""
    w = int(LF_WINDOW_H / LF_EVERY_H)
    c = np.cumsum(np.pad(cnt, ((0, 0), (1, 0))), 1)
    s = np.cumsum(np.pad(tot, ((0, 0), (1, 0))), 1)
    n = c[:, w:] - c[:, :-w]
    mean = (s[:, w:] - s[:, :-w]) / np.maximum(n, 1)
    return (n > 0) & (mean < baseline[:, None] - LF_BELOW)


def episodes(alerts: np.ndarray) -> np.ndarray:
    """Entries into alert per stream (the state before the first check is 'not alerting')."""
    prev = np.pad(alerts[:, :-1], ((0, 0), (1, 0)))
    return (alerts & ~prev).sum(1)


# --- one configuration -----------------------------------------------------------------------

def hours(index: np.ndarray | int, n: int) -> np.ndarray:
    """Trace time (hours since Monday 00:00) of monitoring score ``index`` (n a day, evenly spaced)."""
    return (np.asarray(index) + 0.5) * 24.0 / n


def false_alarms(dist: Dist, n: int, cell_years: int, rng: np.random.Generator, chunk: int) -> tuple[dict, dict]:
    """(false alarms per cell-year, its standard error) of every rule on in-control year-long
    streams. The error is from the spread between streams, not Poisson: each stream has its own
    reference, and a reference mean that came out high makes that cell alarm much more often."""
    out = {r: [] for r in RULES}
    for lo in range(0, cell_years, chunk):
        m = min(chunk, cell_years - lo)
        ref = dist.draw(rng, 0, (m, REF_DAYS * n))
        designs = build_designs(ref, n)
        rc, rt, rq = day_aggregates(ref[:, -14 * n:], n)
        hc, hs = half_hour_sums(ref[:, -n:], n)
        days_c, days_t, days_q, hh_c, hh_s = [rc], [rt], [rq], [hc], [hs]
        states = {name: np.zeros((m, des.k.shape[1])) for name, des in designs.items()}
        counts = {name: np.zeros(m, int) for name in designs}
        for _ in range(365):
            x = dist.draw(rng, 0, (m, n))
            for name, des in designs.items():
                alarms, states[name] = count_alarms_day(x, des, states[name])
                counts[name] += alarms
            c, t, q = day_aggregates(x, n)
            days_c.append(c)
            days_t.append(t)
            days_q.append(q)
            c, t = half_hour_sums(x, n)
            hh_c.append(c)
            hh_s.append(t)
        for name in designs:
            out[name] += list(counts[name])
        weekly = weekly_alerts(np.hstack(days_c), np.hstack(days_t), np.hstack(days_q), 15)
        out["weekly"] += list(episodes(weekly))
        lf = langfuse_alerts(np.hstack(hh_c), np.hstack(hh_s), designs["cusum"].mean)
        out["langfuse"] += list(episodes(lf))
    return ({k: float(np.mean(v)) for k, v in out.items()},
            {k: float(np.std(v, ddof=1) / math.sqrt(len(v))) for k, v in out.items()})


def drift_streams(dist: Dist, n: int, drop: int, streams: int, rng: np.random.Generator, chunk: int,
                  rules: tuple[str, ...] = RULES, pin: bool = True) -> dict:
    """Delays of ``rules``, and (``pin``) the start and effect the CUSUM's alert pins, for a
    lasting drop."""
    t_mon = MON_DAYS * n
    change = int(np.searchsorted(hours(np.arange(t_mon), n), CHANGE_H))
    last = int(np.searchsorted(hours(np.arange(t_mon), n), CHANGE_H + HORIZON_H, side="right"))
    rec = {r: [] for r in rules}  # delay h; nan = not caught in 14 days; None = alarmed before the change
    starts, starts24, starts_lz, cover_start, cover_effect, effects = [], [], [], [], [], []
    t_full = hours(np.arange(-REF_DAYS * n, t_mon), n) * 3600.0
    true_effect = dist.means[0] - dist.means[drop]
    for lo in range(0, streams, chunk):
        m = min(chunk, streams - lo)
        ref = dist.draw(rng, 0, (m, REF_DAYS * n))
        mon = dist.draw(rng, 0, (m, t_mon))
        mon[:, change:] = dist.draw(rng, drop, (m, t_mon - change))
        designs = build_designs(ref, n, [r for r in rules if r in CUSUMS])
        for name, des in designs.items():
            first, last_zero = first_crossing(mon[:, :last], des)
            for i in range(m):
                if 0 <= first[i] < change:
                    rec[name].append(None)
                    continue
                if first[i] < 0:
                    rec[name].append(float("nan"))
                    continue
                rec[name].append(float(hours(first[i], n) - CHANGE_H))
                if name != "cusum" or not pin:
                    continue
                full = np.concatenate([ref[i], mon[i]])
                alarm = REF_DAYS * n + first[i]
                lz_s = float(hours(last_zero[i], n) * 3600) if last_zero[i] >= 0 else 0.0
                at, low, high, eff = pin_alarm(t_full[:alarm + 1], full[:alarm + 1], des.designs[i], lz_s)
                later = int(np.searchsorted(t_full, t_full[alarm] + 24 * 3600, side="right"))
                at24, *_ = pin_alarm(t_full[:later], full[:later], des.designs[i], lz_s)
                starts.append(abs(at / 3600 - CHANGE_H))
                starts24.append(abs(at24 / 3600 - CHANGE_H))
                starts_lz.append(abs(lz_s / 3600 - CHANGE_H))
                cover_start.append(low / 3600 <= CHANGE_H <= high / 3600)
                cover_effect.append(eff.low <= true_effect <= eff.high)
                effects.append(eff.points)
        if "weekly" not in rules:
            continue
        # Weekly: at each midnight from Tuesday 00:00 (day index 28 + 1) to the end.
        rc, rt, rq = day_aggregates(np.hstack([ref[:, -14 * n:], mon]), n)
        weekly = weekly_alerts(rc, rt, rq, 15)  # evaluation j at hour 24·(j + 1)
        rec["weekly"] += window_delays(weekly, 24.0 * (np.arange(weekly.shape[1]) + 1))
        hc, hs = half_hour_sums(np.hstack([ref[:, -n:], mon]), n)
        lf = langfuse_alerts(hc, hs, designs["cusum"].mean)  # check j at hour 0.5·j
        rec["langfuse"] += window_delays(lf, LF_EVERY_H * np.arange(lf.shape[1]))
    out = {r: summarise(v) for r, v in rec.items()}
    if not pin:
        return out
    out["cusum"].update(
        start_error_median_h=pct(starts, 50), start_error_p90_h=pct(starts, 90),
        start_error_last_zero_median_h=pct(starts_lz, 50), start_error_24h_median_h=pct(starts24, 50),
        start_interval_coverage=float(np.mean(cover_start)) if cover_start else float("nan"),
        effect_median=pct(effects, 50), true_effect=true_effect,
        effect_interval_coverage=float(np.mean(cover_effect)) if cover_effect else float("nan"))
    return out


def history_arrays(t_s: np.ndarray, x: np.ndarray):
    """What incident.History.arrays holds after the scores (t_s seconds, ascending) x: hourly
    buckets back 14 days, 5-minute buckets over the last 2 days (vectorised)."""
    newest = float(t_s[-1])
    coarse = incident.COARSE_BUCKET_SECONDS
    split = math.ceil((newest - incident.FINE_SECONDS) / coarse) * coarse
    out = []
    for width, lo_t, sel in ((incident.COARSE_BUCKET_SECONDS, newest - incident.HISTORY_SECONDS, t_s < split),
                             (incident.BUCKET_SECONDS, split, t_s >= split)):
        b = np.floor(t_s[sel] / width).astype(int)
        keep = b >= int(lo_t // width)
        b, v = b[keep], x[sel][keep]
        if not len(b):
            continue
        b0 = b[0]
        cnt = np.bincount(b - b0)
        starts = (np.arange(len(cnt)) + b0) * float(width)
        out.append((starts, starts + width, cnt, np.bincount(b - b0, weights=v), np.bincount(b - b0, weights=v * v)))
    return tuple(np.concatenate([o[i] for o in out]) for i in range(5))


def pin_alarm(t_s: np.ndarray, x: np.ndarray, design: sq.Design, last_zero_s: float):
    """The module's start estimate and effect from the bounded history up to the last score."""
    keep = t_s > t_s[-1] - incident.HISTORY_SECONDS - incident.COARSE_BUCKET_SECONDS
    starts, ends, cnt, tot, sqs = history_arrays(t_s[keep], x[keep])
    est = incident.estimate_start(starts, ends, cnt, tot, design, last_zero_s)
    after = ends > est.at
    eff = incident.effect(design, int(cnt[after].sum()), float(tot[after].sum()), float(sqs[after].sum()))
    return est.at, est.low, est.high, eff


def window_delays(alerts: np.ndarray, at_hours: np.ndarray) -> list:
    out = []
    before = at_hours <= CHANGE_H
    within = (at_hours > CHANGE_H) & (at_hours <= CHANGE_H + HORIZON_H)
    for row in alerts:
        if row[before].any():
            out.append(None)
        elif row[within].any():
            out.append(float(at_hours[within][row[within].argmax()] - CHANGE_H))
        else:
            out.append(float("nan"))
    return out


def pct(values, q: float) -> float:
    """The q-th percentile as a sample value (nearest rank): +inf stays +inf, no interpolation."""
    if not len(values):
        return float("nan")
    ordered = np.sort(np.asarray(values, dtype=float))
    return float(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)])


def median_ci(values) -> tuple[float, float]:
    """95% distribution-free interval for the median (order statistics)."""
    ordered = np.sort(np.asarray(values, dtype=float))
    m = len(ordered)
    if m < 10:
        return float("nan"), float("nan")
    half = 1.96 * math.sqrt(m) / 2
    return float(ordered[max(0, math.floor(m / 2 - half) - 1)]), float(ordered[min(m - 1, math.ceil(m / 2 + half))])


def summarise(delays: list) -> dict:
    """Delays in hours (None = alarmed before the change, left out; nan = not within 14 days,
    counted as +inf in the percentiles)."""
    valid = [d for d in delays if d is not None]
    arr = [d if not math.isnan(d) else math.inf for d in valid]
    caught = sum(1 for d in arr if d != math.inf)
    return {"median_h": pct(arr, 50), "median_ci_h": median_ci(arr), "p90_h": pct(arr, 90),
            "caught_14d": caught / len(valid) if valid else float("nan"),
            "alarmed_before_change": 1 - len(valid) / len(delays) if delays else float("nan"), "runs": len(valid)}


# --- cross-checks ----------------------------------------------------------------------------

def cross_check(rng: np.random.Generator) -> None:
    """The vectorised rules must agree with the module and stats.py before anything is measured."""
    dist = distributions()[0]
    n = 200
    ref = dist.draw(rng, 0, (6, REF_DAYS * n))
    designs = build_designs(ref, n)
    single = designs["cusum"]
    mon = dist.draw(rng, 12, (6, 5 * n))
    for name, des in designs.items():
        first, last_zero = first_crossing(mon, des)
        for i in range(6):
            state, hit = cs.new_state(0.0), -1
            for j, x in enumerate(mon[i]):
                state = cs.update(state, float(x), float(hours(j, n) * 3600), des.designs[i])
                if state.detected_at is not None:
                    hit = j
                    break
            if hit != first[i]:
                raise SystemExit(f"vectorised {name} disagrees with cusum.update on stream {i}: "
                                 f"alarm {first[i]} vs {hit}")
            want_lz = float(hours(last_zero[i], n) * 3600) if last_zero[i] >= 0 else 0.0
            if name == "cusum" and hit >= 0 and state.last_zero != want_lz:
                raise SystemExit(f"vectorised CUSUM's last zero {want_lz} vs cusum.update's {state.last_zero}")
    # Day blocks with restarts vs the module restarting after each alarm (a drifted stream alarms often).
    total, st = 0, np.zeros((6, 1))
    for day in range(2):
        got, st = count_alarms_day(mon[:, day * n:(day + 1) * n], single, st)
        total += int(got.sum())
    want = 0
    for i in range(6):
        state = cs.new_state(0.0)
        for j, x in enumerate(mon[i, :2 * n]):
            state = cs.update(state, float(x), float(hours(j, n) * 3600), single.designs[i])
            if state.detected_at is not None:
                want += 1
                state = cs.new_state(state.frontier)
        if abs(state.s - st[i, 0]) > 1e-6 * max(1.0, state.s):
            raise SystemExit(f"day-block CUSUM ends at {st[i, 0]}, cusum.update at {state.s}")
    if total != want:
        raise SystemExit(f"day-block CUSUM counts {total} alarms, cusum.update {want}")
    # Weekly rule vs stats.decide.
    x = dist.draw(rng, 0, (8, 14 * n))
    x[:4, 7 * n:] = dist.draw(rng, 5, (4, 7 * n))
    c, t, q = day_aggregates(x, n)
    got = weekly_alerts(c, t, q, 14)[:, 0]
    for i in range(8):
        a, b = x[i, :7 * n], x[i, 7 * n:]
        weeks = [WeekStats(len(w), w.sum(), (w * w).sum()) for w in (a, b)]
        [dec] = decide([CellInput("c", *weeks)])
        if (dec.status == "alert") != bool(got[i]):
            raise SystemExit(f"weekly rule disagrees with stats.decide on run {i}")
    # The bucketed history vs incident.History (hourly and 5-minute parts).
    hist = incident.History()
    full = np.concatenate([ref[0], mon[0, :3 * n]])
    t_s = hours(np.arange(len(full)) - REF_DAYS * n, n) * 3600.0
    for j in range(len(full) - 15 * n, len(full)):
        hist.add(float(full[j]), float(t_s[j]))
    mine, theirs = history_arrays(t_s, full), hist.arrays()
    keep = mine[2] > 0
    if any(not np.allclose(a[keep], b) for a, b in zip(mine, theirs)):
        raise SystemExit("bucketed history disagrees with incident.History")


# --- report ----------------------------------------------------------------------------------

DELAY_GOALS = ((12, 1000, 4), (12, 200, 15), (12, 50, 48), (5, 1000, 14), (5, 200, 50))  # (drop, n/day, hours)


def remeasure_undecided(results: dict, streams: int, rng: np.random.Generator) -> list[str]:
    """The delay goals sit close to what any detector can do: where the shipped CUSUM's median
    has the limit inside its 95% interval, measure that configuration again on ``streams``
    fresh streams (delays only, no pinning: a few seconds per 1,000 streams) and keep it beside
    the first figure as ``precise``; the verdict reads the precise one. Returns what it did."""
    done = []
    for drop, n, limit in DELAY_GOALS:
        for dist in distributions():
            if dist.name not in GOAL_DISTS:
                continue
            d = results[dist.name][str(n)][f"drop{drop}"]["cusum"]
            lo, hi = d["median_ci_h"]
            if not lo <= limit <= hi:
                continue
            chunk = max(10, min(250, 2_000_000 // (MON_DAYS * n + REF_DAYS * n)))
            d["precise"] = drift_streams(dist, n, drop, streams, rng, chunk, rules=("cusum",), pin=False)["cusum"]
            p = d["precise"]
            done.append(f"{dist.name} {n}/day {drop}-pt: {d['median_h']:.1f} h [{lo:.1f}, {hi:.1f}] over {d['runs']:,}"
                        f" streams -> {p['median_h']:.1f} h [{p['median_ci_h'][0]:.1f}, {p['median_ci_h'][1]:.1f}]"
                        f" over {p['runs']:,}")
    return done


def goals(results: dict, rule: str) -> list[tuple[str, bool, str]]:
    """Issue 25's goals for one CUSUM design, on the issue's case (5-level SD 31 and normal SD 30):
    each delay goal needs the configuration's false alarms <= 1 per cell-year too."""
    out = []
    for drop, n, limit in DELAY_GOALS:
        oks, figs = [], []
        for dist in GOAL_DISTS:
            r = results[dist][str(n)]
            fa = r["false_alarms_per_cell_year"][rule]
            fa_hw = 1.96 * r["false_alarms_se"][rule]
            d = r[f"drop{drop}"][rule]
            d = d.get("precise", d)  # re-measured on more streams when the first run could not decide
            lo, hi = d["median_ci_h"]
            oks.append(d["median_h"] <= limit and fa <= 1.0)
            edge = " (the limit is inside the median's CI)" if lo <= limit <= hi else ""
            over = f" over {d['runs']:,} streams" if "precise" in r[f"drop{drop}"][rule] else ""
            figs.append(f"{dist} {d['median_h']:.1f} h [{lo:.1f}, {hi:.1f}]{over} at {fa:.2f} ± {fa_hw:.2f} FA/yr{edge}")
        out.append((f"{drop}-pt drop: median delay <= {limit} h at {n}/day, <= 1 FA/cell-yr", all(oks),
                    "; ".join(figs)))
    oks, figs = [], []
    for dist in GOAL_DISTS:
        for n in (200, 1000):
            c = results[dist][str(n)]["drop5"][rule]["caught_14d"]
            oks.append(c >= 0.99)
            figs.append(f"{dist} {n}/day {100 * c:.1f}%")
    out.append((">= 99% of 5-pt drops caught within 14 days at >= 200/day", all(oks), "; ".join(figs)))
    oks, figs = [], []
    for dist in GOAL_DISTS:
        e = results[dist]["1000"]["drop12"]["cusum"]["start_error_median_h"]
        oks.append(e <= 0.5)
        figs.append(f"{dist} {e:.2f} h")
    out.append(("start-time median error <= 0.5 h at 1,000/day (12-pt drop; the start is estimated"
                " the same way for every design)", all(oks), "; ".join(figs)))
    return out


def fmt(v, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v == float("inf"):
        return "never"
    return f"{v:.{nd}f}"


def print_table(results: dict) -> None:
    print("False alarms per cell-year on in-control year-long streams, ± the 95% interval (from the spread between"
          " streams: each has its own reference)")
    print(f"{'scores':<14}{'n/day':>6} {'cell-yrs':>8} " + " ".join(f"{r:>15}" for r in RULES))
    for dist, by_n in results.items():
        for n, r in by_n.items():
            fa, se = r["false_alarms_per_cell_year"], r["false_alarms_se"]
            print(f"{dist:<14}{n:>6} {r['cell_years']:>8} "
                  + " ".join(f"{fa[x]:>8.2f} ± {1.96 * se[x]:<4.2f}" for x in RULES))
    print()
    print("Delay from the change (Wed 14:00) to the alarm, hours: median / p90 / % caught within 14 days")
    print(f"{'scores':<14}{'n/day':>6} {'drop':>4} " + " ".join(f"{r:^19}" for r in RULES) + f" {'pre%':>9}")
    for dist, by_n in results.items():
        for n, r in by_n.items():
            for drop in DROPS:
                d = r[f"drop{drop}"]
                cells = " ".join(f"{fmt(d[x]['median_h']):>6} {fmt(d[x]['p90_h']):>6} "
                                 f"{fmt(100 * d[x]['caught_14d'], 0):>5}" for x in RULES)
                pre = "/".join(fmt(100 * d[x]["alarmed_before_change"], 0) for x in ("cusum", "langfuse"))
                print(f"{dist:<14}{n:>6} {drop:>4} {cells} {pre:>9}")
    print("never = p90 beyond 14 days; pre% = runs that alarmed before the change, cusum/langfuse (left out of"
          " the delays; weekly <= 3%)")
    print()
    print("What the single CUSUM's alert pins (at the alarm unless said):")
    print(f"{'scores':<14}{'n/day':>6} {'drop':>4} | {'start error h: med':>18} {'p90':>6} {'last-zero':>9}"
          f" {'+24 h':>6}"
          f" | {'start int. covers':>17} | {'effect med':>10} {'true':>5} {'int. covers':>11}")
    for dist, by_n in results.items():
        for n, r in by_n.items():
            for drop in DROPS:
                c = r[f"drop{drop}"]["cusum"]
                print(f"{dist:<14}{n:>6} {drop:>4} | {fmt(c['start_error_median_h'], 2):>18}"
                      f" {fmt(c['start_error_p90_h']):>6}"
                      f" {fmt(c['start_error_last_zero_median_h'], 2):>9} {fmt(c['start_error_24h_median_h'], 2):>6}"
                      f" | {fmt(100 * c['start_interval_coverage'], 0):>16}% | {fmt(c['effect_median']):>10}"
                      f" {fmt(c['true_effect']):>5} {fmt(100 * c['effect_interval_coverage'], 0):>10}%")
    print("start error: |estimate - 14:00|, the change-point MLE on the bounded history; last-zero: the CUSUM's"
          " O(1) estimate alone; +24 h: the MLE re-run a day after the alarm (an update of the alert);")
    print("covers: share of alarms whose 95% start interval / always-valid effect interval holds the true start / drop")


def design_spec(kwargs: dict) -> str:
    """"k = 0.6·D/σ0 for 5 pts at 1·ARL0 (margin 1.2)": what design(ref, **kwargs) builds."""
    arms = tuple(kwargs.get("also", sq.DEFAULT_ALSO))
    ratio = kwargs.get("k_ratio", sq.K_RATIO)
    shares = ((5.0, 1 - sum(x for _, x in arms)), *arms)
    return (" + ".join(f"k = {ratio:g}·D/σ0 for {D:g} pts at {1 / x:g}·ARL0" for D, x in shares)
            + f" (margin {sq.ARL_MARGIN:g})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 cell-years and 150 drift streams per configuration")
    parser.add_argument("--cell-years", type=int, default=500,
                        help="in-control cell-years per configuration at 1,000/day (x2 at 200, x4 at 50; >= 200)")
    parser.add_argument("--streams", type=int, default=1000, help="drift streams per configuration and drop")
    parser.add_argument("--precise-streams", type=int, default=20000,
                        help="streams for re-measuring a shipped-CUSUM delay goal whose limit is inside its median's CI")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--out", default=str(RESULTS / "detection.json"))
    args = parser.parse_args(argv)
    cell_years, streams = (60, 150) if args.quick else (args.cell_years, args.streams)
    if args.quick:
        args.precise_streams = min(args.precise_streams, 1500)
    rng = np.random.default_rng(args.seed)
    began = time.monotonic()
    cross_check(rng)
    dists = distributions()
    print(f"detection benchmark: {cell_years} in-control cell-years at 1,000/day ({FA_SCALE[200]}x at 200, "
          f"{FA_SCALE[50]}x at 50) and {streams} drift streams per configuration and drop;"
          f" change Wed 14:00 (62 h in); reference 28 days; DEFAULT_SKEW {sq.DEFAULT_SKEW}, ARL_MARGIN {sq.ARL_MARGIN},"
          f" K_RATIO {sq.K_RATIO}, DEFAULT_ALSO {sq.DEFAULT_ALSO}")
    for dist in dists:
        print(f"  {dist.name}: SD {dist.sd:.1f}, mean {dist.means[0]:.2f} -> "
              + ", ".join(f"{dist.means[d]:.2f} ({dist.means[0] - dist.means[d]:.2f}-pt drop)" for d in DROPS))
    results: dict = {}
    for dist in dists:
        results[dist.name] = {}
        for n in NS:
            t0 = time.monotonic()
            chunk = max(10, min(250, 2_000_000 // (MON_DAYS * n + REF_DAYS * n)))
            years = cell_years * FA_SCALE[n]
            fa, fa_se = false_alarms(dist, n, years, rng, chunk)
            r = {"false_alarms_per_cell_year": fa, "false_alarms_se": fa_se, "cell_years": years}
            for drop in DROPS:
                r[f"drop{drop}"] = drift_streams(dist, n, drop, streams, rng, chunk)
            ex = sq.design(sq.Reference(dist.means[0], dist.sd, REF_DAYS * n, REF_DAYS, None, None, "ok"))
            r["design"] = {"k": ex.k, "h": ex.h, "expected_delay_h": {d: sq.expected_delay_hours(ex, d) for d in DROPS},
                           "note": sq.power_note(ex)}
            results[dist.name][str(n)] = r
            fa = r["false_alarms_per_cell_year"]
            print(f"  {dist.name:<13} {n:>5}/day: {time.monotonic() - t0:5.1f} s; FA/cell-yr "
                  + ", ".join(f"{x} {fa[x]:.2f}" for x in CUSUMS)
                  + f"; cusum median 12-pt {r['drop12']['cusum']['median_h']:.1f} h,"
                  + f" 5-pt {r['drop5']['cusum']['median_h']:.1f} h",
                  flush=True)
    print()
    print_table(results)
    print()
    remeasured = remeasure_undecided(results, args.precise_streams, rng)
    if remeasured:
        print(f"re-measured on {args.precise_streams:,} fresh streams, the limit being inside the first median's 95% CI:")
        for line in remeasured:
            print("  " + line)
        print()
    verdicts = {}
    for rule, kwargs in CUSUMS.items():
        spec = design_spec(kwargs)
        print(f"goals of issue 25, {rule} ({spec}), on {' and '.join(GOAL_DISTS)}:")
        verdicts[rule] = []
        for label, ok, figs in goals(results, rule):
            verdicts[rule].append({"goal": label, "pass": ok, "figures": figs})
            print(f"  {'PASS' if ok else 'FAIL'}  {label}: {figs}")
    elapsed = time.monotonic() - began
    print(f"\nruntime {elapsed:.0f} s")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cell_years": cell_years, "streams": streams, "seed": args.seed,
                               "default_skew": sq.DEFAULT_SKEW, "arl_margin": sq.ARL_MARGIN, "k_ratio": sq.K_RATIO,
                               "runtime_s": elapsed, "designs": {k: design_spec(v) for k, v in CUSUMS.items()},
                               "results": results,
                               "goals": verdicts}, indent=1, default=float))
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")


if __name__ == "__main__":
    main()
