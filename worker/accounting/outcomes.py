"""Counting what happened to each job, exactly once per score id, in Redis.

A job is redelivered after a crash between writing its score and its ack; the ``done``
marker makes the second pass skip the judge call and keeps every counter exact.

A written score (``scored``) is not yet a stored one: it waits in ``UNCONFIRMED`` with the
drift contribution its confirmation adds, until worker/judging/confirm.py reads it back from
Langfuse (``confirmed``, once per score id under its own marker) or gives up (``missing``).

Every outcome is one of five named operations, each one MULTI/EXEC block behind a marker key
(``_once``, the pattern of dramatiq's rate_limits/backends/redis.py): WATCH the marker; set
already, the operation happened before and adds nothing (False); else MULTI, SET the marker
(with its TTL), queue the operation's writes, EXEC. EXEC applies all of them or none, and
only if no other client touched the marker since the WATCH: a concurrent redelivery makes it
fail, and the block runs again and finds the marker set. So a marker never lands without its
counts and drift contribution, nor they without it.

==========  ===========================  =====================  ================================
operation   marker (+ score id)          marker value           writes, besides the marker
==========  ===========================  =====================  ================================
scored      ``tracejudge:done:``         ``scored``             STATS scored, scored:<rubric>,
                                                                the usage fields; UNCONFIRMED
                                                                id -> now; UNCONFIRMED_ITEMS
                                                                id -> the pending record; DEL
                                                                the kept verdict, if named
unscored    ``tracejudge:done:``         ``unscored:<reason>``  STATS not_applicable|unscored,
                                                                unscored:<reason>,
                                                                unscored:<rubric>:<reason>, the
                                                                usage fields; UNSCORED_LOG
                                                                entry (bounded); the unscored
                                                                drift contribution, if any
confirmed   ``tracejudge:confirmed:``    ``confirmed``          STATS confirmed,
                                                                confirmed:<rubric>,
                                                                confirm_wait_ms; the score's
                                                                drift contribution; ZREM
                                                                UNCONFIRMED, HDEL
                                                                UNCONFIRMED_ITEMS
missing     ``tracejudge:confirmed:``    ``missing``            STATS missing, missing:<rubric>;
                                                                MISSING_LOG entry (bounded);
                                                                ZREM/HDEL as confirmed
restored    ``tracejudge:confirmed:``    ``confirmed``          the score's drift contribution
                                                                (and the done marker, on its own)
==========  ===========================  =====================  ================================

A zero STATS increment is not written. Markers live ``DONE_TTL_SECONDS``. A drift contribution is
anything with ``apply(pipe)`` (worker/drift/contribution.py): it queues its writes on the
operation's MULTI block, so it lands exactly when the marker does.

The pending record (UNCONFIRMED_ITEMS, JSON): ``rubric``, ``body`` (the score as written),
``drift`` (the contribution's ``to_json()``), ``written_at``; a re-write adds ``rewrites`` and
``reason``. The release before this one wrote ``ops`` (an opcode list) instead of ``drift``;
worker/judging/confirm.py reads both. A process of that release that meets a ``drift`` record
fails on it (no ``ops``) and leaves it waiting: it is settled by this release, never applied
without its contribution.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Protocol

import redis
from redis.client import Pipeline

from worker.judges.base import Usage
from worker.redis_client import as_text

STATS = "tracejudge:stats"
UNSCORED_LOG = "tracejudge:unscored"
EXHAUSTED = "tracejudge:exhausted"
UNCONFIRMED = "tracejudge:unconfirmed"  # zset: score id -> when it is due for a read-back
UNCONFIRMED_ITEMS = "tracejudge:unconfirmed:items"  # hash: score id -> the pending record (JSON)
MISSING_LOG = "tracejudge:missing"
_DONE = "tracejudge:done:"
_REOPENED = "tracejudge:reopened:"  # + score id + ":" + occasion: that reopening happened
_CONFIRMED = "tracejudge:confirmed:"
DONE_TTL_SECONDS = 90 * 24 * 3600  # a rebuild may only reach back this far (see drift/rebuild.py)
_DONE_TTL = DONE_TTL_SECONDS
_UNSCORED_LOG_MAX = 10_000


class Contribution(Protocol):
    """What an outcome adds to the drift aggregates (worker/drift/contribution.py)."""

    def apply(self, pipe: Pipeline) -> None:
        """Queue the writes on ``pipe``, a pipeline in MULTI mode the outcome executes."""


class PendingContribution(Contribution, Protocol):
    """A contribution that waits in the pending record for its score's confirmation."""

    def to_json(self) -> dict[str, object]:
        """Its JSON-able form, kept under ``drift`` in the pending record."""


class OutcomeLog:
    def __init__(self, client: redis.Redis):
        self.client = client

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

    # --- the operations --------------------------------------------------------------------

    def scored(self, score_id: str, rubric_key: str, usage: Usage, cost: Decimal, calls: int,
               body: Mapping[str, object], on_confirm: PendingContribution, *,
               kept_verdict: str | None = None) -> bool:
        """A score Langfuse accepted: counted as written, and waiting for its read-back in a
        pending record with ``on_confirm``, the drift contribution only its confirmation applies.
        ``kept_verdict``: a key deleted with the count (the verdict kept until it was counted).
        False: counted before (a redelivery), nothing written."""
        fields = {"scored": 1, f"scored:{rubric_key}": 1, **_usage_fields(usage, cost, calls)}
        now = time.time()
        record = json.dumps({"rubric": rubric_key, "body": dict(body), "drift": on_confirm.to_json(),
                             "written_at": now}, default=str)

        def writes(pipe: Pipeline) -> None:
            _count(pipe, fields)
            pipe.zadd(UNCONFIRMED, {score_id: now})
            pipe.hset(UNCONFIRMED_ITEMS, score_id, record)
            if kept_verdict is not None:
                pipe.delete(kept_verdict)

        return self._once(_DONE + score_id, "scored", writes)

    def unscored(self, score_id: str, rubric_key: str, trace_id: str, reason: str, detail: str,
                 usage: Usage, cost: Decimal, calls: int, extra: Contribution | None = None) -> bool:
        """A job that ended without a score, counted with its reason; ``extra``: what it adds to
        the drift aggregates (nothing for "not applicable")."""
        # A rubric that does not apply to a trace (no retrieval step, say) is not a failure.
        total = "not_applicable" if reason == "not_applicable" else "unscored"
        fields = {total: 1, f"unscored:{reason}": 1, f"unscored:{rubric_key}:{reason}": 1,
                  **_usage_fields(usage, cost, calls)}
        entry = json.dumps({"trace_id": trace_id, "rubric": rubric_key, "reason": reason,
                            "detail": detail[:500], "at": time.time()})

        def writes(pipe: Pipeline) -> None:
            _count(pipe, fields)
            _log(pipe, UNSCORED_LOG, entry)
            if extra is not None:
                extra.apply(pipe)

        return self._once(_DONE + score_id, f"unscored:{reason}", writes)

    def confirmed(self, score_id: str, rubric_key: str, contribution: Contribution | None,
                  waited_ms: int = 0) -> bool:
        """Read back from Langfuse: counted, and its drift contribution applied, once per score
        id however often asked — the confirmation marker, the counts, the contribution and the
        end of the wait are one MULTI/EXEC (``_once``). ``waited_ms`` (from its write to its
        read-back) adds to ``confirm_wait_ms``. False: confirmed before (a rebuild, another
        run); then only the wait is settled."""
        fields = {"confirmed": 1, f"confirmed:{rubric_key}": 1, "confirm_wait_ms": waited_ms}

        def writes(pipe: Pipeline) -> None:
            _count(pipe, fields)
            if contribution is not None:
                contribution.apply(pipe)
            _settle(pipe, score_id)

        return self._once(_CONFIRMED + score_id, "confirmed", writes, otherwise=lambda pipe: _settle(pipe, score_id))

    def missing(self, score_id: str, rubric_key: str, reason: str) -> bool:
        """Written but never found on read-back: counted as missing (not as a stored score), its
        wait settled. False: confirmed or missing before; then only the wait is settled."""
        entry = json.dumps({"score_id": score_id, "rubric": rubric_key, "reason": reason[:500], "at": time.time()})

        def writes(pipe: Pipeline) -> None:
            _count(pipe, {"missing": 1, f"missing:{rubric_key}": 1})
            _log(pipe, MISSING_LOG, entry)
            _settle(pipe, score_id)

        return self._once(_CONFIRMED + score_id, "missing", writes, otherwise=lambda pipe: _settle(pipe, score_id))

    def restored(self, score_id: str, contribution: Contribution) -> bool:
        """A score read back from Langfuse (the aggregates rebuild), through the confirmation's
        marker: one already confirmed, live or by an earlier rebuild, adds nothing. The judge
        counters (calls, tokens, cost) are not replayed: they count this deployment's own work."""
        self.client.set(_DONE + score_id, "scored", nx=True, ex=_DONE_TTL)
        return self._once(_CONFIRMED + score_id, "confirmed", contribution.apply)

    # --- the rest ----------------------------------------------------------------------------

    def waiting(self) -> int:
        """Written scores not yet read back."""
        return int(self.client.zcard(UNCONFIRMED))

    def exhausted(self, score_id: str, trace_id: str | None, rubric_key: str, reason: str) -> None:
        self.client.hset(EXHAUSTED, score_id, json.dumps(
            {"trace_id": trace_id, "rubric": rubric_key, "reason": reason[:500], "at": time.time()}))

    def stats(self) -> dict[str, int]:
        stats = {as_text(k): int(v) for k, v in self.client.hgetall(STATS).items()}
        stats["retries_exhausted"] = int(self.client.hlen(EXHAUSTED))
        return stats

    def _once(self, marker: str, value: str, writes: Callable[[Pipeline], None], *,
              otherwise: Callable[[Pipeline], None] | None = None) -> bool:
        """Run ``writes`` and set ``marker`` to ``value`` in one MULTI/EXEC, unless the marker is
        set already: then False, after ``otherwise`` (its own MULTI/EXEC) if given.

        WATCH on the marker makes the check and the block one atomic step: EXEC fails when
        another client changed the marker after the check (a concurrent redelivery), and the
        loop checks again. A connection lost while watching also surfaces as a WatchError
        (redis-py), so an EXEC that did land is found by the next check, never repeated."""
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(marker)  # type: ignore[no-untyped-call]  # (redis-py leaves it untyped)
                    if pipe.exists(marker):
                        pipe.unwatch()
                        if otherwise is not None:
                            pipe.multi()
                            otherwise(pipe)
                            pipe.execute()
                        return False
                    pipe.multi()
                    pipe.set(marker, value, ex=_DONE_TTL)
                    writes(pipe)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue


def _count(pipe: Pipeline, fields: Mapping[str, int]) -> None:
    """HINCRBY STATS by each non-zero field."""
    for field, inc in fields.items():
        if inc:
            pipe.hincrby(STATS, field, int(inc))


def _log(pipe: Pipeline, key: str, entry: str) -> None:
    """LPUSH ``entry`` on the list ``key``, kept to its newest ``_UNSCORED_LOG_MAX``."""
    pipe.lpush(key, entry)
    pipe.ltrim(key, 0, _UNSCORED_LOG_MAX - 1)


def _settle(pipe: Pipeline, score_id: str) -> None:
    """The score waits no more: ZREM UNCONFIRMED, HDEL UNCONFIRMED_ITEMS."""
    pipe.zrem(UNCONFIRMED, score_id)
    pipe.hdel(UNCONFIRMED_ITEMS, score_id)


def _usage_fields(usage: Usage, cost: Decimal, calls: int) -> dict[str, int]:
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cache_read_tokens": usage.cache_read_tokens, "cache_write_tokens": usage.cache_write_tokens,
            "judge_calls": calls, "cost_microusd": int((cost * 1_000_000).to_integral_value())}
