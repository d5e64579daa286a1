"""What an observation or session rubric's variables see: the subject's view of a trace.

A worker's read (worker/langfuse_io/subjects.py) fills ``Trace.subject``/``parent`` or
``Trace.turns``; a hand-written trace (labelled examples, ``rubrics render --file``) has only
``observations``, so ``view_for`` derives them: for an observation rubric the observation marked
``"judged": true`` (else the first) and its parent by ``parentObservationId``; for a session
rubric each observation is one turn, in order (no observations: the trace is one turn).

``conversation`` is the transcript the judge reads: every kept turn's user message and answer,
and, where the turn budget left turns out, a visible marker saying how many.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, TypedDict

from worker.json_types import JSONDict
from worker.langfuse_io.traces import SessionTurn, Trace
from worker.rubrics.rubric import Rubric

_MARKER = "[… {n} turn{s} ({first} to {last}) left out by tracejudge's turn budget …]"


class SessionFacts(TypedDict):
    """How much of a session was judged: the ``session`` variable, and the score's metadata."""

    id: str | None
    turns_total: int
    turns_judged: int
    first_start: str | None
    last_start: str | None


def view_for(trace: Trace, rubric: Rubric) -> Trace:
    if rubric.target == "observation" and trace.subject is None:
        steps = trace.observations
        subject = next((o for o in steps if o.get("judged")), steps[0] if steps else None)
        if subject is None:
            return trace
        parent = next((o for o in steps if subject.get("parentObservationId")
                       and o.get("id") == subject["parentObservationId"]), None)
        return dataclasses.replace(trace, subject=subject, parent=parent)
    if rubric.target == "session" and trace.turns is None:
        steps = trace.observations or [{"input": trace.input, "output": trace.output}]
        # A hand-written step may have no id: its turn is then named by the trace (no one reads it).
        turns: list[SessionTurn] = [
            {"turn": i + 1, "trace_id": str(o.get("id") or trace.id), "start": o.get("startTime"),
             "input": o.get("input"), "output": o.get("output"), "total": len(steps)} for i, o in enumerate(steps)]
        return dataclasses.replace(trace, turns=turns, session_id=trace.session_id or trace.id)
    return trace


def has_tool_calls(observation: JSONDict) -> bool:
    """Whether a generation's output calls tools: OpenAI ``tool_calls``, Anthropic ``tool_use``
    content blocks, or a list of such messages."""
    output = observation.get("output")
    items = output if isinstance(output, list) else [output]
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("tool_calls") or item.get("function_call"):
            return True
        content = item.get("content")
        if isinstance(content, list) and any(isinstance(c, dict) and c.get("type") == "tool_use" for c in content):
            return True
    return False


def _said(value: Any, role: str) -> str:
    """A turn's user message (the last one of a chat input) or its answer, as text."""
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        messages = [m for m in value if m.get("role") == role] or value
        value = messages[-1]
    if isinstance(value, dict) and "content" in value:
        value = value["content"]
    if value is None:
        return "(nothing)"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def conversation(trace: Trace) -> str:
    """The transcript of the kept turns, with a marker where the budget left turns out."""
    turns = trace.turns or []
    lines: list[str] = []
    previous = 0
    total = (turns[0].get("total") if turns else 0) or len(turns)
    for turn in turns:
        number = turn["turn"]
        if number > previous + 1:
            n = number - previous - 1
            lines.append(_MARKER.format(n=n, s="" if n == 1 else "s", first=previous + 1, last=number - 1))
        lines.append(f"[turn {number} of {total}] user:\n{_said(turn.get('input'), 'user')}")
        lines.append(f"[turn {number} of {total}] assistant:\n{_said(turn.get('output'), 'assistant')}")
        previous = number
    return "\n\n".join(lines)


def session_facts(trace: Trace) -> SessionFacts:
    """The ``session`` variable and the score's metadata: how much of the session was judged."""
    turns = trace.turns or []
    return {"id": trace.session_id, "turns_total": turns[0].get("total", len(turns)) if turns else 0,
            "turns_judged": len(turns), "first_start": turns[0].get("start") if turns else None,
            "last_start": turns[-1].get("last_start") or turns[-1].get("start") if turns else None}
