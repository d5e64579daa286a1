"""The Langfuse reads the review loop makes, through the langfuse SDK: score lists
(``GET /api/public/v3/scores``, cursor-paged, 100 a page) and scores by id."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

from langfuse.api import LangfuseAPI

from worker.langfuse_io.client import NO_SDK_RETRIES
from worker.retrying import call_with_retries

PAGE_LIMIT = 100  # the endpoint's maximum
FIELDS = "details,subject,annotation"


def scores_since(api: LangfuseAPI, *, names: Iterable[str], since: dt.datetime, until: dt.datetime | None = None,
                 source: str | None = None) -> Iterator:
    """Every score named one of ``names`` (of ``source``, when given) with a timestamp in
    [since, until), newest first, page after page to the end."""
    names = ",".join(sorted(set(names)))
    if not names:
        return
    cursor = None
    while True:
        page = call_with_retries(lambda: api.scores.get_many(
            limit=PAGE_LIMIT, cursor=cursor, fields=FIELDS, name=names, source=source, from_timestamp=since,
            to_timestamp=until, request_options=NO_SDK_RETRIES))
        yield from page.data
        cursor = page.meta.cursor
        if not cursor or not page.data:
            return


def scores_by_id(api: LangfuseAPI, ids: Iterable[str]) -> dict[str, object]:
    """The scores Langfuse has among ``ids`` (a missing id is simply absent), 100 a request."""
    ids = sorted(set(ids))
    found: dict[str, object] = {}
    for start in range(0, len(ids), PAGE_LIMIT):
        chunk = ",".join(ids[start:start + PAGE_LIMIT])
        page = call_with_retries(lambda: api.scores.get_many(
            limit=PAGE_LIMIT, id=chunk, fields=FIELDS, request_options=NO_SDK_RETRIES))
        found.update({score.id: score for score in page.data})
    return found


def trace_id_of(score) -> str | None:
    """The trace a score is about (an observation's score counts for its trace)."""
    subject = getattr(score, "subject", None)
    kind = getattr(subject, "kind", None)
    if kind == "trace":
        return subject.id
    if kind == "observation":
        return getattr(subject, "trace_id", None)
    return None
