"""Counting what happened to each job, exactly once per score id, in Redis.

A job is redelivered after a crash between writing its score and its ack; the ``done``
marker makes the second pass skip the judge call and keeps every counter exact.

A written score (``scored``) is not yet a stored one: it waits in ``UNCONFIRMED`` with the
drift aggregates its confirmation adds, until worker/judging/confirm.py reads it back from
Langfuse (``confirmed``, once per score id under its own marker) or gives up (``missing``).
"""
from __future__ import annotations

import json
import time
from decimal import Decimal

import redis

from worker.judges.base import Usage

STATS = "tracejudge:stats"
UNSCORED_LOG = "tracejudge:unscored"
EXHAUSTED = "tracejudge:exhausted"
UNCONFIRMED = "tracejudge:unconfirmed"  # zset: score id -> when it is due for a read-back
UNCONFIRMED_ITEMS = "tracejudge:unconfirmed:items"  # hash: score id -> {rubric, body, ops, written_at}
MISSING_LOG = "tracejudge:missing"
_DONE = "tracejudge:done:"
_REOPENED = "tracejudge:reopened:"  # + score id + ":" + occasion: that reopening happened
_CONFIRMED = "tracejudge:confirmed:"
DONE_TTL_SECONDS = 90 * 24 * 3600  # a rebuild may only reach back this far (see drift/rebuild.py)
_DONE_TTL = DONE_TTL_SECONDS
_UNSCORED_LOG_MAX = 10_000

# KEYS[1] = the done marker; ARGV[1] = its value, ARGV[2] = its ttl; then ops of four
# arguments each (op, key, a, b), applied only when the marker was new: exactly once per score id.
_RECORD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) == false then return 0 end
for i = 3, #ARGV, 4 do
  local op, key, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'hincrby' then redis.call('HINCRBY', key, a, b)
  elseif op == 'hincrbyfloat' then redis.call('HINCRBYFLOAT', key, a, b)
  elseif op == 'sadd' then redis.call('SADD', key, a)
  elseif op == 'zadd' then redis.call('ZADD', key, b, a)
  elseif op == 'zrem' then redis.call('ZREM', key, a)
  elseif op == 'hset' then redis.call('HSET', key, a, b)
  elseif op == 'hdel' then redis.call('HDEL', key, a)
  elseif op == 'del' then redis.call('DEL', key)
  elseif op == 'lpush' then
    redis.call('LPUSH', key, a)
    redis.call('LTRIM', key, 0, tonumber(b) - 1)
  elseif op == 'keep_lowest' then
    redis.call('ZADD', key, b, a)
    redis.call('ZREMRANGEBYRANK', key, 20, -1)  -- the 20 lowest stay
  end
end
return 1
"""

Op = tuple[str, str, object, object]


class OutcomeLog:
    def __init__(self, client: redis.Redis):
        self.client = client
        self._record = client.register_script(_RECORD)

    def is_done(self, score_id: str) -> bool:
        return bool(self.client.exists(_DONE + score_id))

    def reopen(self, score_id: str, occasion: str) -> bool:
        """Lift a score id's done marker once per ``occasion`` (a resumed session's judgement N),
        so that verdict is counted too; the confirmation marker stays. False when that occasion
        reopened it already (a redelivery), which then finds the marker set and is skipped."""
        if not self.client.set(f"{_REOPENED}{score_id}:{occasion}", 1, nx=True, ex=_DONE_TTL):
            return False
        self.client.delete(_DONE + score_id)
        return True

    def done_and_get(self, score_id: str, key: str) -> tuple[bool, bytes | None]:
        """``is_done`` and the value at ``key`` (a kept verdict), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(_DONE + score_id)
        pipe.get(key)
        done, value = pipe.execute()
        return bool(done), value

    def scored(self, score_id: str, rubric_key: str, usage: Usage, cost: Decimal, calls: int,
               body: dict, on_confirm: list[Op] = (), also: list[Op] = ()) -> bool:
        """A score Langfuse accepted: counted as written, and waiting for its read-back with the
        ops (drift aggregates) that only its confirmation applies; ``also``: ops applied with the
        count (in its round trip, and only when it counts)."""
        fields = {"scored": 1, f"scored:{rubric_key}": 1, **_usage_fields(usage, cost, calls)}
        now = time.time()
        item = json.dumps({"rubric": rubric_key, "body": body, "ops": [list(op) for op in on_confirm],
                           "written_at": now}, default=str)
        waiting = [("zadd", UNCONFIRMED, score_id, now), ("hset", UNCONFIRMED_ITEMS, score_id, item), *also]
        return self._apply(score_id, "scored", fields, None, waiting)

    def confirmed(self, score_id: str, rubric_key: str, ops: list, waited_ms: int = 0) -> bool:
        """Read back from Langfuse: counted and aggregated once per score id, however often asked;
        ``waited_ms`` (from its write to its read-back) adds to ``confirm_wait_ms``."""
        settle = [("zrem", UNCONFIRMED, score_id, ""), ("hdel", UNCONFIRMED_ITEMS, score_id, "")]
        fields = {"confirmed": 1, f"confirmed:{rubric_key}": 1, "confirm_wait_ms": waited_ms}
        applied = self._apply(score_id, "confirmed", fields, None, [*map(tuple, ops), *settle], marker=_CONFIRMED)
        if not applied:  # confirmed before (a rebuild, another run): only settle the wait
            self.client.zrem(UNCONFIRMED, score_id)
            self.client.hdel(UNCONFIRMED_ITEMS, score_id)
        return applied

    def missing(self, score_id: str, rubric_key: str, reason: str) -> bool:
        """Written but never found on read-back: counted as missing (not as a stored score)."""
        settle = [("zrem", UNCONFIRMED, score_id, ""), ("hdel", UNCONFIRMED_ITEMS, score_id, ""),
                  ("lpush", MISSING_LOG, json.dumps({"score_id": score_id, "rubric": rubric_key,
                                                     "reason": reason[:500], "at": time.time()}), _UNSCORED_LOG_MAX)]
        return self._apply(score_id, "missing", {"missing": 1, f"missing:{rubric_key}": 1}, None, settle,
                           marker=_CONFIRMED)

    def waiting(self) -> int:
        """Written scores not yet read back."""
        return self.client.zcard(UNCONFIRMED)

    def unscored(self, score_id: str, rubric_key: str, trace_id: str, reason: str, detail: str,
                 usage: Usage, cost: Decimal, calls: int, extra: list[Op] = ()) -> bool:
        # A rubric that does not apply to a trace (no retrieval step, say) is not a failure.
        total = "not_applicable" if reason == "not_applicable" else "unscored"
        fields = {total: 1, f"unscored:{reason}": 1, f"unscored:{rubric_key}:{reason}": 1,
                  **_usage_fields(usage, cost, calls)}
        entry = json.dumps({"trace_id": trace_id, "rubric": rubric_key, "reason": reason,
                            "detail": detail[:500], "at": time.time()})
        return self._apply(score_id, f"unscored:{reason}", fields, entry, extra)

    def restored(self, score_id: str, extra: list[Op]) -> bool:
        """A score read back from Langfuse (the aggregates rebuild), through the confirmation's
        marker: one already confirmed, live or by an earlier rebuild, adds nothing. The judge
        counters (calls, tokens, cost) are not replayed: they count this deployment's own work."""
        self.client.set(_DONE + score_id, "scored", nx=True, ex=_DONE_TTL)
        return self._apply(score_id, "confirmed", {}, None, extra, marker=_CONFIRMED)

    def exhausted(self, score_id: str, trace_id: str, rubric_key: str, reason: str) -> None:
        self.client.hset(EXHAUSTED, score_id, json.dumps(
            {"trace_id": trace_id, "rubric": rubric_key, "reason": reason[:500], "at": time.time()}))

    def _apply(self, score_id: str, value: str, fields: dict, entry: str | None, extra, *,
               marker: str = _DONE) -> bool:
        args: list = [value, _DONE_TTL]
        for field, inc in fields.items():
            if inc:
                args += ["hincrby", STATS, field, int(inc)]
        if entry is not None:
            args += ["lpush", UNSCORED_LOG, entry, _UNSCORED_LOG_MAX]
        for op in extra:
            args += list(op)
        return bool(self._record(keys=[marker + score_id], args=args))

    def stats(self) -> dict[str, int]:
        raw = self.client.hgetall(STATS)
        stats = {k.decode(): int(v) for k, v in raw.items()}
        stats["retries_exhausted"] = self.client.hlen(EXHAUSTED)
        return stats


def _usage_fields(usage: Usage, cost: Decimal, calls: int) -> dict[str, int]:
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cache_read_tokens": usage.cache_read_tokens, "cache_write_tokens": usage.cache_write_tokens,
            "judge_calls": calls, "cost_microusd": int((cost * 1_000_000).to_integral_value())}
