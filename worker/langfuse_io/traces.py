"""A judgeable view of one trace: its root and the observations a rubric names.

Read through v2 observations, with the legacy ``/traces`` API as the fallback (observations.py
says when). What is read:

- ``fetch(trace_id, names)``, what the worker does: the root (``traceId`` +
  ``isRootObservation=true``, with its I/O), one lean listing of the trace (no I/O: ids, names,
  start times, models) and, per name the rubric reads, only the one observation that name
  resolves to (``traceId`` + ``name`` + its start time, with its I/O). An agent trace of
  hundreds of steps costs a few hundred kB, not its whole I/O (tens of MB, API-NOTES section 11).
- ``fetch(trace_id)`` (no names): every observation with its I/O, the whole trace, for tools
  that show a trace and as the baseline of benchmarks/large_trace.py.

**A repeated observation name resolves to its earliest-starting observation** (equal start
times: the smallest id), on every path and for hand-written traces too: v2 lists newest first
and the legacy trace read latest-ingested first, so the order the server sends is never used.

Per variable, what is read and kept is bounded: a variable reads one field of one observation
(the root or the step its name resolves to), never every step of that name, and a kept input or
output longer than ``MAX_FIELD_CHARS`` is cut to that (head and tail around a visible marker, as
text), so what a worker thread holds stays small whatever a step carries; the judge's own budget
(``TRACEJUDGE_MAX_VARIABLE_CHARS``) cuts further.

Not found: v2 with no observation at all is checked once against the legacy read (a dual-mode
server mid-migration may have the trace only there) and is then ``Unscored("trace_not_found")``;
a trace whose steps arrived but whose root did not, and that started less than ``YOUNG`` ago,
is ``OutputNotYetArrived`` (an OTel root span is exported last, when it ends).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterable
from typing import NotRequired, TypedDict

from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError

from worker.errors import ConfigError, OutputNotYetArrived, TransientError, Unscored
from worker.json_types import JSONDict, JSONValue
from worker.langfuse_io import text
from worker.langfuse_io.client import get_object
from worker.langfuse_io.observations import ServerGeneration, is_not_found, walk_v2_plain
from worker.langfuse_io.ordering import as_datetime, earliest, first_by_start, root_of, start_key
from worker.langfuse_io.steps import step_of, text_or_none
from worker.retrying import call_with_retries

TRACE_FIELDS = "core,basic,io,metadata,model,usage,prompt,trace_context"  # every field a variable or a drift slice reads
LEAN_FIELDS = "core,basic,model,prompt"  # the outline: no I/O; the models and prompts drift's slices read
# A trace of at most this many observations is read whole in one request (every field); a
# larger one costs that page, its root, its outline and one read per named step.
SMALL_TRACE = 10
MAX_FIELD_CHARS = 200_000  # per kept input/output; the judge's budget (12,000 by default) cuts further
YOUNG = dt.timedelta(hours=1)  # a trace whose root has not arrived this long after its first step may still get it
# Set by the reader on a kept observation whose input/output it cut: {"input"/"output": characters cut}.
CUT_KEY = "tracejudgeCutChars"
_MS = dt.timedelta(milliseconds=1)
_CUT = "\n[… {cut:,} characters not kept by tracejudge's trace reader …]\n"


class SessionTurn(TypedDict):
    """One turn of a session's view (``Trace.turns``): a trace of the session, by its root."""

    turn: int  # its place in the session, from 1
    trace_id: str
    start: str | None  # the root's start time as the server sent it (ISO 8601)
    input: JSONValue
    output: JSONValue
    total: int  # turns in the whole session (the view keeps only the turn budget's)
    last_start: NotRequired[str | None]  # the session's newest turn's start (read_session)


@dataclasses.dataclass
class Trace:
    id: str
    name: str | None
    environment: str | None
    timestamp: dt.datetime | None
    input: JSONValue  # as the application sent it (parse_io), checked where it is read
    output: JSONValue
    metadata: JSONDict
    tags: list[str]
    observations: list[JSONDict]  # the observations read: name, type, input, output, metadata, model
    # every model the trace's observations name, when the reader saw more observations than it kept
    models: tuple[str, ...] | None = None
    # characters the reader did not keep (MAX_FIELD_CHARS), by "input"/"output" or "<name>.<field>"
    cut_chars: dict[str, int] = dataclasses.field(default_factory=dict)
    # Observation and session subjects (worker/langfuse_io/subjects.py); None for a trace's view.
    subject: JSONDict | None = None  # the judged observation, all its fields
    parent: JSONDict | None = None  # its parent observation (None for a root, or when not read)
    session_id: str | None = None
    turns: list[SessionTurn] | None = None  # a session's kept turns in time order
    release: str | None = None  # the trace's release and version (drift's slices)
    version: str | None = None
    steps: list[JSONDict] = dataclasses.field(default_factory=list)  # every observation seen, lean (steps.py)

    def observation(self, name: str) -> JSONDict | None:
        """The observation ``name`` resolves to: the earliest-starting one (ties: smallest id)."""
        return first_by_start(o for o in self.observations if o.get("name") == name)

    @classmethod
    def from_dict(cls, raw: object, default_id: str = "local") -> "Trace":
        """A trace written by hand (``rubrics render --file``, labelled examples):
        {id, name, environment, input, output, metadata, tags, observations: [{name, output, ...}]}."""
        if not isinstance(raw, dict):
            raise ConfigError("a trace must be a JSON object with input, output, metadata and observations")
        observations, metadata = raw.get("observations") or [], raw.get("metadata") or {}
        if not isinstance(observations, list) or not all(isinstance(o, dict) for o in observations):
            raise ConfigError("trace 'observations' must be a list of objects")
        if not isinstance(metadata, dict):
            raise ConfigError("trace 'metadata' must be an object")
        return cls(str(raw.get("id") or default_id), raw.get("name"), raw.get("environment"), None,
                   raw.get("input"), raw.get("output"), metadata, list(raw.get("tags") or []),
                   [observation_dict(o) for o in observations])

    @property
    def producer_models(self) -> list[str]:
        if self.models is not None:
            return sorted(set(self.models))
        return sorted({o["model"] for o in self.observations if o.get("model")})


def parse_io(value: JSONValue) -> JSONValue:
    """v2 returns input/output as raw strings: JSON when it parses, the text otherwise; either
    way with lone surrogates and NUL replaced (worker/langfuse_io/text.py: the stored text is
    whatever the application sent, and JSON text can carry them as escapes)."""
    if isinstance(value, str):
        try:
            return text.loads(value)
        except ValueError:
            return text.clean(value)
    return value


class TraceReader:
    """Fetches traces; learns (and re-learns) which read family the server answers."""

    def __init__(self, api: LangfuseAPI, *, generation: ServerGeneration | None = None):
        self.api = api
        self.generation = generation or ServerGeneration()

    def fetch(self, trace_id: str, names: Iterable[str] | None = None) -> Trace:
        """The trace with its root and the observations ``names`` resolve to; every observation
        when ``names`` is None."""
        wanted = None if names is None else tuple(dict.fromkeys(names))
        return self.generation.call(lambda: self._fetch_v2(trace_id, wanted),
                                    lambda: self._fetch_legacy(trace_id, wanted))

    # -- v2 -----------------------------------------------------------------------------------
    def _walk(self, fields: str, limit: int, **params: str) -> list[JSONDict]:
        return [observation_dict(o) for o in walk_v2_plain(self.api, params, fields=fields, limit=limit)]

    def _fetch_v2(self, trace_id: str, names: tuple[str, ...] | None) -> Trace:
        if names is None:
            observations = sorted(self._walk(TRACE_FIELDS, 1000, traceId=trace_id), key=start_key)
            if not observations:
                return self._not_on_v2(trace_id, names)
            return trace_of(trace_id, root_of(observations), observations)
        # Most traces are small: one read with every field answers the whole trace.
        page = call_with_retries(lambda: get_object(self.api, "api/public/v2/observations", params={
            "fields": TRACE_FIELDS, "limit": SMALL_TRACE, "traceId": trace_id}))
        steps = {o.get("id"): o for o in map(observation_dict, page.get("data") or [])}
        if not (page.get("meta") or {}).get("cursor"):
            if not steps:
                return self._not_on_v2(trace_id, names)
            return _assemble(trace_id, names, [o for o in steps.values() if o.get("isRootObservation")],
                             list(steps.values()), read=lambda obs: obs)
        # A larger one (an agent's): its root, its outline, and only the steps the names resolve to
        # (those not on the page already read).
        roots = self._walk(TRACE_FIELDS, 10, traceId=trace_id, isRootObservation="true")
        outline = self._walk(LEAN_FIELDS, 1000, traceId=trace_id)
        return _assemble(trace_id, names, roots, outline,
                         read=lambda lean: steps.get(lean.get("id")) or self._read_one(trace_id, lean))

    def read_one(self, trace_id: str, lean: JSONDict) -> JSONDict:
        """One observation of a trace's outline (a lean entry: id, name, start) with all its fields."""
        return bounded(self._read_one(trace_id, lean))

    def _read_one(self, trace_id: str, lean: JSONDict) -> JSONDict:
        """One observation of the outline with all its fields: filtered by trace, name and start time."""
        start = as_datetime(lean.get("startTime"))
        filters = {"traceId": trace_id}
        if lean.get("name"):
            filters["name"] = lean["name"]
        if start is not None:
            filters.update(fromStartTime=_utc_stamp(start - _MS), toStartTime=_utc_stamp(start + _MS))
        for obs in self._walk(TRACE_FIELDS, 50, **filters):
            if obs.get("id") == lean.get("id"):
                return obs
        raise TransientError(f"observation {lean.get('id')} of trace {trace_id} was listed but could not be read")

    def _not_on_v2(self, trace_id: str, names: tuple[str, ...] | None) -> Trace:
        """No observation on v2: a dual-mode server mid-migration may have the trace in its
        legacy tables only; otherwise (or on events_only servers) the trace is gone."""
        try:
            return self._fetch_legacy(trace_id, names)
        except ApiError as exc:
            if not is_not_found(exc):
                raise
        raise Unscored("trace_not_found", f"no observations for trace {trace_id}")

    # -- legacy -------------------------------------------------------------------------------
    def _fetch_legacy(self, trace_id: str, names: tuple[str, ...] | None) -> Trace:
        path = f"api/public/traces/{trace_id}"
        try:
            body = call_with_retries(lambda: get_object(self.api, path))
        except ApiError as exc:
            if exc.status_code != 422 or names:  # 422: past the server's trace size limit
                raise
            # a rubric that reads no step needs only the trace's own fields
            body = call_with_retries(lambda: get_object(self.api, path, params={"fields": "core,io"}))
        observations = sorted((observation_dict(o) for o in body.get("observations") or []), key=start_key)
        root: JSONDict = {"name": body.get("name"), "environment": body.get("environment"),
                          "startTime": body.get("timestamp"), "input": parse_io(body.get("input")),
                          "output": parse_io(body.get("output")), "metadata": body.get("metadata") or {},
                          "tags": body.get("tags") or [], "release": body.get("release"),
                          "version": body.get("version")}
        if names is None:
            return trace_of(trace_id, root, observations)
        chosen = (first_by_start(o for o in observations if o.get("name") == name) for name in names)
        models = tuple(o["model"] for o in observations if o.get("model"))
        return trace_of(trace_id, bounded(root), [bounded(o) for o in chosen if o is not None], models=models,
                        outline=observations)


def _assemble(trace_id: str, names: tuple[str, ...], roots: list[JSONDict], outline: list[JSONDict], *,
              read: Callable[[JSONDict], JSONDict]) -> Trace:
    """The trace of its root and the steps ``names`` resolve to in ``outline``; ``read`` gives an
    outline entry with all its fields (the entry itself when the outline was read whole)."""
    if not roots and not outline:
        raise Unscored("trace_not_found", f"no observations for trace {trace_id}")
    if roots:
        root = earliest(roots)
    else:  # steps without their root: the root span is exported last, when the run ends
        root = read(earliest(outline))
        if _age(root) < YOUNG:
            raise OutputNotYetArrived(f"trace {trace_id}: steps arrived, its root observation not yet")
    root = bounded(root)
    kept = [root]
    for name in names:
        chosen = first_by_start(o for o in outline if o.get("name") == name)
        if chosen is not None and chosen.get("id") != root.get("id"):
            kept.append(bounded(read(chosen)))
    models = tuple(o["model"] for o in outline if o.get("model"))
    return trace_of(trace_id, root, kept, models=models, outline=outline)


def _utc_stamp(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def trace_of(trace_id: str, root: JSONDict, observations: list[JSONDict], *,
             models: tuple[str, ...] | None = None, outline: list[JSONDict] | None = None) -> Trace:
    """The Trace of ``root`` (its name, input, output, metadata, start, release, version) and the
    kept ``observations``, with the characters the reader cut from each (``CUT_KEY``) and the
    lean ``steps`` of ``outline`` (every observation seen; default: the kept ones)."""
    cut_chars: dict[str, int] = dict(root.get(CUT_KEY) or {})
    kept = {o.get("id"): o for o in observations}  # read whole: an outline entry's full form
    for obs in observations:
        if obs is not root:
            cut_chars.update({f"{obs.get('name')}.{k}": v for k, v in (obs.get(CUT_KEY) or {}).items()})
    return Trace(
        id=trace_id,
        name=root.get("traceName") or root.get("name"),
        environment=root.get("environment"),
        timestamp=as_datetime(root.get("startTime")),
        input=root.get("input"),
        output=root.get("output"),
        metadata=root.get("metadata") or {},
        tags=list(root.get("tags") or []),
        observations=observations,
        models=models,
        cut_chars=cut_chars,
        release=text_or_none(root.get("release")),
        version=text_or_none(root.get("version")),
        steps=[step_of(kept.get(o.get("id"), o)) for o in (observations if outline is None else outline)],
    )


def _age(obs: JSONDict) -> dt.timedelta:
    start = as_datetime(obs.get("startTime"))
    return dt.datetime.now(dt.timezone.utc) - start if start is not None else YOUNG


def bounded(obs: JSONDict) -> JSONDict:
    """``obs`` with input and output of at most MAX_FIELD_CHARS each (head and tail kept)."""
    out = dict(obs)
    for key in ("input", "output"):
        value = out.get(key)
        text = value if isinstance(value, str) else None
        if text is None and isinstance(value, (dict, list)):
            text = json.dumps(value, ensure_ascii=False, default=str)
            if len(text) <= MAX_FIELD_CHARS:
                continue
        if text is not None and len(text) > MAX_FIELD_CHARS:
            head = MAX_FIELD_CHARS * 2 // 3
            cut = len(text) - MAX_FIELD_CHARS
            out[key] = text[:head] + _CUT.format(cut=cut) + text[len(text) - (MAX_FIELD_CHARS - head):]
            out[CUT_KEY] = {**out.get(CUT_KEY, {}), key: cut}  # counted in the score's truncated_chars
    return out


def observation_dict(raw: JSONDict) -> JSONDict:
    """An observation as the server sent it, as the reader keeps it: input and output parsed
    (``parse_io``), ``model`` set (else the provided model name), metadata an object, start and
    end times ISO text."""
    obs = dict(raw)
    obs["input"] = parse_io(obs.get("input"))
    obs["output"] = parse_io(obs.get("output"))
    obs["model"] = obs.get("model") or obs.get("providedModelName")
    if isinstance(obs.get("metadata"), str):
        obs["metadata"] = parse_io(obs["metadata"])
    if not isinstance(obs.get("metadata"), dict):
        obs["metadata"] = {}
    for key in ("startTime", "endTime"):
        if isinstance(obs.get(key), dt.datetime):
            obs[key] = obs[key].isoformat()
    return obs
