"""Which judged traces go to people, per rubric version with a ``review:`` section:

- **calibration**: a fixed share of the judged traces, picked by the contract's hash
  (samplers/hashing.py): a trace judged at rate r has u < r; it is a calibration trace when
  u < share × r, so the pick is the same in every replica and re-run, needs no state, and is an
  unbiased sample of what the judge saw (traces picked only by a segment quota are not in it);
- **boundary**: verdicts at the values ``review.boundary`` names (by default the scale's ends);
- **bottom**: the ``review.bottom_per_week`` lowest-scored traces of each segment cell per ISO
  week (Monday, UTC), from the drift aggregates' per-day bottom sets, so only scores Langfuse
  confirmed; at most N per cell and week however often it runs (a Redis set per cell-week).

The first two come from our own scores read back from Langfuse (source API, our deterministic
ids only), scanned incrementally per rubric from a cursor kept in Redis, with an overlap so a
score that became readable late is still seen; the queue's markers make the overlap free.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

import redis
from langfuse.api import LangfuseAPI

from samplers.hashing import sample_point
from worker.drift import aggregates as agg
from worker.jobs import format_rubric_key
from worker.json_types import JSONDict
from worker.langfuse_io.scores import score_id_for
from worker.redis_client import as_text
from worker.review.reads import scores_since, trace_id_of
from worker.rubrics.rubric import Rubric
from worker.rubrics.scales import Level

SCAN = "tracejudge:review:scan:"  # + what is scanned: the time the last complete scan reached
OVERLAP = dt.timedelta(minutes=15)
FIRST_LOOKBACK = dt.timedelta(days=7)
BOTTOM_ROUTED = "tracejudge:review:bottom:"  # + cell + ":" + week's Monday: the traces routed (<= N)
BOTTOM_TTL_S = 21 * 86400
# KEYS: the cell-week set; ARGV: trace id, N, ttl. 1 when the trace is (or now is) one of the N.
_CLAIM_BOTTOM = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


@dataclasses.dataclass(frozen=True)
class JudgedScore:
    """One of our scores as Langfuse keeps it."""

    trace_id: str
    rubric: Rubric
    value: float | str  # on the rubric's scale: a number, a label, or 1/0 for a boolean
    points: float  # quality points, 0-100, higher is better
    comment: str | None
    metadata: JSONDict  # the score's metadata as Langfuse returns it


def scale_value(rubric: Rubric, value: Level) -> float | str:
    """A value Langfuse returned (v3: a number, a label, a bool) as the scale's own value."""
    if rubric.scale.kind == "boolean":
        return 1 if value in (True, 1, 1.0, "True", "true") else 0
    if rubric.scale.kind == "categorical":
        return str(value)
    return float(value)


def points_of(rubric: Rubric, value: Level) -> float | None:
    try:
        return agg.quality_points(rubric, scale_value(rubric, value))
    except (KeyError, TypeError, ValueError):
        return None  # not on this version's scale


def judged_scores(api: LangfuseAPI, rubrics: dict[str, Rubric], names: set[str], since: dt.datetime,
                  until: dt.datetime) -> Iterator[JudgedScore]:
    for score in scores_since(api, names=names, since=since, until=until, source="API"):
        metadata = score.metadata if isinstance(score.metadata, dict) else {}
        version = metadata.get("rubric_version")
        rubric = rubrics.get(format_rubric_key(score.name, version)) if isinstance(version, int) else None
        trace_id = trace_id_of(score)
        if rubric is None or trace_id is None or score.id != score_id_for(trace_id, rubric.name, rubric.version):
            continue  # not ours, or a version this process does not load
        points = points_of(rubric, score.value)
        if points is not None:
            yield JudgedScore(trace_id, rubric, scale_value(rubric, score.value), points, score.comment, metadata)


def in_calibration(trace_id: str, rubric: Rubric, rate_override: float | None) -> bool:
    share = rubric.review.calibration_share if rubric.review else 0.0
    rate = rubric.sampling_rate if rate_override is None else rate_override
    return share > 0 and sample_point(trace_id) < share * rate


def at_boundary(score: JudgedScore) -> bool:
    spec = score.rubric.review
    if spec is None or not spec.boundary:
        return False
    return any(abs(score.points - p) < 1e-9
               for p in (points_of(score.rubric, v) for v in spec.boundary) if p is not None)


def review_reasons(score: JudgedScore, rate_override: float | None) -> list[str]:
    reasons = []
    if in_calibration(score.trace_id, score.rubric, rate_override):
        reasons.append("calibration")
    if at_boundary(score):
        reasons.append("boundary")
    return reasons


def below_threshold(score: JudgedScore) -> bool:
    """A failure for the rubric's dataset: scored below ``review.dataset.below``."""
    spec = score.rubric.review.dataset if score.rubric.review else None
    if spec is None or spec.below is None:
        return False
    limit = points_of(score.rubric, spec.below)
    return limit is not None and score.points < limit - 1e-9


def scan_window(client: redis.Redis, what: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    raw = client.get(SCAN + what)
    reached = dt.datetime.fromisoformat(as_text(raw)) if raw else now - FIRST_LOOKBACK
    return reached - OVERLAP, now


def finish_scan(client: redis.Redis, what: str, until: dt.datetime) -> None:
    """Only after the whole window was handled: a failed tick scans it again."""
    client.set(SCAN + what, until.isoformat())


def _week_days(monday: dt.date, today: dt.date) -> list[str]:
    return [(monday + dt.timedelta(days=i)).isoformat() for i in range(7) if monday + dt.timedelta(days=i) <= today]


def bottom_candidates(client: redis.Redis, rubric: Rubric, today: dt.date) -> Iterator[tuple[str, str, str]]:
    """(trace id, cell, week) of the N lowest traces per cell in this ISO week and the last."""
    n = rubric.review.bottom_per_week if rubric.review else 0
    if n <= 0:
        return
    prefix = agg.cell_key(rubric, "")
    cells = sorted(c for c in (as_text(m) for m in client.smembers(agg.CELLS)) if c.startswith(prefix))
    this_monday = today - dt.timedelta(days=today.weekday())
    for monday in (this_monday - dt.timedelta(days=7), this_monday):
        days = _week_days(monday, today)
        for cell in cells:
            for trace_id, _ in agg.bottom(client, cell, days, n):
                yield trace_id, cell, monday.isoformat()


def claim_bottom(client: redis.Redis, rubric: Rubric, cell: str, week: str, trace_id: str) -> bool:
    """True when the trace is one of the (at most N) routed for this cell and week."""
    n = rubric.review.bottom_per_week if rubric.review else 0
    return bool(client.eval(_CLAIM_BOTTOM, 1, f"{BOTTOM_ROUTED}{cell}:{week}", trace_id, n, BOTTOM_TTL_S))
