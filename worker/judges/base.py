"""What every judge provider offers: ask for a structured verdict, and a repair turn."""
from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from worker.errors import Unscored


@dataclasses.dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


@dataclasses.dataclass
class JudgeReply:
    """``verdict`` is the structured answer when the judge gave one; ``problem`` names why not
    (``unparseable``, ``truncated``, ``refused``) with ``detail``."""

    verdict: Any
    usage: Usage
    problem: str | None = None
    detail: str = ""
    # Provider-specific assistant turn, replayed when asking for a repair.
    assistant_turn: Any = None


@dataclasses.dataclass(frozen=True)
class JudgeRequest:
    model: str
    max_tokens: int
    system: str | None  # static per rubric version: the cacheable prefix
    user: str
    schema: dict
    tool_name: str
    tool_description: str
    # The answer format (rubrics/json_answer.j2, schema included) for a JSON-text fallback mode.
    json_instructions: str | None = None


class Judge(Protocol):
    provider: str

    def ask(self, request: JudgeRequest, repair: tuple[JudgeReply, str] | None = None) -> JudgeReply:
        """One judge call (no retries here); ``repair`` = (the invalid reply, the repair text)."""
        ...


def reply_json(raw) -> dict:
    """The JSON object of a judge SDK's raw response (``with_raw_response``): the SDK raised
    for a non-2xx already; a 2xx whose body is not a JSON object (a proxy's HTML page, a
    cut-off body) makes the trace unscored with the reason, never a crash of the job."""
    response = raw.http_response
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise Unscored("unparseable", f"the judge answered HTTP {response.status_code} with a body that is not "
                                      f"a JSON object: {response.text[:200]!r}")
    return body
