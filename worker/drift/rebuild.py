"""Rebuild the drift aggregates from our scores in Langfuse, after a Redis loss.

Reads ``GET /api/public/v3/scores`` (through the langfuse SDK's client) page by page to the
end and re-adds every score of ours to the per-day aggregates exactly as the live path did:
the same contribution (``DriftContribution.of_score``, worker/drift/contribution.py), bucketed
by the trace's timestamp from the score's metadata, applied through the same exactly-once
marker per score id (``OutcomeLog``). So a rebuild after live scoring, a second rebuild, or a
rerun after a failed one adds nothing twice.

The markers live 90 days; a rebuild reaching further back could count a score whose marker
expired while its aggregate survived, so ``since`` is bounded by that.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Callable
from decimal import Decimal

from langfuse.api import (GetScoresV3Response, LangfuseAPI, ScoreSubjectV3, ScoreSubjectV3_Observation,
                          ScoreSubjectV3_Trace, ScoreV3)
from langfuse.api.core.api_error import ApiError

from worker.accounting.outcomes import DONE_TTL_SECONDS, OutcomeLog
from worker.drift.contribution import DriftContribution
from worker.drift.weighting import Weighting
from worker.errors import TraceJudgeError, TransientError
from worker.json_types import JSONDict
from worker.jobs import format_rubric_key
from worker.langfuse_io.client import NO_SDK_RETRIES
from worker.langfuse_io.scores import score_id_for
from worker.retrying import call_with_retries
from worker.rubrics.rubric import Rubric

PAGE_LIMIT = 100  # the endpoint's maximum
# A day short of the markers' lifetime, so a marker written at the edge is still there.
MAX_LOOKBACK = dt.timedelta(seconds=DONE_TTL_SECONDS) - dt.timedelta(days=1)
ENDPOINT = "GET /api/public/v3/scores"


class RebuildError(TraceJudgeError):
    """The rebuild stopped; what it added so far stays (a rerun skips it)."""


@dataclasses.dataclass
class RebuildResult:
    read: int = 0
    added: int = 0
    already_counted: int = 0
    skipped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)  # reason -> n
    oldest: dt.datetime | None = None  # the oldest score timestamp seen so far (pages come newest first)


def default_since(now: dt.datetime | None = None) -> dt.datetime:
    return (now or dt.datetime.now(dt.timezone.utc)) - MAX_LOOKBACK


def check_since(since: dt.datetime, now: dt.datetime | None = None) -> dt.datetime:
    since = since if since.tzinfo else since.replace(tzinfo=dt.timezone.utc)
    if since < default_since(now):
        raise RebuildError(f"--since {since.isoformat()} is older than {MAX_LOOKBACK.days} days: the exactly-once "
                           f"markers last {DONE_TTL_SECONDS // 86400} days, so older scores could be counted twice")
    return since


def rebuild(api: LangfuseAPI, outcomes: OutcomeLog, rubrics: dict[str, Rubric], since: dt.datetime,
            on_page: Callable[[RebuildResult], None] | None = None) -> RebuildResult:
    """Re-add our scores written since ``since`` (the score's timestamp); ``on_page`` is called
    after every page with the running totals (the CLI's progress bar)."""
    result = RebuildResult()
    names = ",".join(sorted({r.name for r in rubrics.values()}))
    if not names:
        return result
    cursor = None
    while True:
        page = _page(api, names, since, cursor, result)
        for score in page.data:
            result.read += 1
            result.oldest = score.timestamp if result.oldest is None else min(result.oldest, score.timestamp)
            contribution = _contribution_for(score, rubrics)
            if isinstance(contribution, str):
                result.skipped[contribution] += 1
            elif outcomes.restored(score.id, contribution):
                result.added += 1
            else:
                result.already_counted += 1
        if on_page:
            on_page(result)
        cursor = page.meta.cursor
        if not cursor or not page.data:
            return result


def _page(api: LangfuseAPI, names: str, since: dt.datetime, cursor: str | None,
          so_far: RebuildResult) -> GetScoresV3Response:
    try:
        # The SDK leaves its ``scores`` property unannotated: the page is typed here.
        page: GetScoresV3Response = call_with_retries(lambda: api.scores.get_many(
            limit=PAGE_LIMIT, cursor=cursor, fields="details,subject", name=names, source="API",
            from_timestamp=since, request_options=NO_SDK_RETRIES))
        return page
    except TransientError as exc:
        raise RebuildError(f"rebuild stopped: {exc} on {ENDPOINT} after retries; {so_far.added} score(s) added so "
                           f"far stay added, run it again to finish") from None
    except ApiError as exc:
        if exc.status_code in (401, 403):
            raise RebuildError(f"Langfuse refused {ENDPOINT} (HTTP {exc.status_code}): check LANGFUSE_PUBLIC_KEY "
                               f"and LANGFUSE_SECRET_KEY") from None
        raise RebuildError(f"Langfuse answered HTTP {exc.status_code} on {ENDPOINT}: {_message(exc.body)}") from None


def _message(body: object) -> str:
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])[:200]
    return str(body)[:200]


def _contribution_for(score: ScoreV3, rubrics: dict[str, Rubric]) -> DriftContribution | str:
    """The live path's drift contribution of ``score``, or why it is skipped."""
    metadata: JSONDict = score.metadata if isinstance(score.metadata, dict) else {}
    version, sha = metadata.get("rubric_version"), metadata.get("rubric_sha256")
    if not isinstance(version, int) or isinstance(version, bool) or not isinstance(sha, str):
        return "no rubric_version/rubric_sha256 in metadata"
    rubric = rubrics.get(format_rubric_key(score.name, version))
    if rubric is None:
        return "rubric version not loaded"
    trace_id = _trace_id(score.subject)
    if trace_id is None:
        return "not a trace score"
    # Our ids are deterministic: anything else named like a rubric was written by someone else.
    if score.id != score_id_for(trace_id, rubric.name, rubric.version):
        return "not written by tracejudge (id)"
    value: float | str = score.value
    if isinstance(score.value, bool):
        value = 1 if score.value else 0  # what the live path wrote for a boolean verdict
    try:
        return DriftContribution.of_score(
            rubric, trace_id, metadata, _trace_time(metadata, score.timestamp), value, _cost_microusd(metadata),
            rubric.segment_key if metadata.get("sampled_by_quota") else None,
            Weighting.from_metadata(metadata) if rubric.power is not None else None)
    except (KeyError, ValueError, TypeError):
        return "value not on the rubric's scale"


def _trace_id(subject: ScoreSubjectV3 | None) -> str | None:
    if isinstance(subject, ScoreSubjectV3_Trace):
        return subject.id
    if isinstance(subject, ScoreSubjectV3_Observation):
        return subject.trace_id
    return None


def _trace_time(metadata: JSONDict, scored_at: dt.datetime) -> dt.datetime:
    """The trace's own timestamp (so the score lands in the trace's week, as live); a score
    without it was bucketed on its scoring day live, which is the score's own timestamp."""
    raw = metadata.get("trace_timestamp")
    if isinstance(raw, str):
        try:
            parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
        except ValueError:
            pass
    return scored_at


def _cost_microusd(metadata: JSONDict) -> int:
    cost = metadata.get("judge_cost_usd")
    if not isinstance(cost, (int, float)) or isinstance(cost, bool):
        return 0
    return int(Decimal(str(cost)) * 1_000_000)
