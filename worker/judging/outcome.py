"""What a job carries between its steps: the prepared request, the judge calls' tally, the outcome."""
from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

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


@dataclasses.dataclass
class Prepared:
    """A rendered judge request and the trace facts its score needs: all JSON-able, so a batch
    job can keep it in Redis until its result arrives (hours later, maybe in another process)."""

    score_id: str
    trace_id: str
    rubric_key: str
    request: JudgeRequest
    facts: dict  # score metadata and environment taken from the trace (see pipeline.trace_facts)
    metadata: dict  # the trace's metadata, for drift aggregates
    timestamp: dt.datetime | None


@dataclasses.dataclass
class Tally:
    """Judge calls made for one job so far, paid for whether or not a verdict comes of them."""

    usage: Usage = dataclasses.field(default_factory=Usage)
    calls: int = 0

    def add(self, usage: Usage) -> None:
        self.usage, self.calls = self.usage + usage, self.calls + 1
