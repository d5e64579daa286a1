"""The judge job's wire contract: queue and actor names, the message, and the rubric key.

A job is ``judge_trace(trace_id, "name@vN")`` on the ``judge`` queue (with its siblings, the
other versions judging the same trace, as a message option). The sampler, the budget's
unparking and the dead-letter tools build and read jobs through this module alone, so they
depend on the contract and not on the broker that runs it (worker/fleet).
"""
from __future__ import annotations

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


def format_rubric_key(name: str, version: int) -> str:
    return f"{name}@v{version}"


def judge_message(trace_id: str, rubric_key: str, siblings: tuple[str, ...] | list[str] = ()) -> Message:
    """``siblings``: the other rubric versions enqueued for the same trace in the same pass, so
    the first of their jobs reads the trace once for all (worker/langfuse_io/shared_traces.py)."""
    return Message(queue_name=JUDGE_QUEUE, actor_name=JUDGE_ACTOR, args=(trace_id, rubric_key),
                   kwargs={}, options={SIBLINGS: list(siblings)} if siblings else {})
