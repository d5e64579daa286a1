"""The per-cell state of the CUSUM of worker/drift/sequential.py and its update, one confirmed
score at a time, late scores included; once alarmed, the mirror CUSUM that says the cell
recovered. Pure functions, no Redis, no I/O; times are trace times in epoch seconds.

* **State** (``State``, ``update``): O(1) per cell: S (and S of each extra arm); the trace time
  of the score after which S was last 0 (the CUSUM's own start estimate); n, sum and sum of
  squares of the scores since then; the frontier (latest trace time applied); once alarmed,
  the detection time and the recovery CUSUM. Each confirmed score is applied exactly once.
* **Late scores.** The caller feeds scores in trace-time order through a reorder buffer (the
  pending scores of a cell, sorted by trace time, applied by ``advance`` at each drift tick).
  A score whose trace time is still behind the frontier when it arrives lands in its
  trace-time place with respect to the current excursion: after the last zero, S ← max(0, S +
  z) and it joins the since-zero sums; before it, S is unchanged. Inserting an increment z at
  its true place gives exactly that in two of the four cases (a bad score inside the
  excursion; a good score before it, which a later reset absorbs) and something between S and
  S + z in the other two, where the rule takes the lower value. So a late score never raises S
  above its in-place value (it cannot cause a false alarm that in-place order would not), it
  errs by at most |z| ≤ 100/σ₀ (2–4 for judge scores) against limits of 29–53, and when it
  takes S over h the detection time is the frontier, an upper bound on the in-place crossing.
  The history buckets take late scores in their true place.
* **Recovery** (``recovered``): once alarmed, the cell stays alerted (one alert per incident;
  updates re-send it with the same incident id) until a mirror CUSUM R ← max(0, R + (x − μ₀)/σ₀
  + k_r) crosses its own limit h_r (``Design.recovery``): k_r = D/(2σ₀), Page's k whatever the
  alarm's k, and h_r solved like h for ARL₀ (without the skew term: R's increments are skewed
  the other way): the scores have averaged above μ₀ − D/2 for as long as a drop of D takes to
  detect. While the drop persists at D or more, R drifts at ≤ −k_r, so a false "recovered" is
  as rare as a false alarm (with the alarm's k = 0.6·D/σ₀ it would drift at only −0.4·D/σ₀ and
  "recover" from a lasting drop of D within days). Then the caller re-baselines: a new
  reference from the 28 days before with the incident's days (``flagged_days``) flagged as
  changed, and a new state. (The research's "the post-change mean's confidence sequence covers
  μ₀ − k" needs a recent-window mean to ever recover; the mirror CUSUM chooses that window by
  its last zero.)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from worker.drift.sequential import Design


@dataclasses.dataclass(frozen=True)
class State:
    """O(1) per cell. Times are trace times (epoch seconds)."""
    s: float = 0.0
    last_zero: float | None = None  # trace time of the score after which S was last 0
    n: int = 0  # scores since last_zero (frozen start once alarmed: it keeps counting)
    total: float = 0.0
    total_sq: float = 0.0
    frontier: float | None = None  # the latest trace time applied
    count: int = 0  # scores applied
    late: int = 0  # of which arrived behind the frontier
    detected_at: float | None = None  # trace time of the score that took S over h
    s_at_detection: float | None = None
    recovery: float = 0.0  # mirror CUSUM, once alarmed
    recovery_zero: float | None = None
    recovered_at: float | None = None
    arms: tuple[tuple[float, float | None], ...] = ()  # (S, last zero) of the design's extra arms


def new_state(start: float | None = None) -> State:
    """A fresh detector, e.g. after re-baselining; ``start``: the trace time monitoring starts."""
    return State(last_zero=start, frontier=start)


def _step(s: float, zero: float | None, z: float, trace_time: float, frontier: float,
          late: bool) -> tuple[float, float | None, str]:
    """One CUSUM arm: (S, last zero, "before" | "reset" | "counted")."""
    if late and zero is not None and trace_time <= zero:
        # Before the current excursion: a reset after it absorbs a good score exactly and a bad
        # one up to z; S is left alone (never above its in-place value).
        return s, zero, "before"
    s += z
    if s <= 0:
        return 0.0, frontier, "reset"
    return s, zero, "counted"


def update(state: State, score: float, trace_time: float, d: Design) -> State:
    """Apply one confirmed score (points) at its trace time. In order (trace time ≥ frontier):
    the CUSUM step. Behind the frontier: the late rule of the module docstring."""
    previous = state.frontier
    late = previous is not None and trace_time < previous
    frontier = previous if previous is not None and late else trace_time
    if state.detected_at is not None:
        return _update_alarmed(state, score, trace_time, frontier, late, d)
    s, zero, what = _step(state.s, state.last_zero, d.z(score), trace_time, frontier, late)
    crossed = s > d.h
    arms = state.arms if len(state.arms) == len(d.arms) else tuple((0.0, state.last_zero) for _ in d.arms)
    if d.arms:
        base = (d.mean - score) / d.sd
        arms = tuple(_step(a_s, a_zero, base - k, trace_time, frontier, late)[:2]
                     for (a_s, a_zero), (_, k, _h) in zip(arms, d.arms))
        crossed = crossed or any(a_s > h for (a_s, _), (_, _k, h) in zip(arms, d.arms))
    if what == "reset":  # S went back to 0: a new excursion, new sums
        n, total, total_sq = 0, 0.0, 0.0
    elif what == "counted":
        n, total, total_sq = state.n + 1, state.total + score, state.total_sq + score * score
    else:
        n, total, total_sq = state.n, state.total, state.total_sq
    return dataclasses.replace(
        state, s=s, last_zero=zero, n=n, total=total, total_sq=total_sq, frontier=frontier,
        count=state.count + 1, late=state.late + late, arms=arms,
        detected_at=frontier if crossed else None, s_at_detection=s if crossed else None,
        recovery_zero=frontier if crossed else None)


def _update_alarmed(state: State, score: float, trace_time: float, frontier: float, late: bool,
                    d: Design) -> State:
    """After the alarm: the since-start sums keep counting (the start stays frozen) and the
    mirror CUSUM watches for recovery; the detector itself is done until re-baselined."""
    counted = state.last_zero is None or trace_time > state.last_zero
    n, total, total_sq = state.n, state.total, state.total_sq
    if counted:
        n, total, total_sq = n + 1, total + score, total_sq + score * score
    recovery, recovery_zero, recovered_at = state.recovery, state.recovery_zero, state.recovered_at
    k, h = d.recovery or (d.k, d.h)
    if recovered_at is None and not (late and recovery_zero is not None and trace_time <= recovery_zero):
        recovery += (score - d.mean) / d.sd + k
        if recovery <= 0:
            recovery, recovery_zero = 0.0, frontier
        elif recovery > h:
            recovered_at = frontier
    return dataclasses.replace(state, n=n, total=total, total_sq=total_sq, frontier=frontier,
                               count=state.count + 1, late=state.late + late, recovery=recovery,
                               recovery_zero=recovery_zero, recovered_at=recovered_at)


def advance(state: State, scores: Iterable[tuple[float, float]], d: Design) -> State:
    """Apply a batch of (trace_time, score), e.g. a drift tick's pending scores, in trace-time
    order (the reorder buffer); each is applied once."""
    for trace_time, score in sorted(scores, key=lambda p: p[0]):
        state = update(state, score, trace_time, d)
    return state


def alarmed(state: State, d: Design | None) -> bool:
    """True from the score that took S over h until the cell recovered (one alert per incident)."""
    return d is not None and state.detected_at is not None and state.recovered_at is None


def recovered(state: State) -> bool:
    """True once the mirror CUSUM says the scores are back above μ₀ − D/2: re-baseline."""
    return state.recovered_at is not None
