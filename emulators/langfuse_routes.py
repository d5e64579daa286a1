"""Read endpoints of the Langfuse emulator: v2 observations, legacy traces, v3 scores, configs."""
from __future__ import annotations

import json
import zlib

from emulators import langfuse_release as release
from emulators.http_base import Reply
from emulators.langfuse_store import GROUPS, Invalid, Store, decode_cursor, encode_cursor, is_root, parse_time

_FILTER_COLUMNS = {"environment", "name", "traceName", "type", "level", "traceId", "tags", "metadata", "userId",
                   "sessionId", "startTime", "isRootObservation", "model"}


def _raw(value):
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _metadata(value, expand: set[str]):
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        text = item if isinstance(item, str) else None
        out[key] = text[:200] if text is not None and len(text) > 200 and key not in expand else item
    return out


def _view(obs: dict, groups: set[str], expand: set[str], real_4_16: bool = False) -> dict:
    out = {}
    for group in groups:
        for field in GROUPS[group]:
            value = obs.get(field)
            if field in ("input", "output"):
                value = release.raw_io(value) if real_4_16 else _raw(value)
            elif field == "metadata":
                value = _metadata(value, expand)
                if real_4_16:  # stored as strings, truncated, then parsed back (langfuse_release.py)
                    value = release.parse_metadata(value)
            elif field == "isRootObservation":
                value = is_root(obs)
            elif field == "tags":
                value = list(value or [])
            out[field] = value
    return out


def _matches_filter(obs: dict, cond: dict) -> bool:
    column, op, value = cond.get("column"), cond.get("operator"), cond.get("value")
    if column not in _FILTER_COLUMNS:
        raise Invalid(f"filter column {column!r} is not supported by this server")
    have = obs.get(column)
    if column == "model":  # the filter's model column is the provided model name
        have = obs.get("providedModelName")
    if column == "metadata":
        have = (obs.get("metadata") or {}).get(cond.get("key"))
    if column == "startTime":
        have, value = obs["_start"], parse_time(value)
    ops = {"=": lambda: have == value, "<>": lambda: have != value, "contains": lambda: str(value) in str(have or ""),
           "starts with": lambda: str(have or "").startswith(str(value)),
           "any of": lambda: bool(set(have or []) & set(value)) if isinstance(have, list) else have in value,
           "none of": lambda: not (set(have or []) & set(value)) if isinstance(have, list) else have not in value,
           "all of": lambda: set(value) <= set(have or []),
           ">": lambda: have > value, ">=": lambda: have >= value, "<": lambda: have < value, "<=": lambda: have <= value}
    if op not in ops:
        raise Invalid(f"filter operator {op!r} is not supported")
    return ops[op]()


def observations_v2(store: Store, q: dict, query: dict, order: str = "spec", *, real_4_16: bool = False) -> dict:
    if q.get("parseIoAsJson") == "true":
        raise Invalid("parseIoAsJson is no longer supported; input and output are returned as raw strings")
    limit = int(q.get("limit", 50))
    if not 1 <= limit <= 1000:
        raise Invalid("limit must be between 1 and 1000")
    groups = {"core"} | set((q.get("fields") or "core,basic").split(","))
    unknown = groups - set(GROUPS)
    if unknown:
        raise Invalid(f"unknown field groups {sorted(unknown)}")
    expand = set(filter(None, (q.get("expandMetadata") or "").split(",")))
    simple = {k: q[k] for k in ("name", "userId", "sessionId", "type", "traceId", "level", "parentObservationId",
                                "version") if k in q}
    environments = query.get("environment") or []
    since = parse_time(q["fromStartTime"]) if q.get("fromStartTime") else None
    until = parse_time(q["toStartTime"]) if q.get("toStartTime") else None
    conditions = json.loads(q["filter"]) if q.get("filter") else []
    with store.lock:
        rows = list(store.observations.values())
    selected = []
    for obs in rows:
        if any(str(obs.get(k) or "") != v for k, v in simple.items()):
            continue
        if "isRootObservation" in q and is_root(obs) != (q["isRootObservation"] == "true"):
            continue
        if environments and obs.get("environment") not in environments:
            continue
        if (since and obs["_start"] < since) or (until and obs["_start"] >= until):
            continue
        if not all(_matches_filter(obs, c) for c in conditions):
            continue
        selected.append(obs)
    if order == "server":
        return _server_ordered_page(selected, q, limit, groups, expand, real_4_16)
    # newest first, ties by id: a stable order, so a cursor walk sees each item once
    selected.sort(key=lambda o: (-o["_start"].timestamp(), o["id"]))
    if q.get("cursor"):
        after = decode_cursor(q["cursor"])
        key = (-after["t"], after["id"])
        selected = [o for o in selected if (-o["_start"].timestamp(), o["id"]) > key]
    page = selected[:limit]
    meta = {}
    if len(selected) > limit:
        last = page[-1]
        meta["cursor"] = encode_cursor({"t": last["_start"].timestamp(), "id": last["id"]})
    return {"data": [_view(o, groups, expand, real_4_16) for o in page], "meta": meta}


def _server_key(obs: dict) -> tuple:
    # events.ts orderByForObservationsQuery: start_time DESC, xxHash32(trace_id) DESC, span_id DESC
    # (crc32 stands in for xxHash32: what matters is that ties do not follow the id ascending).
    return obs["_start"].timestamp(), zlib.crc32(obs["traceId"].encode()), obs["id"]


def _server_ordered_page(selected: list[dict], q: dict, limit: int, groups: set[str], expand: set[str],
                         real_4_16: bool = False) -> dict:
    selected.sort(key=_server_key, reverse=True)
    if q.get("cursor"):
        after = decode_cursor(q["cursor"])
        last = (after["t"], after.get("h", 0), after["id"])
        selected = [o for o in selected if _server_key(o) < last]
    page = selected[:limit]
    meta = {}
    if len(selected) > limit:
        t, h, obs_id = _server_key(page[-1])
        meta["cursor"] = encode_cursor({"t": t, "h": h, "id": obs_id})
    return {"data": [_view(o, groups, expand, real_4_16) for o in page], "meta": meta}


def _trace(root: dict, observations: list[dict] | None = None) -> dict:
    trace = {"id": root["traceId"], "timestamp": root["startTime"], "name": root.get("traceName") or root.get("name"),
             "input": root.get("input"), "output": root.get("output"), "sessionId": root.get("sessionId"),
             "release": root.get("release"), "version": root.get("version"), "userId": root.get("userId"),
             "metadata": root.get("metadata"), "tags": list(root.get("tags") or []), "public": False,
             "environment": root.get("environment") or "default",
             "htmlPath": f"/project/{root['projectId']}/traces/{root['traceId']}", "latency": 0.0, "totalCost": 0.0}
    if observations is None:
        trace.update(observations=[], scores=[])
    else:
        trace["observations"] = [{k: v for k, v in o.items() if not k.startswith("_")} for o in observations]
        trace["scores"] = []
    return trace


def select_traces(store: Store, q: dict, query: dict) -> tuple[list[dict], list[dict], dict]:
    """The legacy list's filters, order and page: (this page's roots, all matching roots, meta)."""
    page, limit = int(q.get("page", 1)), int(q.get("limit", 50))
    if page < 1 or not 1 <= limit <= 1000:
        raise Invalid("page starts at 1; limit is 1..1000")
    since = parse_time(q["fromTimestamp"]) if q.get("fromTimestamp") else None
    until = parse_time(q["toTimestamp"]) if q.get("toTimestamp") else None
    tags, environments = query.get("tags") or [], query.get("environment") or []
    roots = []
    for root in store.roots_by_trace().values():
        if (since and root["_start"] < since) or (until and root["_start"] >= until):
            continue
        if q.get("name") and (root.get("traceName") or root.get("name")) != q["name"]:
            continue
        if tags and not set(tags) <= set(root.get("tags") or []):
            continue
        if environments and root.get("environment") not in environments:
            continue
        roots.append(root)
    field, _, direction = (q.get("orderBy") or "timestamp.desc").partition(".")
    roots.sort(key=lambda r: (r["_start"], r["traceId"]) if field == "timestamp" else (str(r.get(field)), r["traceId"]),
               reverse=direction != "asc")
    chunk = roots[(page - 1) * limit: page * limit]
    meta = {"page": page, "limit": limit, "totalItems": len(roots), "totalPages": (len(roots) + limit - 1) // limit}
    return chunk, roots, meta


def traces_list(store: Store, q: dict, query: dict) -> dict:
    chunk, _, meta = select_traces(store, q, query)
    fields = set((q.get("fields") or "core,io").split(","))
    data = []
    for root in chunk:
        trace = _trace(root)
        if "io" not in fields:
            trace["input"] = trace["output"] = None
        data.append(trace)
    return {"data": data, "meta": meta}


def trace_get(store: Store, trace_id: str, order: str = "spec") -> dict:
    root = store.roots_by_trace().get(trace_id)
    if root is None:
        raise Reply(404, {"message": f"Trace {trace_id} not found"})
    return _trace(root, store.trace_observations(trace_id, order))


def _score_v3(score: dict, fields: set[str]) -> dict:
    value = score["value"]
    if score["dataType"] == "BOOLEAN":
        value = bool(value)
    out = {k: score[k] for k in ("id", "projectId", "name", "dataType", "source", "timestamp", "environment",
                                 "createdAt", "updatedAt")}
    out["value"] = value
    if "details" in fields:
        out.update(comment=score["comment"], configId=score["configId"], metadata=score["metadata"])
    if "subject" in fields:
        out["subject"] = score_subject(score)
    return out


def score_subject(score: dict) -> dict:
    """v3's ``subject``: an observation (with its trace), a session, or a trace."""
    if score.get("observationId"):
        return {"kind": "observation", "id": score["observationId"], "traceId": score["traceId"]}
    if score.get("sessionId") and not score.get("traceId"):
        return {"kind": "session", "id": score["sessionId"]}
    if score.get("datasetRunId") and not score.get("traceId"):
        return {"kind": "experiment", "id": score["datasetRunId"]}
    return {"kind": "trace", "id": score["traceId"]}


def scores_v3(store: Store, q: dict) -> dict:
    limit = int(q.get("limit", 50))
    if not 1 <= limit <= 100:
        raise Invalid("limit must be between 1 and 100")
    fields = set((q.get("fields") or "").split(","))
    # comma lists, trimmed and without empty items, as the server's optionalCommaSeparatedStringArray
    lists = {k: {v.strip() for v in q[k].split(",") if v.strip()}
             for k in ("id", "name", "source", "dataType", "environment", "configId", "traceId", "sessionId",
                       "observationId") if q.get(k)}
    lists = {k: vals for k, vals in lists.items() if vals}
    if len({"traceId", "sessionId"} & set(lists)) > 1:
        raise Invalid("give one of traceId, sessionId or experimentId")
    if "observationId" in lists and "traceId" not in lists:
        raise Invalid("observationId needs traceId")
    since = parse_time(q["fromTimestamp"]) if q.get("fromTimestamp") else None
    until = parse_time(q["toTimestamp"]) if q.get("toTimestamp") else None
    with store.lock:
        rows = list(store.scores.values())
    selected = []
    for s in rows:
        if any(str(s.get(k) if k != "source" else s[k].upper()) not in {v.upper() if k == "source" else v for v in vals}
               for k, vals in lists.items()):
            continue
        selected.append(s)
    selected = newest_in_window(selected, since, until)
    if q.get("cursor"):
        after = decode_cursor(q["cursor"])
        selected = [s for s in selected if (s["timestamp"], s["id"]) < (after["t"], after["id"])]
    page = selected[:limit]
    meta = {"limit": limit}
    if len(selected) > limit:
        meta["cursor"] = encode_cursor({"t": page[-1]["timestamp"], "id": page[-1]["id"]})
    return {"data": [_score_v3(s, fields) for s in page], "meta": meta}


def score_configs(store: Store, method: str, path: str, q: dict, body):
    if path == "/api/public/score-configs" and method == "POST":
        return 200, store.create_config(body or {})
    if path == "/api/public/score-configs" and method == "GET":
        page, limit = int(q.get("page", 1)), int(q.get("limit", 50))
        if page < 1 or not 1 <= limit <= 100:
            raise Invalid("page starts at 1; limit is 1..100")
        with store.lock:  # the server lists newest first
            configs = sorted(store.configs.values(), key=lambda c: (c["createdAt"], c["id"]), reverse=True)
        chunk = configs[(page - 1) * limit: page * limit]
        return 200, {"data": chunk, "meta": {"page": page, "limit": limit, "totalItems": len(configs),
                                              "totalPages": (len(configs) + limit - 1) // limit}}
    config_id = path.rsplit("/", 1)[-1]
    with store.lock:
        config = store.configs.get(config_id)
        if config is None:
            raise Reply(404, {"message": "score config not found"})
        if method == "PATCH":
            for key in ("isArchived", "name", "categories", "minValue", "maxValue", "description"):
                if body and key in body:
                    config[key] = body[key]
        return 200, dict(config)


def newest_in_window(scores: list[dict], since, until) -> list[dict]:
    """Scores with a timestamp in [since, until), newest first (ties by id), as both score lists order them."""
    kept = [s for s in scores if not (since and parse_time(s["timestamp"]) < since)
            and not (until and parse_time(s["timestamp"]) >= until)]
    return sorted(kept, key=lambda s: (s["timestamp"], s["id"]), reverse=True)


# -- request counters (benchmarks/continuous.py) ---------------------------------------------
def endpoint_label(method: str, path: str, query: dict) -> str:
    """The endpoint a request is counted under: ids collapsed, and the v2 observations
    listing (no ``traceId``: the sampler's) apart from trace reads (``traceId``: the worker's)."""
    rest = path.split("/api/public/", 1)[-1]
    if rest == "v2/observations":
        return f"{method} v2/observations ({'trace read' if query.get('traceId') else 'listing'})"
    parts = rest.split("/")
    if parts[0] in ("traces", "score-configs", "scores") and len(parts) == 2 and parts[1]:
        return f"{method} {parts[0]}/{{id}}"
    return f"{method} {rest}"


def is_listing(method: str, path: str, query: dict) -> bool:
    return method == "GET" and (path == "/api/public/traces" or (
        path == "/api/public/v2/observations" and not query.get("traceId")))


def listed_trace_ids(path: str, payload) -> list[str]:
    """The trace ids of a listing reply's items: v2 observations carry traceId, legacy traces id."""
    data = (payload or {}).get("data") or [] if isinstance(payload, dict) else []
    key = "id" if path == "/api/public/traces" else "traceId"
    return [item.get(key) for item in data if isinstance(item, dict) and item.get(key)]
