"""A rubric's Langfuse annotation queue, created once, and each trace put on it exactly once.

Langfuse makes a queue name unique per project (a second create answers 400 "A queue with this
name already exists.", a concurrent one 409 "Please retry") but puts the same trace on a queue as
often as it is posted, so "once" is ours to keep, in Redis:

    tracejudge:review:queue:<queue name>          the queue's id (found by name after a Redis loss)
    tracejudge:review:queued:<rubric>:<trace id>  "pending <unix time>" while one process posts it,
                                                  then "done <item id>" (kept MARKER_TTL_S)
    tracejudge:review:synced:<queue id>           the queue's items were read into the markers

A claim is taken before the POST and turned into "done" after it. A process that dies between
the two leaves a stale pending claim; whoever finds one older than CLAIM_S looks the trace up
in the queue's items before posting, so even a crash mid-post adds no second item.

A Redis without the markers (new, or flushed) reads the queue's items once before its first post
(``tracejudge:review:synced:<queue id>``) and marks the traces on it as done, so a re-scan of the
past week after a Redis loss adds no second item.

A lost answer (the server stored the item, then the reply was a 500 or never came) is the same
uncertainty inside one call: every retry of the POST first looks the trace up among the queue's
items (listed newest first, so a lost item is on the first page) and posts only when it is
absent. Creating the queue likewise: a retry answered "already exists" finds the queue by name.
"""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import redis
from langfuse.api import (AnnotationQueue, AnnotationQueueItem, LangfuseAPI, PaginatedAnnotationQueueItems,
                          PaginatedAnnotationQueues)
from langfuse.api.core.api_error import ApiError

from worker.errors import ConfigError
from worker.langfuse_io.client import NO_SDK_RETRIES
from worker.redis_client import as_text
from worker.retrying import call_once, call_with_retries
from worker.rubrics.rubric import Rubric

QUEUE_ID = "tracejudge:review:queue:"
QUEUED = "tracejudge:review:queued:"
SYNCED = "tracejudge:review:synced:"  # + queue id: its items were read into the markers once
STATS = "tracejudge:review:stats"
MARKER_TTL_S = 120 * 86400  # longer than any window a trace is routed from (the drift aggregates' 120 days)
CLAIM_S = 600
_PAGE = 100
# A retry looks for its lost item among the items created since its first POST, less this margin
# for the server's clock (the list is newest first, so it stops there instead of paging to the end).
LOOK_BACK = dt.timedelta(hours=24)
EXISTS = "already exists"  # the real server's 400 for a second queue of that name
# How a listing page is fetched: call_with_retries, or call_once inside a retried attempt. (The
# SDK's LangfuseAPI.annotation_queues property has no return annotation, so the type checker sees
# its replies as Any: each is annotated here with the type the SDK's client method declares.)
PageCall = Callable[[Callable[[], PaginatedAnnotationQueueItems]], PaginatedAnnotationQueueItems]


def queue_name(rubric: Rubric) -> str:
    return (rubric.review.queue if rubric.review and rubric.review.queue else None) or f"tracejudge-{rubric.name}"


def _find(api: LangfuseAPI, name: str) -> str | None:
    page = 1
    while True:
        result: PaginatedAnnotationQueues = call_with_retries(lambda: api.annotation_queues.list_queues(
            page=page, limit=_PAGE, request_options=NO_SDK_RETRIES))
        for queue in result.data:
            if queue.name == name:
                return queue.id
        if page >= (result.meta.total_pages or 0):
            return None
        page += 1


def ensure_queue(api: LangfuseAPI, client: redis.Redis, rubric: Rubric, config_ids: list[str]) -> str:
    """The queue's id: remembered, else found by name, else created with the rubric's score
    configs (so reviewers score on the rubric's own scale). A create refused because the name
    exists (our own lost answer, or another process a moment ago) means: find it."""
    name = queue_name(rubric)
    known = client.get(QUEUE_ID + name)
    if known:
        return as_text(known)
    queue_id = _find(api, name)
    if queue_id is None:
        def create() -> str | None:
            try:
                queue: AnnotationQueue = api.annotation_queues.create_queue(
                    name=name, score_config_ids=config_ids, request_options=NO_SDK_RETRIES,
                    description=f"tracejudge: traces judged by the rubric {rubric.name} for human review "
                                "(lowest scores, a calibration share, verdicts at the scale's ends)")
                return queue.id
            except ApiError as exc:
                if exc.status_code == 400 and EXISTS in str(exc.body):
                    return None  # created already: by our own POST whose answer was lost, or by another process
                if exc.status_code in (400, 405):
                    raise ConfigError(f"{rubric.key}: Langfuse refused the annotation queue {name!r} "
                                      f"(HTTP {exc.status_code}: {str(exc.body)[:200]}); on the Hobby plan a "
                                      "project has one queue: set review.queue to share it") from None
                raise  # 409 is the server's "concurrent creation, retry": retried as transient
        queue_id = call_with_retries(create) or _find(api, name)
        if queue_id is None:
            raise ConfigError(f"{rubric.key}: annotation queue {name!r} exists but cannot be listed")
    client.set(QUEUE_ID + name, queue_id)
    return queue_id


def _aware(when: dt.datetime | None) -> dt.datetime | None:
    return when.replace(tzinfo=dt.timezone.utc) if when is not None and when.tzinfo is None else when


def _queued_traces(api: LangfuseAPI, queue_id: str, *, trace_id: str | None = None,
                   since: dt.datetime | None = None, call: PageCall = call_with_retries) -> dict[str, str]:
    """The queue's items, object id -> item id, paged. With ``trace_id``: stops once it is found;
    with ``since`` too: stops after a page that ends before ``since`` while the pages come newest
    first, as the server lists them (pages in any other order are read to the end)."""
    seen: dict[str, str] = {}
    page, newest_first = 1, True
    previous: dt.datetime | None = None
    while True:
        result = call(lambda: api.annotation_queues.list_queue_items(
            queue_id, page=page, limit=_PAGE, request_options=NO_SDK_RETRIES))
        for item in result.data:
            seen.setdefault(item.object_id, item.id)
        if trace_id is not None and trace_id in seen:
            return seen
        stamps = [_aware(item.created_at) for item in result.data]
        times = [t for t in stamps if t is not None]
        if len(times) < len(stamps):
            newest_first = False
        elif times:
            newest_first = newest_first and all(a >= b for a, b in zip([previous or times[0], *times], times))
            previous = times[-1]
            if since is not None and newest_first and previous < since:
                return seen  # the rest is older than any POST of ours: the trace is not on the queue
        if page >= (result.meta.total_pages or 0) or not result.data:
            return seen
        page += 1


class QueueWriter:
    """Puts traces on one rubric's queue, each once (per process and across the fleet)."""

    def __init__(self, api: LangfuseAPI, client: redis.Redis, rubric_name: str, queue_id: str,
                 queue: str | None = None):
        self.api, self.client, self.rubric_name, self.queue_id = api, client, rubric_name, queue_id
        self.queue = queue  # its name, to forget its id if someone deletes it in the UI
        self._listed: set[str] | None = None  # the queue's items, read once when a stale claim needs it
        self._known_synced = False
        self.looks = 0  # item listings a retry made before posting again (each one GET, a page)

    def marker(self, trace_id: str) -> str:
        return f"{QUEUED}{self.rubric_name}:{trace_id}"

    def add(self, trace_id: str, now: float | None = None) -> bool:
        """True when this call put the trace on the queue; False when it was there already."""
        now = time.time() if now is None else now
        key = self.marker(trace_id)
        if self.client.set(key, f"pending {now}", nx=True, ex=MARKER_TTL_S):
            if not self._synced() and trace_id in self._sync():
                self.client.set(key, "done (found on the queue)", ex=MARKER_TTL_S)
                return False
        else:
            state = as_text(self.client.get(key) or b"")
            if not state.startswith("pending ") or now - float(state.split()[1]) < CLAIM_S:
                return False  # done, or another process is posting it right now
            if self._listed is None:
                self._listed = set(_queued_traces(self.api, self.queue_id))
            if trace_id in self._listed:
                self.client.set(key, "done (found on the queue)", ex=MARKER_TTL_S)
                return False
            self.client.set(key, f"pending {now}", ex=MARKER_TTL_S)
        try:
            item_id = call_with_retries(self._post_once(trace_id))
        except Exception as exc:
            # The item may exist even so (a lost answer on every attempt): a stale claim makes the
            # next tick look on the queue before it posts again, and this writer lists afresh.
            self.client.set(key, "pending 0", ex=MARKER_TTL_S)
            self._listed = None
            if isinstance(exc, ApiError) and exc.status_code == 404 and self.queue:
                self.client.delete(QUEUE_ID + self.queue)  # the queue was deleted: the next tick makes a new one
            raise
        self.client.set(key, f"done {item_id}", ex=MARKER_TTL_S)
        if self._listed is not None:
            self._listed.add(trace_id)
        self.client.hincrby(STATS, f"queued:{self.rubric_name}", 1)
        return True

    def _synced(self) -> bool:
        if not self._known_synced:
            self._known_synced = bool(self.client.exists(SYNCED + self.queue_id))
        return self._known_synced

    def _sync(self) -> set[str]:
        """A Redis that has never seen this queue (a new one, or flushed: the markers are gone, the
        queue's items are not): read the queue once and mark what it holds, so nothing on it is
        posted again. Returns the traces on it."""
        listed = set(_queued_traces(self.api, self.queue_id))
        pipe = self.client.pipeline(transaction=False)
        for trace_id in listed:
            pipe.set(self.marker(trace_id), "done (found on the queue)", ex=MARKER_TTL_S, nx=True)
        pipe.set(SYNCED + self.queue_id, int(time.time()), ex=MARKER_TTL_S)
        pipe.execute()
        self._known_synced, self._listed = True, listed
        return listed

    def _post_once(self, trace_id: str) -> Callable[[], str]:
        """One attempt for ``call_with_retries``: after any attempt that sent the POST and failed
        (a 500, a timeout, a dropped connection: the server may have stored the item), look the
        trace up on the queue first and post only when it is absent. The look runs without
        retries of its own: a failed look fails the attempt, and the next attempt looks again."""
        sent: list[dt.datetime] = []

        def attempt() -> str:
            if sent:
                self.looks += 1
                found = _queued_traces(self.api, self.queue_id, trace_id=trace_id,
                                       since=sent[0] - LOOK_BACK, call=call_once).get(trace_id)
                if found is not None:
                    return found  # our earlier POST was stored; its answer was lost
            if not sent:
                sent.append(dt.datetime.now(dt.timezone.utc))
            item: AnnotationQueueItem = self.api.annotation_queues.create_queue_item(
                self.queue_id, object_id=trace_id, object_type="TRACE", request_options=NO_SDK_RETRIES)
            return item.id

        return attempt
