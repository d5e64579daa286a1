"""The Langfuse reads the review loop makes, through the langfuse SDK: score lists
(``GET /api/public/v3/scores``, cursor-paged, 100 a page) and scores by id."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import TypeAlias

from langfuse.api import GetScoresV3Response, LangfuseAPI, ScoreSubjectV3_Observation, ScoreSubjectV3_Trace, ScoreV3

from worker.langfuse_io.client import NO_SDK_RETRIES
from worker.retrying import call_with_retries

PAGE_LIMIT = 100  # the endpoint's maximum
FIELDS = "details,subject,annotation"
# (The SDK's LangfuseAPI.scores property has no return annotation, so its replies are annotated
# here with the type its client method declares.)
# A score's value as the v3 list returns it: a number (NUMERIC), a bool (BOOLEAN) or a label.
ScoreValue: TypeAlias = float | bool | str


def scores_since(api: LangfuseAPI, *, names: Iterable[str], since: dt.datetime, until: dt.datetime | None = None,
                 source: str | None = None) -> Iterator[ScoreV3]:
    """Every score named one of ``names`` (of ``source``, when given) with a timestamp in
    [since, until), newest first, page after page to the end."""
    joined = ",".join(sorted(set(names)))
    if not joined:
        return
    cursor: str | None = None
    while True:
        page: GetScoresV3Response = call_with_retries(lambda: api.scores.get_many(
            limit=PAGE_LIMIT, cursor=cursor, fields=FIELDS, name=joined, source=source, from_timestamp=since,
            to_timestamp=until, request_options=NO_SDK_RETRIES))
        yield from page.data
        cursor = page.meta.cursor
        if not cursor or not page.data:
            return


def scores_by_id(api: LangfuseAPI, ids: Iterable[str]) -> dict[str, ScoreV3]:
    """The scores Langfuse has among ``ids`` (a missing id is simply absent), 100 a request."""
    wanted = sorted(set(ids))
    found: dict[str, ScoreV3] = {}
    for start in range(0, len(wanted), PAGE_LIMIT):
        chunk = ",".join(wanted[start:start + PAGE_LIMIT])
        page: GetScoresV3Response = call_with_retries(lambda: api.scores.get_many(
            limit=PAGE_LIMIT, id=chunk, fields=FIELDS, request_options=NO_SDK_RETRIES))
        found.update({score.id: score for score in page.data})
    return found


def trace_id_of(score: ScoreV3) -> str | None:
    """The trace a score is about (an observation's score counts for its trace)."""
    subject = score.subject
    if isinstance(subject, ScoreSubjectV3_Trace):
        return subject.id
    if isinstance(subject, ScoreSubjectV3_Observation):
        return subject.trace_id
    return None  # a session's or an experiment's score, or one without its subject
