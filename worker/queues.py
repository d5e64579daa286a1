"""Read-only views of dramatiq's Redis queues: depth, delayed, in flight, dead letters."""
from __future__ import annotations

import dataclasses
import json

import redis

from worker.broker import JUDGE_QUEUE

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


def dead_letters(client: redis.Redis, queue: str = JUDGE_QUEUE) -> list[dict]:
    out = []
    for message_id, raw in client.hgetall(f"{NAMESPACE}:{queue}.XQ.msgs").items():
        message = json.loads(raw)
        traceback = (message.get("options") or {}).get("traceback") or ""
        out.append({"message_id": message_id.decode(), "args": message.get("args"),
                    "reason": traceback.strip().splitlines()[-1] if traceback.strip() else "unknown"})
    return out
