"""What an alarm pins: the bounded history of a cell, the start of the change and the effect,
from the state of worker/drift/cusum.py and the design of worker/drift/sequential.py. Pure
functions, no Redis, no I/O; times are trace times in epoch seconds, scores quality points.

* **History** (``History``): n, sum and sum of squares per 5-minute trace-time bucket for the
  last 2 days and per hour for the last 14: at most 577 + 337 buckets × 3 numbers per cell,
  whatever the traffic; read only after an alarm (start and effect), never per score. Five
  minutes where it matters — at 1,000/day the start error is ~0.25 h and an alarm comes within
  hours — and hours where the start error is hours anyway (50–200/day), back far enough for a
  5-point drop at 50/day (median delay 4.5–8.5 days: a 7-day window missed the start in half of those runs).
* **Start** (``estimate_start``): the single change-point MLE over the history, pre-change mean
  fixed at the frozen reference μ₀ (28 days of data: with the pre-change mean estimated from
  the window instead, the start errs as much or more at every n on the benchmark), post-change mean free:
  the profile log-likelihood of a change at τ is (Σ_{t≥τ}(μ₀ − x_t))² / (2σ₀² n_{≥τ}) when
  that sum is positive. It refines the CUSUM's last zero (that is the MLE with the post-change
  mean fixed at μ₀ − 2kσ₀ = μ₀ − 1.2·D): median error 0.25–0.33 h vs 0.28–0.48 h at
  1,000/day, 12-point drop. Ties across empty buckets take the middle of the gap. The 95%
  interval is the likelihood-ratio set {τ : ℓ(τ̂) − ℓ(τ) ≤ log(2/α)}: for a Gaussian mean shift
  ℓ(τ̂) − ℓ(τ₀) is the larger maximum of two random walks with drift −δ²/2 and variance δ² per
  score, each above c with probability e^(−c), so the set covers τ₀ with probability ≈ 1 − α;
  it is widened by a bucket on each side for the bucketing (covers the true start in 88–96% of
  alarms).
* **Effect** (``effect``): reference mean − mean since the estimated start, with an always-valid
  95% interval: the two-sided normal-mixture confidence sequence of Howard, Ramdas, McAuliffe
  & Sekhon (Ann. Stat. 2021; Robbins' mixture), |Σ(x − μ)| ≤ √((V + ρ) log((V + ρ)/(ρ α²))),
  with V = n·s², s² the sample variance floored at MIN_SD² — the asymptotic confidence sequence
  of Waudby-Smith et al. (Ann. Stat. 2024), valid at every n the alert is re-sent at; ρ is
  tuned for the design's expected number of post-change scores at detection. The frozen
  reference's own error is added by a union bound (1% of α on a fixed z-interval for μ₀, 4% on
  the sequence), so the interval is about the true drop, not just this sample's (it covers the
  true drop in 98–100% of the benchmark's alarms: conservative, as always-valid intervals are).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
from scipy import optimize
from scipy import stats as sps

from worker.drift.cusum import State
from worker.drift.sequential import Design, expected_delay_hours
from worker.drift.stats import MIN_SD

BUCKET_SECONDS = 300  # 5-minute history buckets for the last FINE_SECONDS
FINE_SECONDS = 2 * 86400
COARSE_BUCKET_SECONDS = 3600  # hourly buckets back to HISTORY_SECONDS
HISTORY_SECONDS = 14 * 86400
ALPHA = 0.05
# Of the effect interval's α, the share spent on the frozen reference mean (a fixed interval).
REFERENCE_ALPHA_SHARE = 0.2


# --- bounded history -------------------------------------------------------------------------

class History:
    """Per-bucket (n, sum, sum of squares) by trace time, at two resolutions: 5-minute buckets
    for the last ``fine_seconds`` (2 days) before the newest score and hourly buckets for the
    last ``keep_seconds`` (14 days): at most 577 + 337 buckets per cell, whatever the traffic.
    Late scores land in their buckets. Read only after an alarm."""

    def __init__(self, fine_seconds: int = FINE_SECONDS, keep_seconds: int = HISTORY_SECONDS,
                 fine_bucket: int = BUCKET_SECONDS, coarse_bucket: int = COARSE_BUCKET_SECONDS):
        if coarse_bucket % fine_bucket:
            raise ValueError("hourly buckets must be made of whole fine buckets")
        self.fine_seconds, self.keep_seconds = fine_seconds, keep_seconds
        self.fine_bucket, self.coarse_bucket = fine_bucket, coarse_bucket
        self.fine: dict[int, list[float]] = {}
        self.coarse: dict[int, list[float]] = {}
        self.newest: float | None = None

    def add(self, score: float, trace_time: float) -> None:
        newest = trace_time if self.newest is None else max(self.newest, trace_time)
        for buckets, width, keep in ((self.fine, self.fine_bucket, self.fine_seconds),
                                     (self.coarse, self.coarse_bucket, self.keep_seconds)):
            b = int(trace_time // width)
            cutoff = int((newest - keep) // width)
            if b < cutoff:
                continue  # older than this resolution keeps
            cell = buckets.get(b)
            if cell is None:
                buckets[b] = [1, score, score * score]
                if self.newest is None or int(newest // width) > int(self.newest // width):
                    for old in [k for k in buckets if k < cutoff]:  # at most once per new bucket
                        del buckets[old]
            else:
                cell[0] += 1
                cell[1] += score
                cell[2] += score * score
        self.newest = newest

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(bucket starts, bucket ends, n, sums, sums of squares), oldest first: hourly buckets
        up to the first whole hour the 5-minute buckets cover, 5-minute buckets after it."""
        if self.newest is None:
            empty = np.zeros(0)
            return empty, empty, empty, empty, empty
        split = math.ceil((self.newest - self.fine_seconds) / self.coarse_bucket) * self.coarse_bucket
        rows = [(k * self.coarse_bucket, self.coarse_bucket, v) for k, v in self.coarse.items()
                if (k + 1) * self.coarse_bucket <= split]
        rows += [(k * self.fine_bucket, self.fine_bucket, v) for k, v in self.fine.items()
                 if k * self.fine_bucket >= split]
        rows.sort(key=lambda r: r[0])
        starts = np.array([r[0] for r in rows], dtype=float)
        widths = np.array([r[1] for r in rows], dtype=float)
        vals = np.array([r[2] for r in rows], dtype=float).reshape(-1, 3)
        return starts, starts + widths, vals[:, 0], vals[:, 1], vals[:, 2]


# --- on alarm --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StartEstimate:
    at: float  # trace time (epoch seconds)
    low: float
    high: float
    last_zero: float | None  # the CUSUM's own estimate, for comparison
    log_lr: float  # ℓ(τ̂): the strength of the split


def estimate_start(starts: np.ndarray, ends: np.ndarray, n: np.ndarray, totals: np.ndarray, d: Design,
                   last_zero: float | None = None, alpha: float = ALPHA) -> StartEstimate:
    """The single change-point MLE over bucketed history (``History.arrays``), pre-change mean
    fixed at the reference, post-change mean free, with the likelihood-ratio (1 − alpha) interval."""
    keep = np.asarray(n) > 0
    starts, ends = np.asarray(starts, float)[keep], np.asarray(ends, float)[keep]
    n, totals = np.asarray(n, float)[keep], np.asarray(totals, float)[keep]
    if len(starts) == 0:
        at = last_zero if last_zero is not None else float("nan")
        return StartEstimate(at, at, at, last_zero, 0.0)
    # Candidate j: the change at the start of the j-th non-empty bucket (post = buckets ≥ j).
    deficit = (d.mean * n - totals)[::-1].cumsum()[::-1]  # Σ_{t ≥ τ} (μ₀ − x_t)
    n_post = n[::-1].cumsum()[::-1]
    ll = np.where(deficit > 0, deficit * deficit / (2 * d.sd * d.sd * n_post), 0.0)
    best = float(ll.max())
    # Empty buckets were dropped, so a candidate stands for the whole gap since the previous
    # non-empty bucket: the estimate is the middle of that gap.
    j = int(np.argmax(ll))
    at = starts[j] if j == 0 else (ends[j - 1] + starts[j]) / 2
    # The set of candidates within log(2/α) of the best, widened by the bucket on either side
    # (a change inside a bucket sits between two candidates).
    inside = np.flatnonzero(ll >= best - math.log(2 / alpha))
    lo_j, hi_j = int(inside[0]), int(inside[-1])
    low = starts[lo_j - 1] if lo_j > 0 else starts[0] - (ends[0] - starts[0])
    high = ends[hi_j]
    return StartEstimate(float(at), float(min(low, at)), float(max(high, at)), last_zero, best)


def _mixture_rho(v_opt: float, alpha: float) -> float:
    """ρ that makes the normal-mixture boundary tightest at intrinsic time ``v_opt``."""
    def width(log_rho: float) -> float:
        rho = math.exp(log_rho)
        return (v_opt + rho) * math.log((v_opt + rho) / (rho * alpha * alpha))
    res = optimize.minimize_scalar(width, bounds=(math.log(v_opt) - 10, math.log(v_opt) + 5), method="bounded")
    return math.exp(res.x)


def mixture_half_width(n: int, variance: float, alpha: float, n_opt: float) -> float:
    """Half-width, in points, of the two-sided normal-mixture confidence sequence for a mean
    after n scores (Howard et al. 2021; ρ tuned for n_opt scores)."""
    if n <= 0:
        return float("inf")
    rho = _mixture_rho(max(n_opt, 1.0) * variance, alpha)
    v = n * variance
    return math.sqrt((v + rho) * math.log((v + rho) / (rho * alpha * alpha))) / n


@dataclasses.dataclass(frozen=True)
class Effect:
    points: float  # reference mean − mean since start (positive = worse)
    low: float
    high: float
    n: int  # scores since start
    mean: float  # their mean


def effect(d: Design, n: int, total: float, total_sq: float, alpha: float = ALPHA) -> Effect:
    """The drop since the start with an always-valid (1 − alpha) interval: a confidence
    sequence for the post-start mean (1 − alpha·0.8) united with a fixed interval for the
    frozen reference mean (1 − alpha·0.2)."""
    if n <= 0:
        return Effect(float("nan"), float("-inf"), float("inf"), 0, float("nan"))
    mean = total / n
    var = (total_sq - total * total / n) / (n - 1) if n > 1 else 0.0
    var = min(max(var, MIN_SD ** 2), 50.0 ** 2)  # scores on 0–100 vary by at most 50²
    a_ref = alpha * REFERENCE_ALPHA_SHARE
    n_opt = min(expected_delay_hours(d), 14 * 24) / 24 * d.n_per_day
    half = (mixture_half_width(n, var, alpha - a_ref, n_opt)
            + sps.norm.ppf(1 - a_ref / 2) * d.sd / math.sqrt(d.n_reference))
    points = float(d.mean - mean)
    return Effect(points, points - half, points + half, n, float(mean))


@dataclasses.dataclass(frozen=True)
class Incident:
    """What a quality_drop alert pins (DESIGN.md, "Quality alerts"): times are trace times."""
    started_at: float
    started_between: tuple[float, float]
    detected_at: float
    effect_points: float
    effect_interval: tuple[float, float]
    n_after: int
    reference_mean: float
    reference_n: int
    last_zero: float | None


def pin(state: State, d: Design, history: History, alpha: float = ALPHA) -> Incident | None:
    """The alert's fields for an alarmed cell (None if not alarmed): the start from the bounded
    history, the effect from the history's buckets since that start (or, if none, from the
    since-last-zero sums of the state)."""
    if state.detected_at is None:
        return None
    starts, ends, n, totals, total_sqs = history.arrays()
    start = estimate_start(starts, ends, n, totals, d, state.last_zero, alpha)
    after = ends > start.at
    if math.isnan(start.at) or not after.any():
        eff = effect(d, state.n, state.total, state.total_sq, alpha)
    else:
        eff = effect(d, int(n[after].sum()), float(totals[after].sum()), float(total_sqs[after].sum()), alpha)
    return Incident(start.at, (start.low, start.high), state.detected_at, eff.points, (eff.low, eff.high),
                    eff.n, d.mean, d.n_reference, state.last_zero)


def flagged_days(started_at: float, until: float) -> list[str]:
    """The trace-days an incident covers, to flag as changed when re-baselining."""
    first = dt.datetime.fromtimestamp(started_at, dt.timezone.utc).date()
    last = dt.datetime.fromtimestamp(until, dt.timezone.utc).date()
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]

