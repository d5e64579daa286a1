"""What a job carries between its steps: the prepared request, the judge calls' tally, the outcome."""
from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

from worker.jobs import AnySubject, Subject
from worker.json_types import JSONDict, JSONValue
from worker.judges.base import JudgeRequest, Usage


@dataclasses.dataclass
class Outcome:
    trace_id: str
    rubric: str
    score_id: str
    status: str  # scored | unscored | skipped (already done) | deferred (queued for a batch)
    reason: str | None = None
    value: float | str | None = None
    usage: Usage = dataclasses.field(default_factory=Usage)
    cost: Decimal = Decimal(0)


@dataclasses.dataclass(frozen=True)
class ObservationTarget:
    """An observation rubric's score: it names the judged observation (with its trace)."""

    observation_id: str | None


@dataclasses.dataclass(frozen=True)
class SessionTarget:
    """A session rubric's score: it names the session, and no trace."""

    session_id: str


@dataclasses.dataclass(frozen=True)
class ScoreFacts:
    """What a score carries from its trace, computed when the request is rendered
    (pipeline.trace_facts): its metadata (the text's hygiene, the segment, the subject's ids,
    how it was sampled), its environment, and for an observation or session rubric what it
    names besides (or instead of) the trace.

    A batch item keeps it in Redis as JSON (``to_json``/``from_json``, worker/batching/store.py):
    ``{"metadata": {...}, "environment": ..., "subject": {"observationId"|"sessionId": ...}}``,
    ``subject`` only for those targets."""

    metadata: JSONDict  # the score's metadata taken from the trace; its keys in the order written
    environment: str | None
    target: ObservationTarget | SessionTarget | None = None

    def with_metadata(self, **more: JSONValue) -> "ScoreFacts":
        """These facts with ``more`` metadata, added after what they have."""
        return dataclasses.replace(self, metadata={**self.metadata, **more})

    def to_json(self) -> JSONDict:
        out: JSONDict = {"metadata": self.metadata, "environment": self.environment}
        if isinstance(self.target, ObservationTarget):
            out["subject"] = {"observationId": self.target.observation_id}
        elif isinstance(self.target, SessionTarget):
            out["subject"] = {"sessionId": self.target.session_id}
        return out

    @classmethod
    def from_json(cls, raw: JSONDict) -> "ScoreFacts":
        subject = raw.get("subject") or {}
        target: ObservationTarget | SessionTarget | None = None
        if "observationId" in subject:
            target = ObservationTarget(subject["observationId"])
        elif "sessionId" in subject:
            target = SessionTarget(subject["sessionId"])
        return cls(raw["metadata"], raw.get("environment"), target)


@dataclasses.dataclass
class Prepared:
    """A rendered judge request and the trace facts its score needs: all JSON-able, so a batch
    job can keep it in Redis until its result arrives (hours later, maybe in another process)."""

    score_id: str
    trace_id: str | None  # None for a session rubric's score
    rubric_key: str
    request: JudgeRequest
    facts: ScoreFacts
    metadata: JSONDict  # the trace's metadata, for drift aggregates
    timestamp: dt.datetime | None

    @property
    def subject(self) -> AnySubject:
        """What the score judges, back from its ids (a session's judgement from its metadata)."""
        return subject_of(self.trace_id, self.facts.target, self.facts.metadata)


def subject_of(trace_id: str | None, target: ObservationTarget | SessionTarget | None,
               metadata: JSONDict) -> AnySubject:
    """A score's subject from what its body names: ``traceId``, ``observationId``/``sessionId``
    and, for a session, the ``judgement`` in its metadata."""
    if isinstance(target, SessionTarget):
        judgement = metadata.get("judgement")
        return Subject.session(target.session_id, judgement if isinstance(judgement, int) else 1)
    if isinstance(target, ObservationTarget) and trace_id is not None and target.observation_id is not None:
        return Subject.observation(trace_id, target.observation_id)
    return Subject.trace(trace_id or "")


@dataclasses.dataclass
class Tally:
    """Judge calls made for one job so far, paid for whether or not a verdict comes of them."""

    usage: Usage = dataclasses.field(default_factory=Usage)
    calls: int = 0

    def add(self, usage: Usage) -> None:
        self.usage, self.calls = self.usage + usage, self.calls + 1
