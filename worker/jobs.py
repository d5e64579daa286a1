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

import json
from typing import NamedTuple

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


class Subject(NamedTuple):
    """What one job judges: ``kind`` trace | observation | session, and its ids."""

    kind: str
    trace_id: str | None = None
    observation_id: str | None = None
    session_id: str | None = None
    judgement: int = 1  # sessions: 1 for the first verdict, 2.. for re-judges after a resume

    @classmethod
    def trace(cls, trace_id: str) -> "Subject":
        return cls("trace", trace_id=trace_id)

    @classmethod
    def observation(cls, trace_id: str, observation_id: str) -> "Subject":
        return cls("observation", trace_id=trace_id, observation_id=observation_id)

    @classmethod
    def session(cls, session_id: str, judgement: int = 1) -> "Subject":
        return cls("session", session_id=session_id, judgement=judgement)

    @classmethod
    def parse(cls, arg: str) -> "Subject":
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
                    return cls.observation(str(ids[0]), str(ids[1]))
                if kind == "session" and isinstance(ids, list) and len(ids) == 2 and isinstance(ids[1], int):
                    return cls.session(str(ids[0]), ids[1])
        return cls.trace(text)

    def __str__(self) -> str:
        """The job argument (see the module docstring)."""
        if self.kind == "observation":
            return f"{_MARK}observation:" + json.dumps([self.trace_id, self.observation_id], separators=(",", ":"))
        if self.kind == "session":
            return f"{_MARK}session:" + json.dumps([self.session_id, self.judgement], separators=(",", ":"))
        return str(self.trace_id)

    @property
    def sample_id(self) -> str:
        """The id the contract's hash runs on: the trace, observation or session id."""
        return {"trace": self.trace_id, "observation": self.observation_id, "session": self.session_id}[self.kind]


_MARK = "@"
TARGETS = ("trace", "observation", "session")


def format_rubric_key(name: str, version: int) -> str:
    return f"{name}@v{version}"


def judge_message(trace_id: "str | Subject", rubric_key: str, siblings: tuple[str, ...] | list[str] = ()) -> Message:
    """``trace_id``: a trace id, or a Subject (an observation or session job, see above).
    ``siblings``: the other rubric versions enqueued for the same trace in the same pass, so
    the first of their jobs reads the trace once for all (worker/langfuse_io/shared_traces.py)."""
    return Message(queue_name=JUDGE_QUEUE, actor_name=JUDGE_ACTOR, args=(str(trace_id), rubric_key),
                   kwargs={}, options={SIBLINGS: list(siblings)} if siblings else {})
