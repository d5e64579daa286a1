"""Sequential detection of a quality drop per cell: the reference and the detector's design
(its k and limit h, its delays). Pure functions, no Redis, no I/O; the per-cell state and its
update are worker/drift/cusum.py, what an alarm pins (start, effect) worker/drift/incident.py.

A cell (rubric × version × judge model × segment) is watched by a one-sided lower CUSUM on its
confirmed scores, in trace-time order, against a reference frozen from the 28 days before. When
the CUSUM crosses its limit the alert pins the change: an estimated start with a 95% interval,
the effect with an always-valid 95% interval, and the trace time of the score that crossed.
The weekly Welch table (stats.py, check.py) stays as the weekly summary; nothing here replaces
it. All scores are quality points (0–100, higher is better), as the aggregates store them, and
all times are trace times in epoch seconds (the caller converts to and from ISO).

Choices, argued (the research is /work/shared/research/detection.md, "§" below; the figures
quoted are from benchmarks/detection.py, which replays Appendix A's streams):

* **CUSUM, not an e-detector or a fixed threshold.** Page's CUSUM is optimal for a mean shift of
  the size it is designed for (Lorden's worst-case delay; Moustakides) and costs a few floats per
  cell; its false alarms are budgeted through ARL₀, the expected run between false alarms, the
  right currency for perpetual monitoring (§2.2). An always-valid test alone spends its α once
  in a cell's lifetime (§2.2); e-detectors (Shin, Ramdas & Rinaldo) bound the ARL without
  approximation but need a bound on the scores and give more conservative limits, and the
  CUSUM's approximation is checked here by simulation instead. Window thresholds page 50–290
  times a cell-year at 50–200 judged a day, or never see a 5-point drop once made quiet (§2.3c).
* **Reference** (``reference``): mean and sd pooled from per-day (n, sum, sum of squares)
  aggregates of the 28 days before, days flagged as changed left out, the sd floored at
  ``MIN_SD`` = 10 points like stats.py (a few equal scores are not certainty). Under
  ``MIN_REFERENCE_N`` = 200 scores the cell is ``insufficient_reference`` and cannot alarm
  (at 200 scores and sd 30 the reference mean alone is uncertain by ±4 points, nearly the
  whole 5-point threshold).
* **Design** (``design``): standardised increments z = (μ₀ − x)/σ₀ − k with k = 0.6·D/σ₀
  (``K_RATIO``) for the rubric's threshold drop D (default 5 points). Page's k = D/(2σ₀) is
  the likelihood-ratio CUSUM for a drop of exactly D, optimal in the worst case (S = 0 when
  the drop begins; Lorden); the goals are median delays of a CUSUM already running when the
  drop begins, and there, on the same streams and at the same false alarms, 0.6 is as fast for
  the threshold drop (5 points at 200/day over 20,000 streams: 48.7 h vs 49.1 on 5-level
  scores, 46.9 vs 47.1 on normal SD 30) and faster for bigger ones (12 points at 50/day: 44.8 h
  vs 49.6, 43.8 vs 49.1; at 200/day 13.2 vs 14.4); 0.45 and 0.4 were 1–3 h slower at 5 points,
  0.65 0.4 h and 0.7–0.8 1.5–4.5 h slower. The limit h is solved from Siegmund's approximation
  ARL(Δ) ≈ (e^(−2Δb) + 2Δb − 1)/(2Δ²), b = h + 1.166 (§2.2), for ARL₀ = A · 365 · n_per_day,
  A = cell-years per false alarm (1 by default; ``cell_years_for_weekly_pages`` turns "one
  false page a week across C cells" into A = C/52).
  The research's flat +8% on h (§2.3b) left 1.1–1.3 false alarms a cell-year; three measured
  effects replace it:
    1. *The reference is estimated.* A reference mean too high by ε (σ units) makes the
       in-control drift −k + ε, and false alarms grow like e^(2εb). h is solved so that the rate
       *averaged over the reference mean's own error* ε ~ N(0, 1/n_ref) meets the budget
       (Gauss–Hermite quadrature): +10% on h at 50 judged a day, +3.4% at 200, +0.9% at 1,000
       (k for 5 points, SD 31) — a flat +8% over-pays at 1,000/day and under-pays at 50/day.
    2. *Judge scores are skewed.* They pile up at the top of the scale, so the lower CUSUM sees
       rare big jumps (a 0 is 2.3 σ below a mean of 72) and alarms more often than normal
       theory says (1.2–1.35 a cell-year after 1. on the benchmark's 5-level and clipped-normal
       scores). Siegmund's e^(2kb) is the exponential tilt e^(θb) with θ the root of the
       increments' cumulant generating function; θ is taken to third order, Δθ + θ²/2 + κ₃θ³/6
       = 0, with κ₃ the reference's skewness when its days carry sums of cubes (today's
       aggregates do not) and ``DEFAULT_SKEW`` = 1.0 otherwise (the most skewed benchmark shape
       is 0.99): +4–5% on h. This matters more for bigger k: a flat margin that fits the
       5-point arm leaves the research's two-arm variant at 1.2–1.3 false alarms a cell-year.
    3. What is left (overshoot, the sd's error) is ``ARL_MARGIN`` = 1.2 on the ARL₀ target,
       calibrated on the benchmark: 0.68–0.96 false alarms a cell-year over its 12 shapes and
       rates in two runs, the most on 5-level scores at 50/day, which 1.15 (the calibration
       for Page's k) left at 0.91–1.04 over four seeds (Page's k: 0.88–1.02).
  ``also`` adds CUSUMs in parallel for bigger drops, each with a share of the budget; their
  rates add up (a union bound, measured conservative). ``DEFAULT_ALSO`` adds none: an arm takes
  budget from the threshold arm, whose 5-point delay at 200/day is the tightest goal, and with
  k = 0.6·D/σ₀ one arm already meets the 12-point goals. On the same streams a 12-point arm
  with 10% of the budget left the 12-point median at 50/day no faster (44.8 h vs 43.8) and the
  5-point one at 200/day 1.2 h slower; the research's variant (Page's k for 5 and 12 points,
  half the budget each: 39.0 h for 12 points at 50/day) takes 56.3 h for 5 points at 200/day,
  and the 80/20 split 51–52 h. ``expected_delay_hours`` gives Siegmund's zero-state delay for
  any drop; ``power_note`` and ``under_powered`` say it for cells that cannot detect the
  threshold drop in time ("a 5-point drop would take ~210 h to detect here"), which are shown,
  never paged through a fixed threshold.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterable

import numpy as np
from scipy import optimize

from worker.drift.stats import MIN_SD

REFERENCE_DAYS = 28
MIN_REFERENCE_N = 200
DEFAULT_DROP = 5.0  # points on 0-100: the rubric's owner.drift_threshold_points overrides it
SIEGMUND_B = 1.166  # Siegmund's correction for the overshoot of a normal random walk: b = h + 1.166
# The third cumulant assumed for the standardised increments (μ₀ − x)/σ₀ when the reference's
# days carry no sums of cubes: judge scores pile up at the top of the scale, so the lower CUSUM
# sees rare big jumps. 1.0 ≥ every shape in benchmarks/detection.py (5-level A.1: 0.99; clipped
# normals SD 25/30/35: 0.67/0.83/0.92).
DEFAULT_SKEW = 1.0
# Multiplies the ARL₀ target for what Siegmund, the skew term and the quadrature still miss;
# calibrated on benchmarks/detection.py (module docstring, "Design" 3).
ARL_MARGIN = 1.2
# k = K_RATIO · D/σ₀ for a drop of D points (0.5 is Page's classical k; "Design" argues 0.6).
K_RATIO = 0.6
# The default extra CUSUMs, (drop, share of the budget) each: none ("Design" says why).
DEFAULT_ALSO: tuple[tuple[float, float], ...] = ()
DEFAULT_UNDERPOWERED_HOURS = 72.0
# Gauss–Hermite nodes (probabilists') for the average over the reference mean's error.
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(41)
_GH_W = _GH_W / _GH_W.sum()


# --- reference -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DayAggregate:
    """One trace-day of a cell, as worker/drift/aggregates.py stores it."""
    day: str  # ISO date
    n: int
    total: float
    total_sq: float
    changed: bool = False  # flagged as inside an incident: left out of references
    total_cube: float | None = None  # Σx³, when the aggregates keep it (they do not today)


@dataclasses.dataclass(frozen=True)
class Reference:
    """The frozen baseline of a cell. ``sd`` is floored at MIN_SD; ``status`` is "ok" or
    "insufficient_reference" (then no design, no alarm)."""
    mean: float
    sd: float
    n: int
    days: int  # days that contributed (flagged days are not counted)
    since: str | None
    until: str | None
    status: str
    skew: float | None = None  # the scores' skewness, when every day carried Σx³

    @property
    def sufficient(self) -> bool:
        return self.status == "ok"

    @property
    def n_per_day(self) -> float:
        return self.n / self.days if self.days else 0.0

    @property
    def se(self) -> float:
        """Standard error of the reference mean, in points."""
        return self.sd / math.sqrt(self.n) if self.n else float("inf")


def reference(days: Iterable[DayAggregate], min_n: int = MIN_REFERENCE_N, min_sd: float = MIN_SD) -> Reference:
    """Pool the given days (the 28 trace-days before; the caller picks them) into a reference,
    leaving out days flagged as changed; fewer than ``min_n`` scores -> insufficient."""
    used = sorted((d for d in days if not d.changed and d.n > 0), key=lambda d: d.day)
    n = sum(d.n for d in used)
    total = sum(d.total for d in used)
    total_sq = sum(d.total_sq for d in used)
    since, until = (used[0].day, used[-1].day) if used else (None, None)
    if n < 2:
        return Reference(float("nan"), min_sd, n, len(used), since, until, "insufficient_reference")
    mean = total / n
    var = max(0.0, (total_sq - total * total / n) / (n - 1))
    status = "ok" if n >= min_n else "insufficient_reference"
    skew = None
    cubes = [d.total_cube for d in used if d.total_cube is not None]
    if var > 0 and len(cubes) == len(used):
        m3 = sum(cubes) / n - 3 * mean * total_sq / n + 2 * mean ** 3
        skew = m3 / var ** 1.5
    return Reference(mean, max(math.sqrt(var), min_sd), n, len(used), since, until, status, skew)


def reference_days(until: dt.date, days: int = REFERENCE_DAYS) -> list[str]:
    """The ISO trace-days a reference frozen on ``until`` reads: the ``days`` before it."""
    return [(until - dt.timedelta(days=i)).isoformat() for i in range(days, 0, -1)]


# --- design ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Design:
    """A cell's detector: increments z = (mean − x)/sd − k; alarm when S > h."""
    mean: float  # μ₀, the reference mean (points)
    sd: float  # σ₀ (points)
    n_reference: int
    drop: float  # D, the threshold drop it is designed for (points)
    k: float  # in σ units
    h: float  # in σ units
    n_per_day: float
    arl0: float  # the budget in scores: cell_years · 365 · n_per_day
    cell_years: float
    skew: float = 0.0  # third cumulant of the standardised increments the limit was solved for
    # More CUSUMs in parallel, for bigger drops: (drop, k, h) each; the first to cross alarms.
    arms: tuple[tuple[float, float, float], ...] = ()
    # (k, h) of the mirror CUSUM that says the cell recovered (cusum.py); None: (k, h) above.
    recovery: tuple[float, float] | None = None

    def z(self, score: float) -> float:
        return (self.mean - score) / self.sd - self.k


def _theta(delta: np.ndarray, skew: float) -> np.ndarray:
    """The non-zero root θ of the increments' cumulant generating function expanded to third
    order, Δθ + θ²/2 + κ₃θ³/6 = 0 (−2Δ for normal increments), for in-control drifts Δ ≤ 0;
    the normal root on the alarm side (Δ > 0), where only delays are computed."""
    delta = np.asarray(delta, dtype=float)
    neg = np.minimum(delta, 0.0)
    root = -2 * neg / (0.5 + np.sqrt(0.25 - 2 * skew * neg / 3))
    return np.where(delta <= 0, root, -2 * delta)


def _log_arl(delta: np.ndarray, h: float, skew: float = 0.0) -> np.ndarray:
    """log of Siegmund's ARL, (e^(θb) − θb − 1)/(−θΔ) with b = h + 1.166, θ = _theta(Δ): the
    textbook (e^(−2Δb) + 2Δb − 1)/(2Δ²) when skew = 0. Stable for long runs (e^(θb) overflows a
    float near θb = 710)."""
    b = h + SIEGMUND_B
    delta = np.asarray(delta, dtype=float)
    small = np.abs(delta) < 1e-9
    d = np.where(small, -1.0, delta)
    theta = _theta(d, skew)
    x = theta * b
    with np.errstate(over="ignore", invalid="ignore"):
        direct = np.log(np.maximum(np.expm1(np.minimum(x, 700.0)) - x, 1e-300))
        tail = x + np.log1p(-(x + 1) * np.exp(-np.maximum(x, 30.0)))
    log_arl = np.where(x > 30, tail, direct) - np.log(-theta * d)
    out: np.ndarray = np.where(small, 2 * np.log(b), log_arl)  # numpy types a ufunc's scalar result as Any
    return out


def siegmund_arl(delta: float, h: float, skew: float = 0.0) -> float:
    """Siegmund's average run length, in scores, of a CUSUM with limit ``h`` whose increments
    have mean ``delta``, variance 1 and third cumulant ``skew`` (delta = −k in control):
    ARL(Δ) ≈ (e^(−2Δb) + 2Δb − 1)/(2Δ²), b = h + 1.166, for normal increments; b² at Δ = 0."""
    return float(np.exp(_log_arl(np.asarray(delta), h, skew)))


def _alarm_rate(k: float, h: float, n_reference: int | None, skew: float = 0.0) -> float:
    """log of the false alarms per score, averaged over the reference mean's error ε ~ N(0,
    1/n_reference) in σ units (Gauss–Hermite); a known reference if n_reference is None."""
    if not n_reference:
        return float(-_log_arl(np.asarray(-k), h, skew))
    log_rates = -_log_arl(-k + _GH_X / math.sqrt(n_reference), h, skew)
    top = log_rates.max()
    return float(top + math.log((_GH_W * np.exp(log_rates - top)).sum()))


def limit_for_arl(k: float, arl0: float, n_reference: int | None = None, skew: float = 0.0) -> float:
    """The h (σ units) whose false-alarm rate is 1/arl0 by Siegmund, averaged over a
    reference mean estimated from ``n_reference`` scores (known reference if None), for
    increments with third cumulant ``skew``."""
    target = -math.log(arl0)
    def f(h: float) -> float:  # decreasing in h
        return _alarm_rate(k, h, n_reference, skew) - target

    guess = max(1.0, math.log(max(2 * k * k * arl0, 1.0 + 1e-9)) / (2 * k))  # normal theory, known reference
    lo, hi = guess / 2, guess * 2 + 5
    while f(lo) < 0:
        lo /= 4
    while f(hi) > 0:
        hi *= 4
    return float(optimize.brentq(f, lo, hi, xtol=1e-9))


def cell_years_for_weekly_pages(cells: int, pages_per_week: float = 1.0) -> float:
    """The per-cell budget A (cell-years per false alarm) that keeps C cells at
    ``pages_per_week`` false pages a week together: C cells alarm C/A times a year = 52/week."""
    return max(1, cells) / (52.0 * pages_per_week)


def design(ref: Reference, drop: float = DEFAULT_DROP, cell_years: float = 1.0,
           n_per_day: float | None = None, skew: float | None = None, margin: float = ARL_MARGIN,
           also: Iterable[tuple[float, float]] = DEFAULT_ALSO, k_ratio: float = K_RATIO) -> Design | None:
    """The detector for a cell, or None when its reference is insufficient. ``n_per_day``
    defaults to the reference's judged traces a day; ``skew``, the third cumulant of the
    standardised increments (minus the scores' skewness), to the reference's when its days
    carried sums of cubes, else DEFAULT_SKEW. ``also``: more CUSUMs in parallel as (drop,
    share of the false-alarm budget), e.g. ((12.0, 0.2),): an arm for 12-point drops taking a
    fifth of the budget, the threshold-drop arm keeping the rest (the research's variant is
    ((12.0, 0.5),) with ``k_ratio`` 0.5); the shares add up, so together they keep the budget (a
    union bound). Each arm's k is ``k_ratio`` · its drop / σ₀. The recovery CUSUM gets Page's k
    for D, D/(2σ₀), and its own h for ARL₀ (no skew term: its increments are skewed the other
    way, which only makes a false recovery rarer)."""
    if not ref.sufficient:
        return None
    n_day = n_per_day if n_per_day is not None else ref.n_per_day
    if skew is None:
        skew = max(0.0, -ref.skew) if ref.skew is not None else DEFAULT_SKEW
    also = tuple(also)
    rest = 1.0 - sum(share for _, share in also)
    if not 0 < rest <= 1 or any(share <= 0 or extra <= drop for extra, share in also):
        raise ValueError("extra arms need a bigger drop than the threshold's and shares that leave it some budget")
    arl0 = cell_years * 365.0 * max(n_day, 1e-9)

    def arm(d: float, share: float) -> tuple[float, float, float]:
        k = k_ratio * d / ref.sd
        return d, k, limit_for_arl(k, arl0 / share * margin, ref.n, skew)

    _, k, h = arm(drop, rest)
    k_rec = drop / ref.sd / 2
    return Design(ref.mean, ref.sd, ref.n, drop, k, h, n_day, arl0, cell_years, skew,
                  tuple(arm(d, share) for d, share in also),
                  (k_rec, limit_for_arl(k_rec, arl0 * margin, ref.n, 0.0)))


def expected_delay_hours(d: Design, drop: float | None = None) -> float:
    """Siegmund's expected hours from the start of a ``drop`` (default: the design's) to the
    alarm, at the design's judged traces a day, from S = 0."""
    drop = d.drop if drop is None else drop
    scores = min(siegmund_arl(drop / d.sd - k, h) for k, h in ((d.k, d.h), *((k, h) for _, k, h in d.arms)))
    return scores / max(d.n_per_day, 1e-9) * 24.0


def under_powered(d: Design, slo_hours: float = DEFAULT_UNDERPOWERED_HOURS) -> bool:
    """True when the threshold drop would take longer than ``slo_hours`` to detect here."""
    return expected_delay_hours(d) > slo_hours


def power_note(d: Design) -> str:
    """What the cell can see: "a 5-point drop would take ~120 h to detect here (50 judged a day)"."""
    hours = expected_delay_hours(d)
    shown = f"~{hours:.0f} h" if hours < 96 else f"~{hours:.0f} h ({hours / 24:.0f} days)"
    return f"a {d.drop:g}-point drop would take {shown} to detect here ({d.n_per_day:.0f} judged a day)"
