"""Observation rubrics' listing and selection: the matching observations of a window, through
v2 filters, each picked by the contract's hash of its **observation id**.

Only what a rubric's ``applies_to`` asks for is listed (``types``, ``names``, ``models``,
``levels``, ``environments`` as the v2 JSON ``filter``; the window as ``fromStartTime`` /
``toStartTime``), never every observation of every trace. Rubrics with the same filters share
one listing. What the server returns is checked again here (a server that ignores a filter
column must not widen the selection), and Langfuse's internal environments and tracejudge's own
traces are never judged. ``with_tool_calls`` (a GENERATION counts only when it calls tools)
needs the observation's output, which a listing does not carry: the worker checks it and records
the others as not applicable.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator

from langfuse.api import LangfuseAPI

from samplers.hashing import is_sampled
from worker.jobs import ObservationSubject, Subject
from worker.json_types import JSONDict
from worker.langfuse_io.client import get_object
from worker.langfuse_io.observations import OptionsFilter, any_of
from worker.retrying import call_with_retries
from worker.rubrics.fields import metadata_text
from worker.rubrics.rubric import Rubric

LIST_FIELDS = "core,basic,metadata,model,trace_context"  # no input or output
PAGE = 1000


@dataclasses.dataclass(frozen=True)
class ObservationRef:
    trace_id: str
    observation_id: str
    type: str | None
    name: str | None
    level: str | None
    model: str | None
    environment: str | None
    trace_name: str | None
    tags: tuple[str, ...]
    metadata: JSONDict
    start: dt.datetime | None

    @property
    def subject(self) -> ObservationSubject:
        return Subject.observation(self.trace_id, self.observation_id)


def is_internal(ref: ObservationRef) -> bool:
    return (ref.environment or "").startswith("langfuse") or (ref.trace_name or "").startswith("tracejudge")


def v2_filter(rubric: Rubric) -> list[OptionsFilter]:
    """The rubric's observation filters as v2's JSON ``filter`` (all must hold)."""
    a = rubric.applies_to
    columns = (("type", a.types), ("name", a.names), ("model", a.models), ("level", a.levels),
               ("environment", a.environments))
    return [any_of(column, values) for column, values in columns if values]


def applies(rubric: Rubric, ref: ObservationRef) -> bool:
    a = rubric.applies_to
    for allowed, value in ((a.types, ref.type), (a.names, ref.name), (a.models, ref.model), (a.levels, ref.level),
                           (a.environments, ref.environment), (a.trace_names, ref.trace_name)):
        if allowed and value not in allowed:
            return False
    if a.tags and not set(a.tags) <= set(ref.tags):
        return False
    return all(metadata_text(ref.metadata.get(k)) == v for k, v in a.metadata)  # the observation's own metadata


def select(rubrics: list[Rubric], ref: ObservationRef, rate_override: float | None) -> list[Rubric]:
    """The observation rubrics ``ref`` is sampled for: ``u(observation id) < rate``."""
    return [r for r in rubrics if applies(r, ref)
            and is_sampled(ref.observation_id, r.sampling_rate if rate_override is None else rate_override)]


def groups(rubrics: list[Rubric]) -> dict[str, list[Rubric]]:
    """Rubrics by their listing (the JSON filter), so rubrics that list alike list once."""
    out: dict[str, list[Rubric]] = {}
    for rubric in rubrics:
        out.setdefault(json.dumps(v2_filter(rubric), sort_keys=True), []).append(rubric)
    return out


def iter_observations(api: LangfuseAPI, filters: str, since: dt.datetime, until: dt.datetime,
                      on_request: Callable[[], None] = lambda: None) -> Iterator[ObservationRef]:
    """Every observation v2 lists for ``filters`` (a JSON filter, as ``groups`` keys it) whose start
    is in [since, until), page by page (newest first, as the server sends them)."""
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"fields": LIST_FIELDS, "limit": PAGE, "fromStartTime": _iso(since),
                                        "toStartTime": _iso(until)}
        if filters != "[]":
            params["filter"] = filters
        if cursor:
            params["cursor"] = cursor
        on_request()
        page = call_with_retries(lambda: get_object(api, "api/public/v2/observations", params=params))
        data = page.get("data") or []
        for obs in data:
            if obs.get("id") and obs.get("traceId"):
                yield _ref(obs)
        cursor = (page.get("meta") or {}).get("cursor")
        if not cursor or not data:
            return


def _ref(obs: JSONDict) -> ObservationRef:
    metadata = obs.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            metadata = {}
    start = obs.get("startTime")
    return ObservationRef(
        trace_id=obs["traceId"], observation_id=obs["id"], type=obs.get("type"), name=obs.get("name"),
        level=obs.get("level"), model=obs.get("model") or obs.get("providedModelName"),
        environment=obs.get("environment"), trace_name=obs.get("traceName"), tags=tuple(obs.get("tags") or ()),
        metadata=metadata if isinstance(metadata, dict) else {},
        start=dt.datetime.fromisoformat(start.replace("Z", "+00:00")) if isinstance(start, str) else None)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
