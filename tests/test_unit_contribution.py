"""The drift contribution (worker/drift/contribution.py) and the named outcome transactions that
apply it (worker/accounting/outcomes.py), against a real Redis.

The oracle is the previous release, frozen here: its opcode-list builder and the generic Lua
interpreter that replayed it. The new path must leave Redis byte for byte as the old one did,
and the previous release's pending records must still confirm (a rolling deploy)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time
from decimal import Decimal

import pytest

from tests.helpers import one_trace
from worker.accounting.outcomes import UNCONFIRMED, UNCONFIRMED_ITEMS, OutcomeLog
from worker.drift import aggregates as agg
from worker.drift.contribution import ContributionFormatError, DriftContribution, UnscoredContribution
from worker.drift.legacy_ops import from_legacy_ops, legacy_ops
from worker.judges.base import Usage
from worker.judging.confirm import GRACE_SECONDS, confirm_writes, pending_contribution
from worker.judging.pipeline import judge_one
from worker.rubrics.rubric import load_rubrics
from worker.rubrics.scales import Scale

WHEN = dt.datetime(2026, 3, 4, 15, 30, 12, 345678, tzinfo=dt.timezone.utc)
USAGE = Usage(input_tokens=1000, output_tokens=100)


# -- the previous release, frozen (its aggregates.scored_ops / unscored_ops and outcomes._RECORD) --

def old_scored_ops(rubric, trace_id, metadata, timestamp, value, cost_microusd, only_key=None):
    points = agg.quality_points(rubric, value)
    day = agg.day_of(timestamp)
    member = agg.bottom_member(trace_id, metadata)
    pending_member = f"{member}|{metadata.get('observation_id') or ''}|{points!r}"
    stamp = (timestamp or dt.datetime.now(dt.timezone.utc)).timestamp()
    ops = []
    for segment in agg.segments(metadata, only_key=only_key):
        cell = agg.cell_key(rubric, segment)
        key = agg.day_key(cell, day)
        ops += [("sadd", agg.CELLS, cell, ""), ("zadd", agg.days_key(cell), day, agg.day_epoch(day)),
                ("hincrby", key, "n", 1),
                ("hincrbyfloat", key, "sum", repr(points)),
                ("hincrbyfloat", key, "sumsq", repr(points * points)),
                ("hincrby", key, "cost_microusd", cost_microusd),
                ("keep_lowest", agg.bottom_key(cell, day), member, repr(points)),
                ("zadd", agg.PENDING + cell, pending_member, stamp)]
        if rubric.scale.kind != "numeric":
            ops += [("hincrby", key, "passes", 1 if agg.passed(rubric, value) else 0),
                    ("hincrby", key, f"label:{value}", 1)]
    return ops


def old_unscored_ops(rubric, metadata, timestamp, reason, only_key=None):
    day = agg.day_of(timestamp)
    ops = []
    for segment in agg.segments(metadata, only_key=only_key):
        cell = agg.cell_key(rubric, segment)
        ops += [("sadd", agg.CELLS, cell, ""), ("zadd", agg.days_key(cell), day, agg.day_epoch(day)),
                ("hincrby", agg.day_key(cell, day), "unscored", 1),
                ("hincrby", agg.day_key(cell, day), f"unscored:{reason}", 1)]
    return ops


OLD_RECORD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) == false then return 0 end
for i = 3, #ARGV, 4 do
  local op, key, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'hincrby' then redis.call('HINCRBY', key, a, b)
  elseif op == 'hincrbyfloat' then redis.call('HINCRBYFLOAT', key, a, b)
  elseif op == 'sadd' then redis.call('SADD', key, a)
  elseif op == 'zadd' then redis.call('ZADD', key, b, a)
  elseif op == 'keep_lowest' then
    redis.call('ZADD', key, b, a)
    redis.call('ZREMRANGEBYRANK', key, 20, -1)
  end
end
return 1
"""


def old_apply(client, ops) -> None:
    args: list = ["confirmed", 3600]
    for op in ops:
        args += list(op)
    assert client.register_script(OLD_RECORD)(keys=["old-marker"], args=args) == 1


def dump(client) -> dict:
    """Every key but the markers, exactly as Redis holds it (floats as their stored text)."""
    out = {}
    for key in sorted(k.decode() for k in client.scan_iter(count=1000)):
        if key.startswith(("tracejudge:confirmed:", "tracejudge:done:", "old-marker", "tracejudge:stats")):
            continue
        kind = client.type(key).decode()
        if kind == "hash":
            out[key] = dict(sorted(client.hgetall(key).items()))
        elif kind == "set":
            out[key] = sorted(client.smembers(key))
        elif kind == "zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = client.dump(key)
    return out


@pytest.fixture
def rubrics(test_rubrics):
    numeric = load_rubrics(test_rubrics)["helpfulness@v1"]  # 1..5
    categorical = dataclasses.replace(numeric, name="tone", scale=Scale(
        "categorical", labels=(("great", 1.0), ("ok", 0.5), ("bad", 0.0))))
    boolean = dataclasses.replace(numeric, name="safe", scale=Scale("boolean", 0.0, 1.0, True, False))
    return {"numeric": numeric, "categorical": categorical, "boolean": boolean}


def cases(rubrics):
    """(rubric, trace id, metadata, trace time, value, cost, only_key): every shape a score takes."""
    n, c, b = rubrics["numeric"], rubrics["categorical"], rubrics["boolean"]
    meta = {"feature": "chat", "tenant": "acme"}
    return [
        (n, "t-1", meta, WHEN, 4, 12_345, None),
        (n, "t-2", {"feature": "chat"}, WHEN - dt.timedelta(days=3), 1, 0, None),
        (n, "t-3", {**meta, "observation_id": "obs-7"}, WHEN, 2.5, 99, None),  # an observation score
        (n, None, {**meta, "session_id": "sess-1"}, WHEN, 5, 1, None),  # a session score: no trace
        (n, "t-4", {**meta, "tenant": True, "feature": 1.0}, WHEN, 3, 7, None),  # metadata as JSON gives it
        (n, "t-5", meta, WHEN, 4, 5, "tenant"),  # quota-picked: its tenant's cells only
        (n, "t-6", {"feature": "chat"}, WHEN, 4, 5, "tenant"),  # quota-picked without the key: no cell
        (c, "t-7", meta, WHEN, "ok", 3, None),
        (c, "t-8", meta, WHEN, "great", 3, None),
        (b, "t-9", meta, WHEN, 1, 3, None),  # lower is better: true is the worst
        (b, "t-10", meta, WHEN, 0, 3, None),
        *[(n, f"t-bulk-{i}", {"feature": "bulk"}, WHEN, 1 + i % 5, i, None) for i in range(25)],  # > BOTTOM_N
    ]


def test_a_confirmed_contribution_writes_exactly_what_the_opcode_interpreter_wrote(redis_client, rubrics):
    log = OutcomeLog(redis_client)
    for i, case in enumerate(cases(rubrics)):
        old_apply(redis_client, old_scored_ops(*case))
        redis_client.delete("old-marker")
    before = dump(redis_client)
    hashes = [v for v in before.values() if isinstance(v, dict)]
    assert any(k.startswith(agg.PENDING) for k in before) and any(b"label:ok" in h for h in hashes)
    redis_client.flushdb()
    for i, case in enumerate(cases(rubrics)):
        assert log.confirmed(f"s{i}", case[0].key, DriftContribution.of_score(*case))
    assert dump(redis_client) == before


def test_an_unscored_contribution_writes_what_the_opcode_interpreter_wrote(redis_client, rubrics):
    meta = {"feature": "chat", "tenant": "acme"}
    rubric = rubrics["numeric"]
    old_apply(redis_client, old_unscored_ops(rubric, meta, WHEN, "refused") + old_unscored_ops(
        rubric, meta, WHEN, "no_output", "tenant"))
    before = {k: v for k, v in dump(redis_client).items() if k != "tracejudge:unscored"}
    redis_client.flushdb()
    log = OutcomeLog(redis_client)
    log.unscored("u1", rubric.key, "t-1", "refused", "", USAGE, Decimal(0), 1,
                 UnscoredContribution.of_trace(rubric, meta, WHEN, "refused"))
    log.unscored("u2", rubric.key, "t-2", "no_output", "", USAGE, Decimal(0), 1,
                 UnscoredContribution.of_trace(rubric, meta, WHEN, "no_output", "tenant"))
    after = {k: v for k, v in dump(redis_client).items() if k != "tracejudge:unscored"}
    assert after == before and redis_client.llen("tracejudge:unscored") == 2


def test_the_contribution_survives_its_json_round_trip(rubrics):
    for case in cases(rubrics):
        c = DriftContribution.of_score(*case)
        assert DriftContribution.from_json(json.loads(json.dumps(c.to_json()))) == c
    c = DriftContribution.of_score(*cases(rubrics)[2])
    assert (c.member, c.observation_id, c.pending_member) == ("t-3", "obs-7", "t-3|obs-7|37.5")
    assert DriftContribution.of_score(*cases(rubrics)[6]).cells == ()
    for bad in ({**c.to_json(), "v": 3}, {**c.to_json(), "points": "37.5"}, {**c.to_json(), "cells": "all"},
                {k: v for k, v in c.to_json().items() if k != "day"}, [1, 2], None):
        with pytest.raises(ContributionFormatError):
            DriftContribution.from_json(bad)


def test_a_weighted_contribution_is_format_2_so_a_release_that_reads_only_1_leaves_it(rubrics):
    from worker.drift.weighting import Weighting

    rubric, trace_id, meta, when, value, cost, _ = cases(rubrics)[0]
    c = DriftContribution.of_score(rubric, trace_id, meta, when, value, cost,
                                   weighting=Weighting(0.25, ("tenant=acme",)))
    assert c.to_json()["v"] == 2 and c.weight == 4.0
    assert DriftContribution.from_json(json.loads(json.dumps(c.to_json()))) == c
    assert DriftContribution.of_score(rubric, trace_id, meta, when, value, cost).to_json()["v"] == 1


def test_the_previous_release_opcode_list_reads_back_as_the_same_contribution(rubrics):
    for case in cases(rubrics):
        ops = json.loads(json.dumps([list(op) for op in old_scored_ops(*case)], default=str))
        expected = DriftContribution.of_score(*case)
        got = from_legacy_ops(ops)
        assert (got == expected) if expected.cells else got is None
        if expected.cells:
            assert legacy_ops(got) == ops
    ops = json.loads(json.dumps([list(op) for op in old_scored_ops(*cases(rubrics)[0])]))
    for tampered in (ops[:-1], [*ops, ["del", "tracejudge:stats", "", ""]],
                     [[*op[:3], "99.0"] if op[2] == "sumsq" else op for op in ops], "ops", None, [["zadd"]]):
        with pytest.raises(ContributionFormatError):
            from_legacy_ops(tampered)
    assert pending_contribution({"ops": []}) is None
    assert pending_contribution({"ops": ops}) == DriftContribution.of_score(*cases(rubrics)[0])
    with pytest.raises(ContributionFormatError):
        pending_contribution({"rubric": "x", "body": {}})


def test_the_confirmation_applies_its_contribution_once_however_many_ask_at_once(redis_client, rubrics):
    log = OutcomeLog(redis_client)
    case = cases(rubrics)[0]
    contribution = DriftContribution.of_score(*case)
    assert log.scored("s1", case[0].key, USAGE, Decimal("0.01"), 1, {"id": "s1"}, contribution,
                      kept_verdict="tracejudge:pending-write:s1")
    record = json.loads(redis_client.hget(UNCONFIRMED_ITEMS, "s1"))
    assert "ops" not in record and DriftContribution.from_json(record["drift"]) == contribution
    assert not log.scored("s1", case[0].key, USAGE, Decimal("0.01"), 1, {"id": "s1"}, contribution)
    results, start = [], threading.Barrier(8)

    def confirm() -> None:
        start.wait()
        results.append(log.confirmed("s1", case[0].key, contribution, 1500))

    threads = [threading.Thread(target=confirm) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    stats = log.stats()
    assert (stats["scored"], stats["confirmed"], stats["confirm_wait_ms"]) == (1, 1, 1500)
    all_cell = agg.cell_key(case[0], "all")
    assert agg.read_days(redis_client, all_cell, [contribution.day])[contribution.day]["n"] == 1
    assert redis_client.zcard(UNCONFIRMED) == 0 and not redis_client.hexists(UNCONFIRMED_ITEMS, "s1")
    assert not log.restored("s1", contribution)  # a rebuild after it adds nothing
    assert not log.missing("s1", case[0].key, "late")  # nor does a late give-up
    assert agg.read_days(redis_client, all_cell, [contribution.day])[contribution.day]["n"] == 1


def pending_record_of_a_scored_trace(runtime, langfuse_emu, redis_client, trace_id: str) -> tuple[str, dict]:
    """Judge one trace, its score not read back yet: its score id and pending-confirmation record."""
    langfuse_emu.load_observations(one_trace(trace_id, "Open Settings > Security > Reset password."))
    assert judge_one(runtime, trace_id, "helpfulness@v1").status == "scored"
    langfuse_emu.drain_scores()
    [score_id] = [m.decode() for m in redis_client.zrange(UNCONFIRMED, 0, -1)]
    return score_id, json.loads(redis_client.hget(UNCONFIRMED_ITEMS, score_id))


def test_a_pending_record_of_the_previous_release_confirms_through_its_opcode_list(runtime, langfuse_emu,
                                                                                  redis_client):
    """A rolling deploy: the record was written with ``ops``, this release reads it back."""
    score_id, record = pending_record_of_a_scored_trace(runtime, langfuse_emu, redis_client, "0" * 31 + "7")
    contribution = DriftContribution.from_json(record.pop("drift"))
    record["ops"] = json.loads(json.dumps(legacy_ops(contribution)))  # as the previous release kept it
    redis_client.hset(UNCONFIRMED_ITEMS, score_id, json.dumps(record))

    assert confirm_writes(runtime, now=time.time() + GRACE_SECONDS).counts["confirmed"] == 1
    assert runtime.outcomes.stats()["confirmed"] == 1 and redis_client.zcard(UNCONFIRMED) == 0
    got = drift_keys(redis_client)
    assert any(k.startswith(agg.PENDING) for k in got)
    redis_client.delete(*got)  # the same score's contribution, applied by this release's own path
    assert OutcomeLog(redis_client).restored("another-id", contribution)
    assert drift_keys(redis_client) == got


def drift_keys(client) -> dict:
    return {k: v for k, v in dump(client).items() if k.startswith((agg.PREFIX, agg.PENDING))}


def test_a_record_in_a_format_this_release_does_not_read_waits_for_one_that_does(runtime, langfuse_emu,
                                                                                 redis_client):
    score_id, record = pending_record_of_a_scored_trace(runtime, langfuse_emu, redis_client, "0" * 31 + "8")
    record["drift"]["v"] = 3  # a newer release's (2 is the weighted format)
    redis_client.hset(UNCONFIRMED_ITEMS, score_id, json.dumps(record))
    now = time.time() + GRACE_SECONDS
    assert confirm_writes(runtime, now=now).counts["waiting"] == 1
    assert runtime.outcomes.stats().get("confirmed", 0) == 0 and redis_client.zscore(UNCONFIRMED, score_id) > now
    assert not any(k.startswith(agg.PENDING.encode()) for k in redis_client.scan_iter())
