"""Strict parsing of the judge's structured answer: raise, never guess a number."""
from __future__ import annotations

import dataclasses

from worker.errors import VerdictError
from worker.judges.base import JudgeReply
from worker.langfuse_io.text import clean
from worker.rubrics.scales import Scale


@dataclasses.dataclass(frozen=True)
class Verdict:
    value: float | str
    reasoning: str
    raw_score: object


def parse_verdict(reply: JudgeReply, scale: Scale) -> Verdict:
    if reply.problem:
        raise VerdictError(reply.problem, reply.detail)
    raw = reply.verdict
    if not isinstance(raw, dict):
        raise VerdictError("unparseable", f"verdict is {type(raw).__name__}, not an object")
    extra = set(raw) - {"reasoning", "score"}
    if extra or "score" not in raw:
        raise VerdictError("unparseable", f"verdict keys {sorted(raw)}; expected reasoning and score")
    reasoning = raw.get("reasoning")
    if not isinstance(reasoning, str) or not reasoning.strip():
        raise VerdictError("unparseable", "verdict has no reasoning")
    # A judge's JSON may escape a lone surrogate; the score write could not encode it.
    return Verdict(scale.score_value(raw["score"]), clean(reasoning.strip()), raw["score"])
