"""The legacy read endpoints as the real server answers them (server-faithful generations):
GET /api/public/traces, GET /api/public/traces/{id} and the off-spec GET /api/public/scores.

- `fields` (TRACE_FIELD_GROUPS core, io, scores, observations, metrics; unknown values dropped;
  none = all). `core` is coreSelect (packages/shared/src/server/repositories/traces.ts): id,
  timestamp, name, environment, session, user, release, version, bookmarked, public, tags.
  Input, output **and metadata** come only with `io`; without it input/output are null and
  metadata is {} (traces_converters.ts, traces/[traceId].ts). Excluded lists are [], excluded
  metrics -1.
- The single-trace read lists observations latest-ingested first (ORDER BY event_ts DESC in
  getObservationsForTrace, repositories/observations.ts) and refuses a trace whose observation
  input/output/metadata add up to LANGFUSE_API_TRACE_OBSERVATIONS_SIZE_LIMIT_BYTES (80 MB by
  default) with 422 PayloadTooLargeError.
"""
from __future__ import annotations

from collections import defaultdict

from emulators.http_base import Reply
from emulators.langfuse_routes import _raw, _trace, newest_in_window, select_traces
from emulators.langfuse_store import Invalid, Store, parse_time

TRACE_FIELD_GROUPS = ("core", "io", "scores", "observations", "metrics")
TRACE_SIZE_LIMIT_BYTES = 80_000_000


def _groups(q: dict) -> set[str]:
    asked = [f.strip() for f in (q.get("fields") or "").split(",")]
    known = {f for f in asked if f in TRACE_FIELD_GROUPS}
    return (known or set(TRACE_FIELD_GROUPS)) | {"core"}


def _metrics(observations: list[dict]) -> tuple[float, float]:
    if not observations:
        return 0.0, 0.0
    start = min(o["_start"] for o in observations)
    ends = [parse_time(o["endTime"]) for o in observations if o.get("endTime")]
    latency = (max(ends) - start).total_seconds() if ends else 0.0
    cost = sum(float(o.get("totalCost") or (o.get("costDetails") or {}).get("total") or 0) for o in observations)
    return latency, cost


def _public_observation(obs: dict) -> dict:
    return {k: v for k, v in obs.items() if not k.startswith("_")}


def _shaped(trace: dict, groups: set[str], observations, scores, metrics: tuple[float, float] | None) -> dict:
    if "io" not in groups:
        trace.update(input=None, output=None, metadata={})
    trace["observations"] = observations if "observations" in groups else []
    trace["scores"] = scores if "scores" in groups else []
    latency, cost = metrics if metrics is not None and "metrics" in groups else (-1, -1)
    trace.update(latency=latency, totalCost=cost)
    return trace


def traces_list(store: Store, q: dict, query: dict) -> dict:
    chunk, _, meta = select_traces(store, q, query)
    groups = _groups(q)
    wanted = {root["traceId"] for root in chunk}
    by_trace: dict[str, list[dict]] = defaultdict(list)
    with store.lock:
        for obs in store.observations.values():
            if obs["traceId"] in wanted:
                by_trace[obs["traceId"]].append(obs)
        score_ids = defaultdict(list)
        for score in store.scores.values():
            if score.get("traceId") in wanted:
                score_ids[score["traceId"]].append(score["id"])
    data = []
    for root in chunk:
        observations = by_trace[root["traceId"]]
        data.append(_shaped(_trace(root), groups, [o["id"] for o in observations], score_ids[root["traceId"]],
                            _metrics(observations)))
    return {"data": data, "meta": meta}


def _checked_size(observations: list[dict], limit: int) -> None:
    size = 0
    for obs in observations:
        for key in ("input", "output"):
            size += len(_raw(obs.get(key)) or "")
        size += sum(len(v) for v in (obs.get("metadata") or {}).values() if isinstance(v, str))
        if size >= limit:
            raise Reply(422, {"message": f"Observations in trace are too large: {size / 1e6:.2f}MB exceeds limit "
                                         f"of {limit / 1e6:.2f}MB", "error": "PayloadTooLargeError"})


def trace_get(store: Store, trace_id: str, q: dict, *, order: str = "server",
              size_limit: int = TRACE_SIZE_LIMIT_BYTES) -> dict:
    root = store.roots_by_trace().get(trace_id)
    if root is None:
        raise Reply(404, {"message": f"Trace {trace_id} not found within authorized project",
                          "error": "LangfuseNotFoundError"})
    groups = _groups(q)
    observations = store.trace_observations(trace_id, order) if groups & {"observations", "metrics"} else []
    if "observations" in groups:  # only then does the server read their input/output
        _checked_size(observations, size_limit)
    with store.lock:
        scores = [_score_v1(s) for s in store.scores.values() if s.get("traceId") == trace_id]
    return _shaped(_trace(root), groups, [_public_observation(o) for o in observations], scores,
                   _metrics(observations))


def _score_v1(score: dict) -> dict:
    """APIScoreSchemaV1: numbers in value; labels and text in stringValue."""
    value, string_value = score["value"], None
    if score["dataType"] == "BOOLEAN":
        string_value = "True" if value == 1 else "False"
    elif isinstance(value, str):
        value, string_value = 0, value
    out = {k: score.get(k) for k in ("id", "projectId", "traceId", "observationId", "name", "source", "dataType",
                                     "comment", "metadata", "configId", "environment", "timestamp", "createdAt",
                                     "updatedAt")}
    return out | {"value": value, "stringValue": string_value, "authorUserId": None, "queueId": None}


def scores_v1(store: Store, q: dict, query: dict) -> dict:
    """GET /api/public/scores: page-based, v1 items, only scores on a trace (filterAndValidateLegacyV1GetScoreList)."""
    page, limit = int(q.get("page") or 1), int(q.get("limit") or 50)
    if page < 0 or not 1 <= limit <= 100:
        raise Invalid("page must be >= 0 and limit 1..100")
    page = max(page, 1)
    wanted_ids = {i.strip() for i in (q.get("scoreIds") or "").split(",") if i.strip()}
    environments = set(query.get("environment") or [])
    since = parse_time(q["fromTimestamp"]) if q.get("fromTimestamp") else None
    until = parse_time(q["toTimestamp"]) if q.get("toTimestamp") else None
    with store.lock:
        rows = [dict(s) for s in store.scores.values() if s.get("traceId")]
    selected = []
    for s in rows:
        if wanted_ids and s["id"] not in wanted_ids:
            continue
        if any(q.get(k) and s.get(k) != q[k] for k in ("name", "dataType", "configId", "source")):
            continue
        if environments and s["environment"] not in environments:
            continue
        selected.append(s)
    selected = newest_in_window(selected, since, until)
    chunk = selected[(page - 1) * limit: page * limit]
    return {"data": [_score_v1(s) for s in chunk],
            "meta": {"page": page, "limit": limit, "totalItems": len(selected),
                     "totalPages": (len(selected) + limit - 1) // limit}}

