"""The judge job's wire contract: queue and actor names, the message, and the rubric key.

A job is ``judge_trace(subject, "name@vN")`` on the ``judge`` queue (with its siblings, the
other versions judging the same trace, as a message option). The sampler, the budget's
unparking and the dead-letter tools build and read jobs through this module alone, so they
depend on the contract and not on the broker that runs it (worker/fleet).

``subject`` is what the rubric judges (its ``target``, rubric.yaml):

- a trace: the trace id itself, exactly as before targets existed, so a message queued by an
  older release (``judge_trace(trace_id, key)``) is judged exactly as it was;
- an observation: ``@observation:["<trace id>","<observation id>"]``;
- a session: ``@session:["<session id>",<judgement>]``, ``judgement`` counting from 1 (a
  session that resumes after its verdict is judged again, under the same score id).

The subject travels in the first argument, not in a new actor or option, on purpose: every
tool that handles a message by its arguments (budget parking and unparking, dead letters,
the exhausted log, ``score_id_for``) then handles observation and session jobs unchanged.
No Langfuse trace id starts with ``@`` (OTel ids are hex; SDK ids hex or UUIDs).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Literal, NamedTuple, TypeAlias

from dramatiq.message import Message

JUDGE_QUEUE = "judge"
JUDGE_ACTOR = "judge_trace"
EXHAUSTED_ACTOR = "record_exhausted"
SIBLINGS = "siblings"  # message option: the rubric keys judged with this one for its trace


class RubricKey(NamedTuple):
    """A rubric version as jobs, metrics and logs name it: ``name@vN``."""

    name: str
    version: int

    @classmethod
    def parse(cls, key: str) -> "RubricKey":
        """``"helpfulness@v2"`` -> ("helpfulness", 2); a key without a version gets version 0."""
        name, _, version = str(key).partition("@v")
        return cls(name, int(version) if version.isdigit() else 0)

    def __str__(self) -> str:
        return format_rubric_key(self.name, self.version)


SubjectKind: TypeAlias = Literal["trace", "observation", "session"]


class Subject:
    """What one job judges: ``kind`` trace | observation | session, and its ids.

    Every subject is one of the three frozen dataclasses below, built with ``Subject.trace``,
    ``.observation``, ``.session`` or ``.parse``; ``AnySubject`` is their union, for code that
    dispatches on ``kind`` (``subject.kind == "observation"`` narrows it to an
    ``ObservationSubject``, whose ids are ``str``). Every kind answers every attribute declared
    here, None where it has no such id (a session has no trace id)."""

    kind: SubjectKind
    trace_id: str | None
    observation_id: str | None
    session_id: str | None
    judgement: int  # sessions: 1 for the first verdict, 2.. for re-judges after a resume; 1 otherwise

    @staticmethod
    def trace(trace_id: str) -> "TraceSubject":
        return TraceSubject(trace_id)

    @staticmethod
    def observation(trace_id: str, observation_id: str) -> "ObservationSubject":
        return ObservationSubject(trace_id, observation_id)

    @staticmethod
    def session(session_id: str, judgement: int = 1) -> "SessionSubject":
        return SessionSubject(session_id, judgement)

    @staticmethod
    def parse(arg: "str | Subject") -> "AnySubject":
        """The job's first argument back as a Subject; anything without our prefix is a trace id."""
        text = str(arg)
        for kind in ("observation", "session"):
            prefix = f"{_MARK}{kind}:"
            if text.startswith(prefix):
                try:
                    ids = json.loads(text[len(prefix):])
                except ValueError:
                    break
                if kind == "observation" and isinstance(ids, list) and len(ids) == 2:
                    return Subject.observation(str(ids[0]), str(ids[1]))
                if kind == "session" and isinstance(ids, list) and len(ids) == 2 and isinstance(ids[1], int):
                    return Subject.session(str(ids[0]), ids[1])
        return Subject.trace(text)

    @property
    def sample_id(self) -> str:
        """The id the contract's hash runs on: the trace, observation or session id."""
        raise NotImplementedError


# ``kind``, and the ids a kind does not have, are fields outside __init__ and repr:
# ``ObservationSubject("t", "o")``, whose repr names its two ids.

@dataclasses.dataclass(frozen=True)
class TraceSubject(Subject):
    trace_id: str
    kind: Literal["trace"] = dataclasses.field(default="trace", init=False, repr=False)
    observation_id: None = dataclasses.field(default=None, init=False, repr=False)
    session_id: None = dataclasses.field(default=None, init=False, repr=False)
    judgement: int = dataclasses.field(default=1, init=False, repr=False)

    def __str__(self) -> str:
        """The job argument: the trace id itself (see the module docstring)."""
        return self.trace_id

    @property
    def sample_id(self) -> str:
        return self.trace_id


@dataclasses.dataclass(frozen=True)
class ObservationSubject(Subject):
    trace_id: str
    observation_id: str
    kind: Literal["observation"] = dataclasses.field(default="observation", init=False, repr=False)
    session_id: None = dataclasses.field(default=None, init=False, repr=False)
    judgement: int = dataclasses.field(default=1, init=False, repr=False)

    def __str__(self) -> str:
        return f"{_MARK}observation:" + json.dumps([self.trace_id, self.observation_id], separators=(",", ":"))

    @property
    def sample_id(self) -> str:
        return self.observation_id


@dataclasses.dataclass(frozen=True)
class SessionSubject(Subject):
    session_id: str
    judgement: int = 1
    kind: Literal["session"] = dataclasses.field(default="session", init=False, repr=False)
    trace_id: None = dataclasses.field(default=None, init=False, repr=False)
    observation_id: None = dataclasses.field(default=None, init=False, repr=False)

    def __str__(self) -> str:
        return f"{_MARK}session:" + json.dumps([self.session_id, self.judgement], separators=(",", ":"))

    @property
    def sample_id(self) -> str:
        return self.session_id


AnySubject: TypeAlias = TraceSubject | ObservationSubject | SessionSubject

_MARK = "@"
TARGETS: tuple[SubjectKind, ...] = ("trace", "observation", "session")


def format_rubric_key(name: str, version: int) -> str:
    return f"{name}@v{version}"


def judge_message(subject: Subject | str, rubric_key: str,
                  siblings: tuple[str, ...] | list[str] = ()) -> Message[None]:
    """``subject``: what the job judges (a Subject; a plain str is a trace id, or a subject's job
    argument). ``siblings``: the other rubric versions enqueued for the same trace in the same
    pass, so the first of their jobs reads the trace once for all
    (worker/langfuse_io/shared_traces.py)."""
    return Message(queue_name=JUDGE_QUEUE, actor_name=JUDGE_ACTOR, args=(str(subject), rubric_key),
                   kwargs={}, options={SIBLINGS: list(siblings)} if siblings else {})
