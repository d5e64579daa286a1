"""Session rubrics: a session is judged once it has been idle, and again when it resumes.

Langfuse does not know when a session has concluded, so tracejudge decides by idleness:

1. ``seen`` (from every sampler pass over root observations): a trace of a session that a
   session rubric applies to, and whose **session id** the contract's hash selects, marks the
   session *pending* with its newest activity (a sorted set per rubric version).
2. ``SessionScanner.tick`` (from ``Sampler.tick``): each pending session whose newest activity
   is ``session.idle_minutes`` old is read (its traces' outline, no I/O) and, when its newest
   trace really is that old, enqueued as ``judge_trace(@session:[id, n], key)``
   (worker/jobs.py); a session still active is put back with its true newest activity. Never
   before it is idle.
3. A trace that arrives after the verdict (newer than what was judged) marks the session pending
   again; once idle it is judged again, judgement n + 1, under the same score id (an upsert, with
   ``turns_judged`` in the metadata). At most ``session.max_judgements`` (default 3: the first
   verdict and two re-judges) per session and rubric version; later resumes are counted, not judged.

The outlines are read for many sessions at once: one v2 listing of root observations per
``OUTLINE_CHUNK`` due sessions (the JSON ``filter`` ``sessionId any of [...]``, paged by cursor),
not one ``?sessionId=`` request each (606 of those in one run against the real server, ~350 ms
apiece). A session due for several session rubrics is read once per tick.

State per (rubric version, session) lives ``STATE_TTL`` (45 days, the sampler's dedup horizon).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterable
from typing import Protocol, TypedDict

import dramatiq
import redis
from langfuse.api.core.api_error import ApiError

from samplers.dedup import EnqueueOnce
from samplers.hashing import is_sampled
from samplers.selection import applies
from samplers.source import TraceRef
from worker.accounting.outcomes import STATS
from worker.jobs import Subject, judge_message
from worker.json_types import JSONDict
from worker.langfuse_io.observations import any_of, is_not_found, walk_v2_plain
from worker.langfuse_io.subjects import TURN_OUTLINE, session_outline
from worker.langfuse_io.ordering import start_key
from worker.langfuse_io.traces import TraceReader, observation_dict
from worker.redis_client import as_text
from worker.rubrics.rubric import Rubric
from worker.rubrics.targets import SessionSpec

log = logging.getLogger("tracejudge.sessions")
PENDING = "tracejudge:sessions:pending:"  # + rubric key: zset session id -> newest activity (epoch s)
STATE = "tracejudge:sessions:state:"  # + rubric key + ":" + session id: {judgements, judged_until, turns}
STATE_TTL = 45 * 24 * 3600
MAX_PER_TICK = 500  # idle sessions read per rubric version and tick; the rest wait for the next
OUTLINE_CHUNK = 50  # session ids per outline listing (the JSON filter travels in the query string)
OUTLINE_CHUNK_CHARS = 4000  # ... and at most this much filter JSON, whatever the ids' lengths
OUTLINE_PAGE = 1000  # v2's largest page


@dataclasses.dataclass
class SessionTickReport:
    checked: int = 0
    still_active: int = 0
    enqueued: int = 0
    rejudges: int = 0
    capped: int = 0  # resumed past max_judgements: not judged again


class SessionState(TypedDict):
    """A session's verdicts for one rubric version (the Redis record at ``STATE``)."""

    judgements: int  # verdicts so far: 1 after the first
    judged_until: float  # the newest activity the last verdict covered (epoch s)
    turns: int  # the session's traces when it was last judged


def session_rubrics(rubrics: Iterable[Rubric]) -> list[Rubric]:
    return [r for r in rubrics if r.target == "session"]


def _spec(rubric: Rubric) -> SessionSpec:
    """A session rubric's ``session`` settings (rubric.py gives every session rubric one)."""
    if rubric.session is None:
        raise ValueError(f"{rubric.key} judges {rubric.target}s, not sessions")
    return rubric.session


def _state_key(rubric: Rubric, session_id: str) -> str:
    return f"{STATE}{rubric.key}:{session_id}"


def read_state(client: redis.Redis, rubric: Rubric, session_id: str) -> SessionState | None:
    raw = client.get(_state_key(rubric, session_id))
    if not raw:
        return None
    state: SessionState = json.loads(raw)  # written by SessionScanner._check
    return state


def seen(client: redis.Redis, rubrics: list[Rubric], ref: TraceRef, rate_override: float | None) -> int:
    """Mark ``ref``'s session pending for every session rubric that applies and samples it;
    returns how many rubric versions it was marked for."""
    session_id = ref.session_id
    if not session_id or ref.timestamp is None:
        return 0
    marked = 0
    for rubric in rubrics:
        rate = rubric.sampling_rate if rate_override is None else rate_override
        if not applies(rubric, ref) or not is_sampled(session_id, rate):
            continue
        state = read_state(client, rubric, session_id)
        if state is not None and ref.timestamp.timestamp() <= state["judged_until"]:
            continue  # a trace the verdict already covered (an overlapping re-scan)
        client.zadd(PENDING + rubric.key, {session_id: ref.timestamp.timestamp()}, gt=True)
        marked += 1
    return marked


def _activity(turn: JSONDict) -> float:
    stamp = turn.get("endTime") or turn.get("startTime")
    return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


class SessionScanner:
    """The idle scan (step 2 above), one per sampler; ``tick`` is what the scheduler runs."""

    def __init__(self, client: redis.Redis, rubrics: list[Rubric], reader: TraceReader, broker: dramatiq.Broker):
        self.client, self.rubrics, self.reader, self.broker = client, session_rubrics(rubrics), reader, broker
        self.once = EnqueueOnce(client)

    def tick(self, now: dt.datetime | None = None) -> SessionTickReport:
        now = now or dt.datetime.now(dt.timezone.utc)
        report = SessionTickReport()
        read: dict[str, list[JSONDict]] = {}  # session id -> outline: read once per tick, for every rubric
        for rubric in self.rubrics:
            idle = _spec(rubric).idle_minutes * 60
            members = self.client.zrangebyscore(PENDING + rubric.key, "-inf", now.timestamp() - idle,
                                                start=0, num=MAX_PER_TICK)
            due = [as_text(m) for m in members if isinstance(m, (bytes, str))]  # members only: no scores asked
            for chunk in _chunks(due):
                unread = [s for s in chunk if s not in read]
                if unread:
                    read.update(session_outlines(self.reader, unread))
                for session_id in chunk:
                    self._check(rubric, session_id, read[session_id], now, idle, report)
        return report

    def _check(self, rubric: Rubric, session_id: str, outline: list[JSONDict], now: dt.datetime, idle: float,
               report: SessionTickReport) -> None:
        report.checked += 1
        pending = PENDING + rubric.key
        if not outline:
            self.client.zrem(pending, session_id)
            return
        newest = max(_activity(t) for t in outline)
        if now.timestamp() - newest < idle:  # a turn the sampler has not listed yet: still active
            self.client.zadd(pending, {session_id: newest}, gt=True)
            report.still_active += 1
            return
        state = read_state(self.client, rubric, session_id)
        judged_until, judgements = (state["judged_until"], state["judgements"]) if state else (0, 0)
        if newest <= judged_until:
            self.client.zrem(pending, session_id)  # nothing new since the verdict
            return
        judgement = judgements + 1
        if judgement > _spec(rubric).max_judgements:
            self.client.zrem(pending, session_id)
            report.capped += 1
            log.info("session resumed past its re-judge bound; not judged again",
                     extra={"rubric": rubric.key, "session_id": session_id, "judgements": judgements})
            return
        subject = Subject.session(session_id, judgement)
        if self.once.claim(rubric.key, subject):
            try:
                self.broker.enqueue(judge_message(subject, rubric.key))
            except Exception:
                self.once.release(rubric.key, subject)
                raise
            self.once.confirm(rubric.key, subject)
            report.enqueued += 1
            report.rejudges += judgement > 1
            pipe = self.client.pipeline(transaction=False)
            pipe.hincrby(STATS, "enqueued", 1)
            pipe.hincrby(STATS, "sessions_enqueued", 1)
            if judgement > 1:
                pipe.hincrby(STATS, "sessions_rejudged", 1)
            pipe.execute()
        judged: SessionState = {"judgements": judgement, "judged_until": newest, "turns": len(outline)}
        self.client.set(_state_key(rubric, session_id), json.dumps(judged), ex=STATE_TTL)
        if (self.client.zscore(pending, session_id) or 0) <= newest:
            self.client.zrem(pending, session_id)


def _chunks(ids: list[str]) -> list[list[str]]:
    """``ids`` in listing-sized chunks: at most ``OUTLINE_CHUNK`` ids and ``OUTLINE_CHUNK_CHARS``
    of filter JSON each (a very long id travels alone)."""
    chunks: list[list[str]] = []
    size = OUTLINE_CHUNK_CHARS
    for session_id in ids:
        cost = len(json.dumps(session_id)) + 2
        if not chunks or len(chunks[-1]) >= OUTLINE_CHUNK or size + cost > OUTLINE_CHUNK_CHARS:
            chunks.append([])
            size = 0
        chunks[-1].append(session_id)
        size += cost
    return chunks


def session_outlines(reader: TraceReader, session_ids: list[str]) -> dict[str, list[JSONDict]]:
    """Each session's traces (root observations, no I/O), oldest first, for every id of
    ``session_ids`` (an empty list: none listed): one v2 listing with the JSON filter
    ``sessionId any of``, paged by cursor. A row of another session says the server ignored the
    filter (it would page through every session of the project): these sessions are then read
    one by one, with the ``sessionId`` parameter, as before."""
    out: dict[str, list[JSONDict]] = {s: [] for s in session_ids}
    condition = [any_of("sessionId", session_ids)]
    try:
        for raw in walk_v2_plain(reader.api, {"isRootObservation": "true", "filter": json.dumps(condition)},
                                 fields=TURN_OUTLINE, limit=OUTLINE_PAGE):
            session_id = raw.get("sessionId")
            turns = out.get(session_id) if isinstance(session_id, str) else None
            if turns is None:
                log.warning("the server ignored the sessionId filter; reading these sessions one by one",
                            extra={"sessions": len(session_ids)})
                return {s: session_outline(reader, s) for s in session_ids}
            turns.append(observation_dict(raw))
    except ApiError as exc:
        if is_not_found(exc):  # as the one-session read did: no v2 listing, nothing to check
            return {s: [] for s in session_ids}
        raise
    for turns in out.values():
        turns.sort(key=start_key)
    return out


class _WithSessions(Protocol):  # a Sampler (samplers/sampler.py imports this module)
    @property
    def sessions(self) -> SessionScanner | None: ...


def session_tick(sampler: _WithSessions, now: dt.datetime | None = None) -> SessionTickReport:
    """The idle scan of ``sampler``'s session rubrics (``Sampler.tick`` runs it after its passes);
    nothing checked when it has none."""
    if sampler.sessions is None:
        return SessionTickReport()
    return sampler.sessions.tick(now)
