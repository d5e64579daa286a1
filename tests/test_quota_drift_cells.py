"""A trace picked only because its segment's quota raised the rate counts in that segment's drift
cells alone: in the all-traffic and feature cells it would over-weight small segments."""
from __future__ import annotations

import dataclasses
import itertools

from samplers.hashing import is_sampled
from tests.helpers import confirm_all, one_trace
from worker.drift import aggregates as agg
from worker.judging.pipeline import judge_one


def _cells_of(redis_client, trace_id: str) -> set[str]:
    """The segments whose bottom-traces list holds this trace (every scored trace enters them)."""
    out = set()
    for key in redis_client.scan_iter(agg.PREFIX + "bottom:*"):
        if redis_client.zscore(key, trace_id) is not None:
            out.add(key.decode().split("|", 3)[3].rsplit(":", 1)[0])
    return out


def test_a_quota_picked_trace_counts_only_in_its_segment_cells(runtime, langfuse_emu, redis_client):
    key = "helpfulness@v1"
    runtime.rubrics[key] = dataclasses.replace(runtime.rubrics[key], segment_key="tenant", min_per_segment_day=20)
    ids = (f"{i:032x}" for i in itertools.count(1))
    by_quota = next(t for t in ids if not is_sampled(t, 0.01))
    by_base = next(t for t in ids if is_sampled(t, 0.01))
    for trace_id in (by_quota, by_base):
        langfuse_emu.load_observations(one_trace(trace_id, "Open Settings > Security > Reset password."))
        assert judge_one(runtime, trace_id, key).status == "scored"
    confirm_all(runtime)  # drift counts a score once Langfuse returned it
    assert _cells_of(redis_client, by_quota) == {"tenant=acme", "feature=support-chat|tenant=acme"}
    assert _cells_of(redis_client, by_base) == {"all", "feature=support-chat", "tenant=acme",
                                                "feature=support-chat|tenant=acme"}
    flags = {s["traceId"]: s["metadata"]["sampled_by_quota"] for s in langfuse_emu.scores()}
    assert flags == {by_quota: True, by_base: False}
