"""A rubric's Langfuse annotation queue, created once, and each trace put on it exactly once.

Langfuse makes a queue name unique per project (a second create answers 409) but puts the same
trace on a queue as often as it is posted, so "once" is ours to keep, in Redis:

    tracejudge:review:queue:<queue name>          the queue's id (found by name after a Redis loss)
    tracejudge:review:queued:<rubric>:<trace id>  "pending <unix time>" while one process posts it,
                                                  then "done <item id>" (kept MARKER_TTL_S)

A claim is taken before the POST and turned into "done" after it. A process that dies between
the two leaves a stale pending claim; whoever finds one older than CLAIM_S looks the trace up
in the queue's items before posting, so even a crash mid-post adds no second item.
"""
from __future__ import annotations

import time

import redis
from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError

from worker.errors import ConfigError
from worker.langfuse_io.client import NO_SDK_RETRIES
from worker.retrying import call_with_retries
from worker.rubrics.rubric import Rubric

QUEUE_ID = "tracejudge:review:queue:"
QUEUED = "tracejudge:review:queued:"
STATS = "tracejudge:review:stats"
MARKER_TTL_S = 120 * 86400  # longer than any window a trace is routed from (the drift aggregates' 120 days)
CLAIM_S = 600
_PAGE = 100


def queue_name(rubric: Rubric) -> str:
    return (rubric.review.queue if rubric.review and rubric.review.queue else None) or f"tracejudge-{rubric.name}"


def _find(api: LangfuseAPI, name: str) -> str | None:
    page = 1
    while True:
        result = call_with_retries(lambda: api.annotation_queues.list_queues(
            page=page, limit=_PAGE, request_options=NO_SDK_RETRIES))
        for queue in result.data:
            if queue.name == name:
                return queue.id
        if page >= (result.meta.total_pages or 0):
            return None
        page += 1


def ensure_queue(api: LangfuseAPI, client: redis.Redis, rubric: Rubric, config_ids: list[str]) -> str:
    """The queue's id: remembered, else found by name, else created with the rubric's score
    configs (so reviewers score on the rubric's own scale)."""
    name = queue_name(rubric)
    known = client.get(QUEUE_ID + name)
    if known:
        return known.decode()
    queue_id = _find(api, name)
    if queue_id is None:
        def create():
            try:
                return api.annotation_queues.create_queue(
                    name=name, score_config_ids=config_ids, request_options=NO_SDK_RETRIES,
                    description=f"tracejudge: traces judged by the rubric {rubric.name} for human review "
                                "(lowest scores, a calibration share, verdicts at the scale's ends)").id
            except ApiError as exc:
                if exc.status_code == 409:  # another process created it a moment ago
                    return None
                if exc.status_code in (400, 405):
                    raise ConfigError(f"{rubric.key}: Langfuse refused the annotation queue {name!r} "
                                      f"(HTTP {exc.status_code}: {str(exc.body)[:200]}); on the Hobby plan a "
                                      "project has one queue: set review.queue to share it") from None
                raise
        queue_id = call_with_retries(create) or _find(api, name)
        if queue_id is None:
            raise ConfigError(f"{rubric.key}: annotation queue {name!r} exists but cannot be listed")
    client.set(QUEUE_ID + name, queue_id)
    return queue_id


def _queued_traces(api: LangfuseAPI, queue_id: str) -> set[str]:
    seen, page = set(), 1
    while True:
        result = call_with_retries(lambda: api.annotation_queues.list_queue_items(
            queue_id, page=page, limit=_PAGE, request_options=NO_SDK_RETRIES))
        seen |= {item.object_id for item in result.data}
        if page >= (result.meta.total_pages or 0):
            return seen
        page += 1


class QueueWriter:
    """Puts traces on one rubric's queue, each once (per process and across the fleet)."""

    def __init__(self, api: LangfuseAPI, client: redis.Redis, rubric_name: str, queue_id: str,
                 queue: str | None = None):
        self.api, self.client, self.rubric_name, self.queue_id = api, client, rubric_name, queue_id
        self.queue = queue  # its name, to forget its id if someone deletes it in the UI
        self._listed: set[str] | None = None  # the queue's items, read once when a stale claim needs it

    def marker(self, trace_id: str) -> str:
        return f"{QUEUED}{self.rubric_name}:{trace_id}"

    def add(self, trace_id: str, now: float | None = None) -> bool:
        """True when this call put the trace on the queue; False when it was there already."""
        now = time.time() if now is None else now
        key = self.marker(trace_id)
        if not self.client.set(key, f"pending {now}", nx=True, ex=MARKER_TTL_S):
            state = (self.client.get(key) or b"").decode()
            if not state.startswith("pending ") or now - float(state.split()[1]) < CLAIM_S:
                return False  # done, or another process is posting it right now
            if self._listed is None:
                self._listed = _queued_traces(self.api, self.queue_id)
            if trace_id in self._listed:
                self.client.set(key, "done (found on the queue)", ex=MARKER_TTL_S)
                return False
            self.client.set(key, f"pending {now}", ex=MARKER_TTL_S)
        try:
            item = call_with_retries(lambda: self.api.annotation_queues.create_queue_item(
                self.queue_id, object_id=trace_id, object_type="TRACE", request_options=NO_SDK_RETRIES))
        except ApiError as exc:
            self.client.set(key, "pending 0", ex=MARKER_TTL_S)
            if exc.status_code == 404 and self.queue:  # the queue was deleted: the next tick makes a new one
                self.client.delete(QUEUE_ID + self.queue)
            raise
        except Exception:
            # The item may exist even so (a timeout after the server wrote it): a stale claim makes
            # the next tick look on the queue before it posts again.
            self.client.set(key, "pending 0", ex=MARKER_TTL_S)
            raise
        self.client.set(key, f"done {item.id}", ex=MARKER_TTL_S)
        self.client.hincrby(STATS, f"queued:{self.rubric_name}", 1)
        return True
