"""The batch store in Redis: every deferred request lives here from the job's ack to its outcome.

    tracejudge:batch:items              hash  score id -> item (request, trace facts, usage so far)
    tracejudge:batch:pending:<provider> set   score ids waiting for the next submission
    tracejudge:batch:submitted          hash  provider batch id -> {provider, ids, submitted_at}

An item leaves ``items`` only after its outcome is recorded (scored or unscored), and a batch
id is stored in the same transaction that moves its items out of ``pending``, so a crash at
any point leaves every request either pending, in a known batch, or finished: never lost.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from typing import TypedDict

import redis

from worker.json_types import JSONDict
from worker.judges.base import JudgeReply, JudgeRequest, Usage

ITEMS = "tracejudge:batch:items"
PENDING = "tracejudge:batch:pending:"
SUBMITTED = "tracejudge:batch:submitted"
PROVIDERS = ("anthropic", "openai")

# Adds an item and marks it pending only when it is new: a redelivered job defers nothing twice.
_DEFER = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


class Repair(TypedDict):
    """An item's repair turn: the judge's invalid answer and the repair request to send with it."""

    turn: JSONDict | None  # the provider's assistant turn (JudgeReply.assistant_turn)
    text: str


class SubmittedBatch(TypedDict):
    """A submitted batch's record in ``SUBMITTED``."""

    provider: str
    ids: list[str]
    submitted_at: float


@dataclasses.dataclass
class Item:
    score_id: str
    trace_id: str | None  # None for a session rubric's request
    rubric_key: str
    provider: str
    request: JSONDict  # JudgeRequest fields
    facts: JSONDict  # the score's facts (worker/judging/outcome.py ScoreFacts.to_json)
    metadata: JSONDict  # the trace's metadata, for drift aggregates
    timestamp: str | None
    tool: bool = False  # OpenAI: the forced-tool form instead of json_schema
    usage: list[int] = dataclasses.field(default_factory=lambda: [0, 0, 0, 0])
    calls: int = 0
    repair: Repair | None = None
    tries: int = 0  # failed submissions of the current request (errored, expired, canceled)
    batch_id: str | None = None
    # The budget held back for this request while it is in a batch: [UTC day, rubric, micro-USD]
    # (worker/accounting/budget.py Reservation), released once its result is recorded.
    reserved: list[str | int] | None = None

    @property
    def judge_request(self) -> JudgeRequest:
        return JudgeRequest(**self.request)

    @property
    def repair_arg(self) -> tuple[JudgeReply, str] | None:
        if self.repair is None:
            return None
        return JudgeReply(None, Usage(), assistant_turn=self.repair["turn"]), self.repair["text"]

    @property
    def usage_total(self) -> Usage:
        return Usage(*self.usage)

    @property
    def trace_time(self) -> dt.datetime | None:
        return dt.datetime.fromisoformat(self.timestamp) if self.timestamp else None

    def dumps(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def loads(cls, raw: bytes | str) -> "Item":
        return cls(**json.loads(raw))


class BatchStore:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._defer = client.register_script(_DEFER)

    def defer(self, item: Item) -> bool:
        """Keep a prepared job's request (worker.judging.pipeline.batch_item) for the next batch;
        False if already kept."""
        return bool(self._defer(keys=[ITEMS, PENDING + item.provider], args=[item.score_id, item.dumps()]))

    def item(self, score_id: str) -> Item | None:
        raw = self.client.hget(ITEMS, score_id)
        return Item.loads(raw) if raw else None

    def pending_ids(self, provider: str, limit: int) -> list[str]:
        # redis-py types SRANDMEMBER's members as int | bytes | str; this client returns bytes.
        members: list[bytes] | None = self.client.srandmember(PENDING + provider, limit)  # type: ignore[assignment]
        return sorted(m.decode() for m in members or [])

    def pending_count(self, provider: str) -> int:
        return self.client.scard(PENDING + provider)

    def mark_submitted(self, batch_id: str, provider: str, items: list[Item]) -> None:
        """One transaction: the batch id is known before any item leaves ``pending``."""
        pipe = self.client.pipeline(transaction=True)
        record: SubmittedBatch = {"provider": provider, "ids": [i.score_id for i in items],
                                  "submitted_at": time.time()}
        pipe.hset(SUBMITTED, batch_id, json.dumps(record))
        for item in items:
            item.batch_id = batch_id
            pipe.hset(ITEMS, item.score_id, item.dumps())
        pipe.srem(PENDING + provider, *[i.score_id for i in items])
        pipe.execute()

    def requeue(self, item: Item) -> None:
        """Back to pending for the next submission (a repair turn, or a retry of a failed one)."""
        item.batch_id = None
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(ITEMS, item.score_id, item.dumps())
        pipe.sadd(PENDING + item.provider, item.score_id)
        pipe.execute()

    def forget(self, score_id: str) -> None:
        """Only once the item's outcome is recorded."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(ITEMS, score_id)
        for provider in PROVIDERS:
            pipe.srem(PENDING + provider, score_id)
        pipe.execute()

    def submitted(self) -> dict[str, SubmittedBatch]:
        # redis-py types HGETALL's fields as bytes | str; this client (no decode_responses) returns bytes.
        records: dict[bytes, bytes] = self.client.hgetall(SUBMITTED)  # type: ignore[assignment]
        return {k.decode(): json.loads(v) for k, v in records.items()}

    def batch_done(self, batch_id: str) -> None:
        self.client.hdel(SUBMITTED, batch_id)

    def counts(self) -> dict[str, int]:
        return {"items": self.client.hlen(ITEMS),
                **{f"pending_{p}": self.pending_count(p) for p in PROVIDERS},
                "batches_submitted": self.client.hlen(SUBMITTED)}
