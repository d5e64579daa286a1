"""What every judge provider offers: ask for a structured verdict, and a repair turn."""
from __future__ import annotations

import dataclasses
from typing import Protocol

from worker.errors import Unscored
from worker.json_types import JSONDict, JSONValue


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

    verdict: JSONValue  # the judge's JSON, checked by worker/judging/verdict.py
    usage: Usage
    problem: str | None = None
    detail: str = ""
    # Provider-specific assistant turn (a message of its wire format), replayed when asking for a repair.
    assistant_turn: JSONDict | None = None


@dataclasses.dataclass(frozen=True)
class JudgeRequest:
    model: str
    max_tokens: int
    system: str | None  # static per rubric version: the cacheable prefix
    user: str
    schema: JSONDict  # the verdict's JSON schema
    tool_name: str
    tool_description: str
    # The answer format (rubrics/json_answer.j2, schema included) for a JSON-text fallback mode.
    json_instructions: str | None = None


class Judge(Protocol):
    provider: str

    def ask(self, request: JudgeRequest, repair: tuple[JudgeReply, str] | None = None) -> JudgeReply:
        """One judge call (no retries here); ``repair`` = (the invalid reply, the repair text)."""
        ...


class HTTPResponse(Protocol):
    """The HTTP response under a judge SDK's raw response, as far as ``reply_json`` reads it (the
    SDKs bring their own httpx: ``httpx2``)."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    def json(self) -> object: ...


class RawResponse(Protocol):
    """What a judge SDK's ``with_raw_response`` call returns (anthropic's ``APIResponse``,
    openai's ``LegacyAPIResponse``), as far as ``reply_json`` reads it."""

    @property
    def http_response(self) -> HTTPResponse: ...


def repair_turn(previous: JudgeReply) -> JSONDict:
    """The invalid reply's assistant turn, which a repair request replays (every judge's reply has one)."""
    if previous.assistant_turn is None:
        raise ValueError("a repair needs the invalid reply's assistant turn")
    return previous.assistant_turn


def reply_json(raw: RawResponse) -> JSONDict:
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
