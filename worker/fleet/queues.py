"""Read-only views of dramatiq's Redis queues: depth, delayed, in flight, dead letters."""
from __future__ import annotations

import dataclasses
import json
from typing import TypedDict

import redis

from worker.accounting.outcomes import EXHAUSTED
from worker.jobs import JUDGE_QUEUE, RubricKey
from worker.json_types import JSONList
from worker.langfuse_io.scores import score_id_for
from worker.redis_client import as_text

NAMESPACE = "dramatiq"


@dataclasses.dataclass
class QueueDepth:
    ready: int
    unacked: int  # messages taken by a worker and not yet acked (in flight or prefetched)
    delayed: int
    dead: int

    @property
    def outstanding(self) -> int:
        return self.ready + self.unacked + self.delayed


def queue_depth(client: redis.Redis, queue: str = JUDGE_QUEUE) -> QueueDepth:
    base = f"{NAMESPACE}:{queue}"
    pipe = client.pipeline()
    pipe.llen(base)
    pipe.hlen(f"{base}.msgs")
    pipe.hlen(f"{base}.DQ.msgs")
    pipe.zcard(f"{base}.XQ")
    ready, stored, delayed, dead = pipe.execute()
    return QueueDepth(ready, max(0, stored - ready), delayed, dead)


class DeadLetter(TypedDict):
    """A dead-lettered message, as ``tracejudge dead-letters list`` shows it."""

    message_id: str
    args: JSONList | None  # the job's arguments, as its message carries them
    reason: str  # the last line of its last traceback


def dead_letters(client: redis.Redis, queue: str = JUDGE_QUEUE) -> list[DeadLetter]:
    out: list[DeadLetter] = []
    for message_id, raw in client.hgetall(f"{NAMESPACE}:{queue}.XQ.msgs").items():
        message = json.loads(raw)
        traceback = (message.get("options") or {}).get("traceback") or ""
        out.append({"message_id": as_text(message_id), "args": message.get("args"),
                    "reason": traceback.strip().splitlines()[-1] if traceback.strip() else "unknown"})
    return out


def requeue_dead(client: redis.Redis, message_ids: list[str] | None, queue: str = JUDGE_QUEUE) -> int:
    """Move dead letters back to the queue, with a fresh retry budget."""
    xq, xq_msgs = f"{NAMESPACE}:{queue}.XQ", f"{NAMESPACE}:{queue}.XQ.msgs"
    ids = message_ids if message_ids is not None else [as_text(m) for m in client.hkeys(xq_msgs)]
    moved = 0
    for message_id in ids:
        raw = client.hget(xq_msgs, message_id)
        if raw is None:
            continue
        message = json.loads(raw)
        options = message.get("options") or {}
        for key in ("retries", "traceback", "requeue_timestamp"):
            options.pop(key, None)
        message["options"] = options
        pipe = client.pipeline()
        pipe.hset(f"{NAMESPACE}:{queue}.msgs", message_id, json.dumps(message, separators=(",", ":")))
        pipe.rpush(f"{NAMESPACE}:{queue}", message_id)
        pipe.zrem(xq, message_id)
        pipe.hdel(xq_msgs, message_id)
        trace_id, rubric_key = message["args"][:2]
        pipe.hdel(EXHAUSTED, score_id_for(trace_id, *RubricKey.parse(rubric_key)))
        pipe.execute()
        moved += 1
    return moved


def purge_dead(client: redis.Redis, queue: str = JUDGE_QUEUE) -> int:
    count = client.zcard(f"{NAMESPACE}:{queue}.XQ")
    client.delete(f"{NAMESPACE}:{queue}.XQ", f"{NAMESPACE}:{queue}.XQ.msgs")
    return count
