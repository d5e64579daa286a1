"""Power-aware sampling end to end (issue 27, item 4): a rubric states "10 points within 72 h"
and a budget; the plan (from yesterday's traffic and a fresh prompt version in one tenant) raises
and boosts that tenant's rate; a sampler pass over the emulator picks exactly the traces the hash
puts under each cell's rate; the worker judges them, the read-back confirms them, and the drift
aggregates weight every score by 1/p: the all-traffic cell's Hájek mean is the population's,
where the plain mean of the judged traces is far off. `status` and the report show the plan."""
from __future__ import annotations

import dataclasses
import datetime as dt
import time

import pytest

from samplers import plan as rate_plans
from samplers.hashing import sample_point
from samplers.traffic import TrafficCounter
from tests.helpers import drain, one_trace, sampler_for, utc
from worker.cli.status import render_text, status_report
from worker.drift import aggregates as agg
from worker.drift import slice_log, weighted_means
from worker.report.data import gather
from worker.report.page import render
from worker.rubrics.power_spec import PowerSpec

QUALITY = {"big": 0.75, "small": 0.25}  # the judge emulator's verdicts: 4 and 2 on 1..5, 75 and 25 points
POINTS = {"big": 75.0, "small": 25.0}


def _traces(tenant: str, n: int, start: int) -> tuple[list[dict], dict[str, str]]:
    observations, tenants = [], {}
    for i in range(start, start + n):
        trace_id = f"{i:032x}"
        [root] = one_trace(trace_id, f"Go to Settings > Security. [[quality:{QUALITY[tenant]:.2f}]]", minutes_ago=30)
        root["metadata"] = {"tenant": tenant}
        observations.append(root)
        tenants[trace_id] = tenant
    return observations, tenants


@pytest.mark.slow
def test_a_boosted_targeted_cell_is_sampled_at_its_rate_and_the_parent_mean_is_weighted(
        settings, runtime, broker, redis_client, langfuse_emu):
    key = "helpfulness@v1"
    rubric = dataclasses.replace(runtime.rubrics[key], sampling_rate=0.05, power=PowerSpec(
        10.0, 72.0, daily_budget_judged=1000.0, boost_factor=2.0, boost_hours=48.0))
    runtime.rubrics[key] = rubric
    sampler = sampler_for(settings, runtime, broker)
    sampler.rubrics = [rubric]

    # Yesterday's traffic, as the sampler counted it: 2,000 traces of tenant big, 200 of small.
    yesterday = dt.datetime.combine(dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1), dt.time(12),
                                    dt.timezone.utc)
    counter = TrafficCounter(redis_client)
    for tenant, n in (("big", 2000), ("small", 200)):
        for i in range(n):
            counter.observe(rubric.key, f"y-{tenant}-{i}", {"tenant": tenant}, yesterday)
    counter.flush()
    # A new prompt version first seen in tenant small an hour ago (the slice log's first-seen values).
    small_cell = agg.cell_key(rubric, "tenant=small")
    pipe = redis_client.pipeline()
    slice_log.write(pipe, (small_cell,), time.time() - 9 * 86400, "old", "", 70.0, {"prompt": "answer@12"})
    slice_log.write(pipe, (small_cell,), time.time() - 3600, "new", "", 70.0, {"prompt": "answer@13"})
    pipe.execute()

    [plan] = sampler.refresh_plans()
    rates = plan.rates
    small = next(c for c in plan.cells if c.segment == "tenant=small")
    assert small.boosted and small.meets_target
    assert rates["tenant=small"] == pytest.approx(2 * small.needed_per_day / small.traffic_per_day, rel=0.05)
    assert rates["all"] == rates["tenant=big"] == pytest.approx(0.05)
    assert rate_plans.load(redis_client, key) == plan  # every replica reads the same plan

    big_obs, big = _traces("big", 2000, 0)
    small_obs, small_ids = _traces("small", 800, 10_000)
    tenants = {**big, **small_ids}
    langfuse_emu.load_observations(big_obs + small_obs)
    report = sampler.run_pass(utc(hours=2), utc(seconds=0))
    expected = {t for t, tenant in tenants.items()
                if sample_point(t) < (rates["tenant=small"] if tenant == "small" else 0.05)}
    assert report.enqueued == len(expected)
    drain(broker, redis_client, threads=16, timeout=240)

    scores = {s["traceId"]: s for s in langfuse_emu.scores() if s["name"] == "helpfulness"}
    assert set(scores) == expected  # the hash decides; each cell's rate is the threshold
    for trace_id, score in scores.items():
        meta = score["metadata"]
        p = rates["tenant=small"] if tenants[trace_id] == "small" else 0.05
        assert meta["inclusion_probability"] == pytest.approx(p)
        assert ("all" in meta["sampled_in"]) == (sample_point(trace_id) < 0.05)

    day = agg.day_of(utc(minutes=30))
    [row] = agg.read_days(redis_client, agg.cell_key(rubric, "all"), [day]).values()
    weights = {t: 1 / scores[t]["metadata"]["inclusion_probability"] for t in scores}
    hajek = sum(w * POINTS[tenants[t]] for t, w in weights.items()) / sum(weights.values())
    truth = sum(POINTS[t] for t in tenants.values()) / len(tenants)
    plain = sum(POINTS[tenants[t]] for t in scores) / len(scores)
    assert weighted_means.mean([row]) == pytest.approx(hajek)
    assert abs(hajek - truth) < 4 < 10 < abs(plain - truth), (hajek, truth, plain)
    # The parent's unweighted stream is its own 5%: a uniform sample of all traffic.
    assert row["n"] == sum(sample_point(t) < 0.05 for t in scores)

    status = status_report(settings, redis_client, {key: rubric})
    cells = {c["segment"]: c for c in status["sampling_plans"][key]["cells"]}  # type: ignore[union-attr]
    assert cells["tenant=small"]["rate"] == pytest.approx(rates["tenant=small"]) and cells["tenant=small"]["boosted"]
    assert "sampling plan: helpfulness@v1: target 10 points within 72 h" in render_text(status)
    page = render(gather(redis_client, {key: rubric}))
    assert "Sampling plan" in page and "tenant=small: rate" in page
