"""Write-back confirmation: a score counts as landed only once Langfuse returns it on a read.

The real server answers ``POST /api/public/scores`` with 200 as soon as the body parses and
checks the score against its config later, in its ingestion worker, dropping a failing score
without a word (an archived config, a config of another project, a changed scale). So a
written score waits in ``UNCONFIRMED`` (a sorted set by write time) with what its
confirmation must add (its ``DriftContribution``), and ``confirm_writes`` reads the waiting ones
back in pages of 100 ids (``GET /api/public/v3/scores?id=a,b,c``; v2's ``scoreIds`` on servers
older than 3.179) after a short grace:

- found: counted as confirmed and its drift contribution applied, exactly once per score id:
  the confirmation marker, the count and the contribution are one Redis transaction
  (``OutcomeLog.confirmed``); a record of the previous release (an opcode list, not a
  contribution) is read through drift/legacy_ops.py; one in a format this
  release cannot read is left for a release that can, and looked at again later;
- missing, and its config archived, gone or no longer the rubric's scale: the rubric moves to
  a fresh config and the score is written again under the same id (an upsert);
- missing with a sound config: written once more; still missing after that, it is counted
  as missing, and its rubric alerts once a day with the reason.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from typing import Any

from langfuse.api.core.api_error import ApiError

from worker.accounting.outcomes import STATS, UNCONFIRMED, UNCONFIRMED_ITEMS, OutcomeLog
from worker.alerts import outbox
from worker.alerts.kinds import ScoresMissing
from worker.drift.contribution import ContributionFormatError, DriftContribution
from worker.drift.legacy_ops import from_legacy_ops
from worker.runtime import Runtime
from worker.langfuse_io.client import NO_SDK_RETRIES, raw_request
from worker.langfuse_io.score_configs import matches
from worker.retrying import call_with_retries
from worker.rubrics.rubric import Rubric

log = logging.getLogger("tracejudge.confirm")
GRACE_SECONDS = 10.0  # the server's ingestion queue usually stores a score within seconds
RECHECK_SECONDS = 60.0  # a score not found yet is looked for again this much later
GIVE_UP_SECONDS = 15 * 60.0  # after a re-write, missing this long: counted as missing
MAX_REWRITES = 3  # new configs tried for one score before it may only wait to be counted missing
PAGE = 100  # ids per read: the v3 scores endpoint's largest page
MAX_PER_RUN = 2000
_ALERTED = "tracejudge:confirm:alerted:"  # + day:rubric key


@dataclasses.dataclass
class ConfirmSummary:
    counts: Counter[str] = dataclasses.field(default_factory=Counter)
    requests: int = 0

    def line(self) -> str:
        c = self.counts
        return (f"confirmed {c['confirmed']}, re-written {c['rewritten']}, missing {c['missing']}, "
                f"waiting {c['waiting']} in {self.requests} Langfuse requests")


def confirm_writes(rt: Runtime, now: float | None = None) -> ConfirmSummary:
    """Read back the scores written at least ``GRACE_SECONDS`` ago and settle each one."""
    now = time.time() if now is None else now
    summary = ConfirmSummary()
    due_raw: list[bytes] = rt.redis.zrangebyscore(UNCONFIRMED, "-inf", now - GRACE_SECONDS,  # type: ignore[assignment]
                                                   start=0, num=MAX_PER_RUN)
    due = [m.decode() for m in due_raw]
    problems: dict[str | None, str | None] = {}
    for start in range(0, len(due), PAGE):
        ids = due[start:start + PAGE]
        summary.requests += 1
        found = _read_back(rt, ids)
        for score_id in ids:
            raw = rt.redis.hget(UNCONFIRMED_ITEMS, score_id)
            if raw is None:  # settled by another run meanwhile
                rt.redis.zrem(UNCONFIRMED, score_id)
                continue
            item = json.loads(raw)
            if score_id in found:
                _confirmed(rt, score_id, item, now, summary)
            else:
                _missing(rt, score_id, item, now, summary, problems)
    if summary.requests:
        rt.redis.hincrby(STATS, "confirm_requests", summary.requests)
    return summary


def _confirmed(rt: Runtime, score_id: str, item: dict[str, Any], now: float, summary: ConfirmSummary) -> None:
    """Found: counted and its drift contribution applied, in one transaction, once per score id."""
    try:
        drift = pending_contribution(item)
    except ContributionFormatError as exc:  # another release's record: a process of that release settles it
        log.error("a pending score's drift contribution is in a format this release does not read; left waiting",
                  extra={"score_id": score_id, "rubric": item.get("rubric"), "detail": str(exc)[:300]})
        rt.redis.zadd(UNCONFIRMED, {score_id: now + RECHECK_SECONDS - GRACE_SECONDS})
        summary.counts["waiting"] += 1
        return
    waited_ms = max(0, int((now - item.get("written_at", now)) * 1000))
    rt.outcomes.confirmed(score_id, item["rubric"], drift, waited_ms)
    summary.counts["confirmed"] += 1


def pending_contribution(item: dict[str, Any]) -> DriftContribution | None:
    """The drift contribution a pending record carries: ``drift`` (this release's form), or
    ``ops``, the opcode list of the release before (records still pending across a rolling
    deploy). ContributionFormatError when it is neither, in a form this release reads."""
    if "drift" in item:
        return DriftContribution.from_json(item["drift"])
    return from_legacy_ops(item.get("ops"))


def _read_back(rt: Runtime, ids: list[str]) -> set[str]:
    """The ids among ``ids`` that Langfuse returns: v3 scores, or on servers before 3.179 (no v3
    scores endpoint: 404) the deprecated v2 list filtered by ``scoreIds``."""
    try:
        page = call_with_retries(lambda: rt.langfuse.scores.get_many(
            id=",".join(ids), limit=PAGE, request_options=NO_SDK_RETRIES))
        return {s.id for s in page.data}
    except ApiError as exc:
        if exc.status_code != 404:
            raise
    body = call_with_retries(lambda: raw_request(rt.langfuse, "GET", "api/public/v2/scores",
                                                 params={"scoreIds": ",".join(ids), "limit": PAGE}))
    data = body.get("data") if isinstance(body, dict) else None
    return {s["id"] for s in data or [] if isinstance(s, dict) and "id" in s}


def _missing(rt: Runtime, score_id: str, item: dict[str, Any], now: float, summary: ConfirmSummary,
             problems: dict[str | None, str | None]) -> None:
    rubric = rt.rubrics.get(item["rubric"])
    if rubric is None:  # a version this process does not load: a scheduler that does settles it
        summary.counts["waiting"] += 1
        return
    config_id = item["body"].get("configId")
    if config_id not in problems:  # one look per config and run, however many of its scores are missing
        problems[config_id] = _config_problem(rt, rubric, config_id)
    problem, rewrites, written_at = problems[config_id], item.get("rewrites", 0), item.get("written_at", now)
    if problem is not None and rewrites < MAX_REWRITES:
        rt.score_configs.forget(rubric)
        _rewrite(rt, score_id, item, now, reason=problem, config_id=rt.score_configs.config_id(rubric))
        summary.counts["rewritten"] += 1
    elif now - written_at < RECHECK_SECONDS or (rewrites and now - written_at < GIVE_UP_SECONDS):
        rt.redis.zadd(UNCONFIRMED, {score_id: now + RECHECK_SECONDS - GRACE_SECONDS})
        summary.counts["waiting"] += 1
    elif not rewrites:  # the config is sound: the write may have been lost on the way; once more
        _rewrite(rt, score_id, item, now, reason="not found on read-back", config_id=config_id)
        summary.counts["rewritten"] += 1
    else:
        reason = item.get("reason") or "not found on read-back"
        rt.outcomes.missing(score_id, rubric.key, reason)
        summary.counts["missing"] += 1
        _alert_once(rt, rubric, reason, now)


def _config_problem(rt: Runtime, rubric: Rubric, config_id: str | None) -> str | None:
    """Why the config a score named would make the server drop it, or None when it is sound."""
    if not config_id:
        return None
    try:
        config = call_with_retries(lambda: rt.langfuse.score_configs.get_by_id(
            config_id, request_options=NO_SDK_RETRIES))
    except ApiError as exc:
        if exc.status_code == 404:
            return f"score config {config_id} does not exist in this project"
        raise
    if config.is_archived:
        return f"score config {config_id} was archived"
    if not matches(config, rubric):
        return f"score config {config_id} no longer matches the rubric's scale or name"
    return None


def _rewrite(rt: Runtime, score_id: str, item: dict[str, Any], now: float, *, reason: str,
             config_id: str | None) -> None:
    """Write the score again; its record keeps whatever form it came in (``drift`` or an older
    release's ``ops``), so the release that wrote it can still settle it."""
    body = dict(item["body"])
    if config_id:
        body["configId"] = config_id
    log.warning("score missing after its write; writing it again", extra={
        "score_id": score_id, "rubric": item["rubric"], "reason": reason})
    rt.scores.write(body)
    item.update(body=body, rewrites=item.get("rewrites", 0) + 1, written_at=now, reason=reason)
    pipe = rt.redis.pipeline()
    pipe.hset(UNCONFIRMED_ITEMS, score_id, json.dumps(item, default=str))
    pipe.zadd(UNCONFIRMED, {score_id: now})
    pipe.hincrby(STATS, "rewritten", 1)
    pipe.execute()


def _alert_once(rt: Runtime, rubric: Rubric, reason: str, now: float) -> None:
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    if not rt.redis.set(f"{_ALERTED}{day}:{rubric.key}", 1, nx=True, ex=2 * 86400):
        return
    owner = rubric.owner or {}
    missing = OutcomeLog(rt.redis).stats().get(f"missing:{rubric.key}", 1)
    alert = ScoresMissing(
        id=f"missing-{rubric.key}-{day}", cell=f"missing:{rubric.key}", rubric=rubric.name,
        owner=owner.get("team", "unowned"), route=owner.get("alert_route"), version=rubric.version,
        day=day, missing=missing, reason=reason,
        title=f"{rubric.key}: {missing} score(s) written to Langfuse did not land ({reason}); "
              "they are counted as missing, not scored")
    outbox.enqueue(rt.redis, alert, rt.sinks)
    log.error("scores keep vanishing", extra={"rubric": rubric.key, "reason": reason, "missing": missing})
