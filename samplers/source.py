"""The Langfuse trace source: root observations of a time window, through v2 observations.

Asks only for the field groups the sampler needs, at the largest page size, walking the
cursor. Falls back to the legacy ``/api/public/traces`` while the server has no v2 (a v3
server), re-probing v2 as worker/langfuse_io/observations.py describes.

The legacy list's ``fields=core`` carries no metadata on the real server (API-NOTES section
11): metadata comes only with the ``io`` group, which brings each trace's input and output
too. Rubric metadata filters (``applies_to.metadata``) and per-segment quotas read the trace
metadata, so the legacy list asks for ``core,io`` unless the source is told no rubric reads
metadata (``metadata=False``, see ``reads_metadata``).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator

from langfuse.api import LangfuseAPI

from worker.jobs import Subject, TraceSubject
from worker.json_types import JSONDict
from worker.langfuse_io.client import get_object
from worker.langfuse_io.observations import ServerGeneration, walk_v2_plain
from worker.retrying import call_with_retries
from worker.rubrics.rubric import Rubric

ROOT_FIELDS = "core,basic,metadata,trace_context"
V2_PAGE = 1000
LEGACY_PAGE = 100


@dataclasses.dataclass(frozen=True)
class TraceRef:
    trace_id: str
    name: str | None
    environment: str | None
    tags: tuple[str, ...]
    metadata: JSONDict
    timestamp: dt.datetime | None
    session_id: str | None = None  # what session rubrics group by (samplers/sessions.py)

    @property
    def subject(self) -> TraceSubject:
        return Subject.trace(self.trace_id)


def is_own_or_internal(ref: TraceRef) -> bool:
    """Langfuse's internal environments and tracejudge's own traces are never judged."""
    return (ref.environment or "").startswith("langfuse") or (ref.name or "").startswith("tracejudge")


def reads_metadata(rubrics: Iterable[Rubric]) -> bool:
    """Whether selecting for ``rubrics`` (Rubric objects) needs the trace metadata: a metadata
    filter, a per-segment quota or a detection target (its cells are segments)."""
    return any(r.applies_to.metadata or (r.segment_key and r.min_per_segment_day > 0) or r.power is not None
               for r in rubrics)


class LangfuseTraceSource:
    def __init__(self, api: LangfuseAPI, *, metadata: bool = True, generation: ServerGeneration | None = None):
        self.api = api
        self.generation = generation or ServerGeneration()
        self.legacy_fields = "core,io" if metadata else "core"
        self.requests = 0

    @classmethod
    def for_rubrics(cls, api: LangfuseAPI, rubrics: Iterable[Rubric], *,
                    generation: ServerGeneration | None = None) -> "LangfuseTraceSource":
        """A source that asks the legacy list for metadata only when ``rubrics`` read it."""
        return cls(api, metadata=reads_metadata(rubrics), generation=generation)

    def iter_roots(self, since: dt.datetime, until: dt.datetime) -> Iterator[TraceRef]:
        return self.generation.iterate(lambda: self._iter_v2(since, until), lambda: self._iter_legacy(since, until))

    def _count(self) -> None:
        self.requests += 1

    def _iter_v2(self, since: dt.datetime, until: dt.datetime) -> Iterator[TraceRef]:
        # Plain JSON, not the SDK's models: every root of the window is listed (most are never
        # sampled), and building a model costs far more than the few fields read here.
        window = {"isRootObservation": "true", "fromStartTime": _iso(since), "toStartTime": _iso(until)}
        for obs in walk_v2_plain(self.api, window, fields=ROOT_FIELDS, limit=V2_PAGE, on_request=self._count):
            metadata = obs.get("metadata")
            yield TraceRef(
                trace_id=obs["traceId"],
                name=obs.get("traceName") or obs.get("name"),
                environment=obs.get("environment"),
                tags=tuple(obs.get("tags") or ()),
                metadata=metadata if isinstance(metadata, dict) else {},
                timestamp=_parse(obs.get("startTime")),
                session_id=obs.get("sessionId"),
            )

    def _iter_legacy(self, since: dt.datetime, until: dt.datetime) -> Iterator[TraceRef]:
        page_no = 1
        while True:
            self.requests += 1
            params: dict[str, str | int] = {
                "page": page_no, "limit": LEGACY_PAGE, "fromTimestamp": _iso(since), "toTimestamp": _iso(until),
                "orderBy": "timestamp.asc", "fields": self.legacy_fields}
            body = call_with_retries(lambda: get_object(self.api, "api/public/traces", params=params))
            data = body.get("data") or []
            for trace in data:
                yield TraceRef(
                    trace_id=trace["id"], name=trace.get("name"), environment=trace.get("environment"),
                    tags=tuple(trace.get("tags") or ()),
                    metadata=trace.get("metadata") if isinstance(trace.get("metadata"), dict) else {},
                    timestamp=_parse(trace.get("timestamp")),
                    session_id=trace.get("sessionId"),
                )
            total_pages = (body.get("meta") or {}).get("totalPages") or 0
            if not data or page_no >= total_pages:
                return
            page_no += 1


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(value: object) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
