"""Reading what an observation or session rubric judges, as a ``Trace`` view with its context.

- ``read_observation``: the judged observation (all its fields), its parent and its trace's
  root (the trace's input, output, metadata: the segment), through v2 observations. A small
  trace (at most ``SMALL_TRACE`` observations) is one request; a larger one costs its root, its
  outline (no I/O) and one read each for the observation and its parent, never the whole
  trace's I/O (API-NOTES section 11). The legacy trace read is the fallback on a v3 server.
- ``read_session``: the session's traces in time order (its root observations, v2's
  ``sessionId`` filter: the replacement Langfuse documents for its deprecated sessions
  endpoints). The outline of every turn is read without I/O; the I/O only of the turns the
  rubric's turn budget keeps (the first and the last), so a session of thousands of turns
  costs its outline and ``max_turns`` small reads.
"""
from __future__ import annotations

from collections.abc import Callable

from langfuse.api.core.api_error import ApiError

from worker.errors import Unscored
from worker.json_types import JSONDict
from worker.langfuse_io.client import get_object
from worker.langfuse_io.observations import is_not_found, walk_v2_plain
from worker.langfuse_io.ordering import as_datetime, root_of, start_key
from worker.langfuse_io.traces import (
    LEAN_FIELDS,
    SMALL_TRACE,
    TRACE_FIELDS,
    SessionTurn,
    Trace,
    TraceReader,
    bounded,
    observation_dict,
    trace_of,
)
from worker.retrying import call_with_retries

TURN_FIELDS = "core,basic,io,metadata,trace_context"
TURN_OUTLINE = "core,basic,metadata,trace_context"


def read_observation(reader: TraceReader, trace_id: str, observation_id: str) -> Trace:
    """The trace's view for judging one of its observations: ``subject``, ``parent``, the root."""
    return reader.generation.call(lambda: _observation_v2(reader, trace_id, observation_id),
                                  lambda: _observation_legacy(reader, trace_id, observation_id))


def _walk(reader: TraceReader, fields: str, limit: int, **params: str) -> list[JSONDict]:
    return [observation_dict(o) for o in walk_v2_plain(reader.api, params, fields=fields, limit=limit)]


def _observation_v2(reader: TraceReader, trace_id: str, observation_id: str) -> Trace:
    page = call_with_retries(lambda: get_object(reader.api, "api/public/v2/observations", params={
        "fields": TRACE_FIELDS, "limit": SMALL_TRACE, "traceId": trace_id}))
    steps = {o["id"]: o for o in map(observation_dict, page.get("data") or []) if o.get("id")}
    if not (page.get("meta") or {}).get("cursor"):  # the whole trace is on this page
        return _view(trace_id, observation_id, list(steps.values()), read=lambda obs: obs)
    roots = _walk(reader, TRACE_FIELDS, 10, traceId=trace_id, isRootObservation="true")
    outline = _walk(reader, LEAN_FIELDS, 1000, traceId=trace_id)
    known = {o["id"]: o for o in roots}
    return _view(trace_id, observation_id, [*roots, *(o for o in outline if o.get("id") not in known)],
                 read=lambda lean: known.get(lean["id"]) or steps.get(lean["id"]) or reader.read_one(trace_id, lean))


def _observation_legacy(reader: TraceReader, trace_id: str, observation_id: str) -> Trace:
    body = call_with_retries(lambda: get_object(reader.api, f"api/public/traces/{trace_id}"))
    observations = [observation_dict(o) for o in body.get("observations") or []]
    return _view(trace_id, observation_id, observations, read=lambda obs: obs)


def _view(trace_id: str, observation_id: str, observations: list[JSONDict], *,
          read: Callable[[JSONDict], JSONDict]) -> Trace:
    by_id = {o.get("id"): o for o in observations}
    lean = by_id.get(observation_id)
    if lean is None:
        raise Unscored("trace_not_found", f"observation {observation_id} is not in trace {trace_id}")
    subject = bounded(read(lean))
    root = bounded(read(root_of(sorted(observations, key=start_key))))
    parent_lean = by_id.get(subject.get("parentObservationId"))
    parent = None
    if parent_lean is not None:
        parent = root if parent_lean.get("id") == root.get("id") else bounded(read(parent_lean))
    models = tuple(o["model"] for o in observations if o.get("model"))
    trace = trace_of(trace_id, root, [root], models=models, outline=[subject])
    trace.subject, trace.parent = subject, parent
    return trace


def read_session(reader: TraceReader, session_id: str, max_turns: int) -> Trace:
    """The session's view: its turns in time order (the kept ones with their I/O), its segment
    (the traces' metadata, later turns winning) and its first turn's time (the drift week)."""
    outline = sorted(_walk(reader, TURN_OUTLINE, 1000, sessionId=session_id, isRootObservation="true"),
                     key=start_key)
    if not outline:
        raise Unscored("trace_not_found", f"no traces in session {session_id}")
    kept = kept_turns(len(outline), max_turns)
    full: dict[str, JSONDict]
    if len(outline) <= max_turns:
        full = {o["traceId"]: o for o in _walk(reader, TURN_FIELDS, 100, sessionId=session_id,
                                               isRootObservation="true")}
    else:
        full = {}
        for i in kept:
            full.update({o["traceId"]: o for o in _walk(reader, TURN_FIELDS, 10, traceId=outline[i]["traceId"],
                                                         isRootObservation="true")})
    first, last = outline[0], outline[-1]
    turns: list[SessionTurn] = []
    for i, lean in enumerate(outline):
        if i not in kept:
            continue
        obs = bounded(full.get(lean["traceId"], lean))
        turns.append({"turn": i + 1, "trace_id": lean["traceId"], "start": lean.get("startTime"),
                      "input": obs.get("input"), "output": obs.get("output"), "total": len(outline),
                      "last_start": last.get("startTime")})
    metadata: JSONDict = {}
    for lean in outline:
        metadata.update(lean.get("metadata") or {})
    return Trace(id=session_id, name=first.get("traceName") or first.get("name"),
                 environment=first.get("environment"), timestamp=as_datetime(first.get("startTime")),
                 input=turns[0]["input"], output=turns[-1]["output"], metadata=metadata,
                 tags=sorted({t for o in outline for t in o.get("tags") or []}), observations=[],
                 models=(), session_id=session_id, turns=turns)


def session_outline(reader: TraceReader, session_id: str) -> list[JSONDict]:
    """The session's traces (root observations, no I/O), oldest first: what the idle check reads."""
    try:
        return sorted(_walk(reader, TURN_OUTLINE, 1000, sessionId=session_id, isRootObservation="true"),
                      key=start_key)
    except ApiError as exc:
        if is_not_found(exc):
            return []
        raise


def kept_turns(total: int, max_turns: int) -> list[int]:
    """The turn budget: every turn when they fit, else the first ``max_turns // 2`` and the last
    ones (indices, in order); the judge sees a marker where turns were left out."""
    if total <= max_turns:
        return list(range(total))
    head = max_turns // 2
    return list(range(head)) + list(range(total - (max_turns - head), total))
