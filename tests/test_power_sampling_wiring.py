"""Power-aware sampling wired (issue 27, item 4): the rubric's detection target and budget
(parsing, lint with lines), the rate plan from traffic, SDs and change events (in Redis for every
replica), selection by the plan (deterministic, nested), the inclusion record the worker reads,
and the drift aggregates' weighted sums (Hájek: a boosted child does not bias its parent)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import time

import pytest
import yaml

from samplers import inclusion_log
from samplers import plan as rate_plans
from samplers.hashing import sample_point
from samplers.planner import changed_at, describe, plan_rubric, refresh_plans
from samplers.selection import select, select_with_inclusion
from samplers.source import TraceRef
from samplers.traffic import TrafficCounter, traffic_per_day
from tests.helpers import copy_rubrics
from worker.drift import aggregates as agg
from worker.drift import slice_log, weighted_means
from worker.drift.check import run_check
from worker.drift.contribution import DriftContribution, UnscoredContribution
from worker.drift.weighting import Weighting
from worker.rubrics.doc import Problems
from worker.rubrics.power_spec import PowerSpec
from worker.rubrics.rubric import load_rubrics

TODAY = dt.datetime.now(dt.timezone.utc).date()
YESTERDAY = dt.datetime.combine(TODAY - dt.timedelta(days=1), dt.time(12), dt.timezone.utc)


def _rubrics_with(tmp_path, sampling: dict, budget: dict | None = None, **top):
    root = copy_rubrics(tmp_path, "helpfulness")
    path = root / "helpfulness" / "v1" / "rubric.yaml"
    meta = yaml.safe_load(path.read_text())
    meta["sampling"] = sampling
    if budget is not None:
        meta["budget"] = budget
    meta.update(top)
    path.write_text(yaml.safe_dump(meta, sort_keys=False))
    problems = Problems()
    return load_rubrics(root, problems), problems, path


@pytest.fixture(scope="module")
def base_rubric(tmp_path_factory):
    return load_rubrics(copy_rubrics(tmp_path_factory.mktemp("r"), "helpfulness"))["helpfulness@v1"]


def _power(rubric, rate=0.01, **spec):
    return dataclasses.replace(rubric, sampling_rate=rate, power=PowerSpec(**{
        "drop_points": 10, "within_hours": 72, "daily_budget_judged": 1000, **spec}))


def _ref(trace_id: str, tenant: str | None, when: dt.datetime | None = None) -> TraceRef:
    return TraceRef(trace_id=trace_id, name="support-chat", environment="production", tags=(),
                    metadata={"tenant": tenant} if tenant else {}, timestamp=when or dt.datetime.now(dt.timezone.utc))


# --- the rubric format ---------------------------------------------------------------------------

def test_a_detection_target_budget_priority_and_boost_parse(tmp_path):
    rubrics, problems, _ = _rubrics_with(tmp_path, {
        "rate": 0.02, "detection_target": {"drop_points": 5, "within_hours": 72}, "daily_budget_judged": 2000,
        "priority": {"tenant=acme": 3, "feature=*": 2}, "boost": {"factor": 5, "hours": 24}})
    assert not problems.errors, problems
    power = rubrics["helpfulness@v1"].power
    assert power == PowerSpec(5.0, 72.0, 2000.0, (("tenant=acme", 3.0), ("feature=*", 2.0)), 5.0, 24.0)
    assert power.priority("tenant=acme") == 3 and power.priority("feature=summarize") == 2
    assert power.priority("all") == 1 and power.label == "5 points within 72 h"


def test_a_usd_budget_alone_is_enough_and_the_boost_has_defaults(tmp_path):
    rubrics, problems, _ = _rubrics_with(tmp_path, {"detection_target": {"drop_points": 5, "within_hours": 48}},
                                         budget={"daily_usd": 20})
    assert not problems.errors, problems
    power = rubrics["helpfulness@v1"].power
    assert power is not None and power.daily_budget_judged is None
    assert (power.boost_factor, power.boost_hours) == (10.0, 48.0)


def test_a_rubric_without_a_target_has_no_power_spec_and_the_shipped_ones_keep_theirs(base_rubric):
    assert base_rubric.power is None and base_rubric.sampling_rate == 0.01


@pytest.mark.parametrize("sampling, budget, top, message", [
    ({"detection_target": {"drop_points": 0, "within_hours": 72}, "daily_budget_judged": 10}, None, {},
     "drop_points must be a number in (0, 100]"),
    ({"detection_target": {"drop_points": 5, "within_hours": "3 days"}, "daily_budget_judged": 10}, None, {},
     "within_hours must be a number of hours"),
    ({"detection_target": {"drop_points": 5, "within_hours": 72}}, None, {},
     "a detection target needs a daily budget"),
    ({"detection_target": {"drop_points": 5, "within_hours": 72}, "daily_budget_judged": -3}, None, {},
     "daily_budget_judged must be a positive number"),
    ({"detection_target": "5 points in 3 days", "daily_budget_judged": 10}, None, {},
     "detection_target must be a mapping"),
    ({"detection_target": {"drop_points": 5, "within_hours": 72}, "daily_budget_judged": 10,
      "priority": {"tenant=acme": "high"}}, None, {}, "sampling.priority.tenant=acme must be a number"),
    ({"detection_target": {"drop_points": 5, "within_hours": 72}, "daily_budget_judged": 10,
      "boost": {"factor": 0.5}}, None, {}, "sampling.boost.factor must be a number ≥ 1"),
])
def test_bad_values_are_lint_errors_at_their_line(tmp_path, sampling, budget, top, message):
    rubrics, problems, path = _rubrics_with(tmp_path, sampling, budget, **top)
    assert "helpfulness@v1" not in rubrics
    [error] = [p for p in problems.errors if message in p.message]
    lines = path.read_text().splitlines()
    assert error.line is not None and "sampling" in "\n".join(lines[:error.line]) and error.line > 1
    key = message.split(" ")[0].rsplit(".", 1)[-1]
    if key in ("drop_points", "within_hours", "daily_budget_judged"):
        assert key in lines[error.line - 1], (error, lines[error.line - 1])


def test_target_keys_without_a_target_are_warned_and_ignored(tmp_path):
    rubrics, problems, _ = _rubrics_with(tmp_path, {"rate": 0.01, "daily_budget_judged": 100})
    assert rubrics["helpfulness@v1"].power is None
    assert any("means nothing without sampling.detection_target" in p.message for p in problems)


# --- traffic and the plan ------------------------------------------------------------------------

def _seed_traffic(redis_client, rubric, per_tenant: dict[str, int], day: dt.datetime = YESTERDAY) -> None:
    counter = TrafficCounter(redis_client)
    for tenant, n in per_tenant.items():
        for i in range(n):
            for _ in range(2):  # listed twice (overlap, late pass): counted once
                counter.observe(rubric.key, f"{tenant}-{i}", {"tenant": tenant}, day)
    counter.flush()


def test_traffic_is_counted_once_per_trace_per_stratum_and_averaged_over_active_days(redis_client, base_rubric):
    _seed_traffic(redis_client, base_rubric, {"big": 300, "small": 30})
    _seed_traffic(redis_client, base_rubric, {"big": 100}, YESTERDAY - dt.timedelta(days=1))
    got = traffic_per_day(redis_client, base_rubric.key, TODAY)
    assert got[("all", "tenant=big")] == pytest.approx(200, rel=0.03)  # (300 + 100) / 2 active days
    assert got[("all", "tenant=small")] == pytest.approx(15, rel=0.05)
    assert traffic_per_day(redis_client, "nobody@v1", TODAY) == {}


def test_the_plan_raises_a_small_cell_to_its_target_and_says_why_a_tiny_one_misses(redis_client, base_rubric):
    rubric = _power(base_rubric, rate=0.01)
    _seed_traffic(redis_client, rubric, {"big": 2000, "small": 200, "tiny": 5})
    plan = plan_rubric(redis_client, rubric, time.time())
    cells = {c.segment: c for c in plan.cells}
    assert set(cells) == {"all", "tenant=big", "tenant=small", "tenant=tiny"}
    need = cells["tenant=small"].needed_per_day
    assert cells["tenant=small"].rate == pytest.approx(need / cells["tenant=small"].traffic_per_day, rel=0.05)
    assert cells["tenant=small"].meets_target and cells["all"].meets_target
    assert cells["all"].rate == pytest.approx(0.01)  # met through its children's rates: not raised
    tiny = cells["tenant=tiny"]
    assert not tiny.meets_target and tiny.reason == "traffic" and "traffic floor" in tiny.note
    assert plan.judged_per_day <= 1000
    lines = describe(plan)
    assert "target 10 points within 72 h" in lines[0] and "3 of 4 cells meet it" in lines[0]
    assert any("tenant=tiny" in line and "traffic floor" in line for line in lines)


def test_a_tight_budget_leaves_the_lower_priority_cell_short_with_reason_budget(redis_client, base_rubric):
    rubric = _power(base_rubric, rate=0.001, daily_budget_judged=30, priorities=(("tenant=a", 5.0),))
    _seed_traffic(redis_client, rubric, {"a": 400, "b": 400})
    cells = {c.segment: c for c in plan_rubric(redis_client, rubric, time.time()).cells}
    assert cells["tenant=a"].meets_target and cells["tenant=a"].rate > 0.04
    assert not cells["tenant=b"].meets_target and cells["tenant=b"].reason == "budget"


def test_a_change_event_boosts_its_cell_for_the_boost_hours(redis_client, base_rubric):
    rubric = _power(base_rubric, rate=0.01, boost_factor=3.0, boost_hours=48.0)
    _seed_traffic(redis_client, rubric, {"big": 2000, "small": 200})
    now = time.time()
    cell = agg.cell_key(rubric, "tenant=small")
    pipe = redis_client.pipeline()
    slice_log.write(pipe, (cell,), now - 9 * 86400, "t1", "", 70.0, {"prompt": "answer@1"})
    slice_log.write(pipe, (cell,), now - 3600, "t2", "", 70.0, {"prompt": "answer@2"})
    pipe.execute()
    assert changed_at(slice_log.first_seen(redis_client, cell)) == pytest.approx(now - 3600)
    boosted = {c.segment: c for c in plan_rubric(redis_client, rubric, now).cells}
    later = {c.segment: c for c in plan_rubric(redis_client, rubric, now + 49 * 3600).cells}
    assert boosted["tenant=small"].boosted and not later["tenant=small"].boosted
    assert boosted["tenant=small"].rate == pytest.approx(3 * later["tenant=small"].rate, rel=0.01)
    assert not boosted["tenant=big"].boosted


def test_the_first_value_a_cell_sees_is_not_a_change():
    assert changed_at({("prompt", "a@1"): 100.0, ("release", "r1"): 200.0}) is None
    assert changed_at({("prompt", "a@1"): 100.0, ("prompt", "a@2"): 300.0, ("release", "r1"): 50.0}) == 300.0


def test_plans_are_kept_in_redis_and_refreshed_only_when_due(redis_client, base_rubric):
    rubric = _power(base_rubric)
    _seed_traffic(redis_client, rubric, {"small": 200})
    now = time.time()
    assert [p.rubric_key for p in refresh_plans(redis_client, [rubric, base_rubric], now)] == [rubric.key]
    assert refresh_plans(redis_client, [rubric], now + 60) == []  # not due: the stored plan stands
    stored = rate_plans.load(redis_client, rubric.key)
    assert stored is not None and stored.rates == plan_rubric(redis_client, rubric, now).rates
    assert len(refresh_plans(redis_client, [rubric], now + 901)) == 1


# --- selection by the plan -------------------------------------------------------------------------

def _plan_with(rubric, rates: dict[str, float]) -> rate_plans.RatePlan:
    cells = tuple(rate_plans.PlannedCell(s, r, 100.0, 20.0, 1.0, 10.0, 20.0, 72.0, True, False, None, "")
                  for s, r in rates.items())
    return rate_plans.RatePlan(rubric.key, time.time(), rubric.sampling_rate, "x", 1000.0, 100.0, None, False, cells)


def test_selection_uses_the_max_of_the_cells_rates_and_only_adds_traces_when_a_rate_rises(base_rubric):
    rubric = _power(base_rubric, rate=0.02)
    ids = [f"{i:032x}" for i in range(4000)]
    plain = _plan_with(rubric, {"all": 0.02, "tenant=small": 0.1})
    boosted = _plan_with(rubric, {"all": 0.02, "tenant=small": 0.5})

    def picked(plan, tenant):
        return {t for t in ids if select([rubric], _ref(t, tenant), None, plans={rubric.key: plan})}

    small, small_boosted = picked(plain, "small"), picked(boosted, "small")
    assert small == {t for t in ids if sample_point(t) < 0.1}  # the hash decides; the cell's rate is the threshold
    assert small_boosted == {t for t in ids if sample_point(t) < 0.5} and small < small_boosted
    assert picked(plain, "big") == picked(boosted, "big") == {t for t in ids if sample_point(t) < 0.02}
    assert picked(plain, "small") == small  # the same decision every time, in every replica
    # Without a plan yet: the base rate; a rubric without a target: exactly its rate, no inclusion.
    assert {t for t in ids if select([rubric], _ref(t, "small"), None, plans={})} == \
        {t for t in ids if sample_point(t) < 0.02}
    [(_, inclusion)] = select_with_inclusion([base_rubric], _ref(ids[0], "small"), 1.0)
    assert inclusion is None


def test_the_inclusion_names_p_and_the_cells_whose_own_rate_picked_it(base_rubric):
    rubric = _power(base_rubric, rate=0.02)
    plan = _plan_with(rubric, {"all": 0.02, "tenant=small": 0.3})
    by_child = next(t for t in (f"{i:032x}" for i in range(10_000)) if 0.02 <= sample_point(t) < 0.3)
    by_all = next(t for t in (f"{i:032x}" for i in range(10_000)) if sample_point(t) < 0.02)
    [(_, child)] = select_with_inclusion([rubric], _ref(by_child, "small"), None, plans={rubric.key: plan})
    [(_, both)] = select_with_inclusion([rubric], _ref(by_all, "small"), None, plans={rubric.key: plan})
    assert child == Weighting(0.3, ("tenant=small",))
    assert both == Weighting(0.3, ("all", "tenant=small"))
    # TRACEJUDGE_SAMPLE_RATE overrides the plan: one rate, every cell its own.
    [(_, flat)] = select_with_inclusion([rubric], _ref(by_all, "small"), 0.5, plans={rubric.key: plan})
    assert flat == Weighting(0.5, ("all", "tenant=small"))
    # A rate of 0 switches the rubric off, plan or not.
    assert select([dataclasses.replace(rubric, sampling_rate=0.0)], _ref(by_all, "small"), None,
                  plans={rubric.key: plan}) == []


def test_the_worker_reads_the_samplers_record_and_falls_back_to_the_plan(redis_client, base_rubric):
    rubric = _power(base_rubric, rate=0.02)
    inclusion_log.record(redis_client, rubric.key, "t-1", Weighting(0.25, ("tenant=small",)))
    assert inclusion_log.inclusion_of(redis_client, rubric, "t-1", {"tenant": "small"}, None).as_metadata() == {
        "inclusion_probability": 0.25, "sampled_in": ["tenant=small"]}
    rate_plans.save(redis_client, _plan_with(rubric, {"all": 0.02, "tenant=small": 1.0}))
    fallback = inclusion_log.inclusion_of(redis_client, rubric, "t-2", {"tenant": "small"}, None).as_metadata()
    assert fallback["inclusion_probability"] == 1.0 and "tenant=small" in fallback["sampled_in"]
    assert inclusion_log.inclusion_of(redis_client, base_rubric, "t-1", {}, None) is None


# --- weighted aggregates ---------------------------------------------------------------------------

def _apply(redis_client, contribution) -> None:
    pipe = redis_client.pipeline(transaction=True)
    contribution.apply(pipe)
    pipe.execute()


def test_a_boosted_child_does_not_bias_its_parents_weighted_mean(redis_client, base_rubric):
    """A population of 20,000 traces today: tenant=small (2,000, scoring ~40) boosted to 50%,
    tenant=big (18,000, scoring ~80) at the base 5%. The parent's plain mean of everything judged
    would be ~59; its Hájek mean is the population's, and its unweighted stream (the traces its
    own 5% picked) is a uniform sample of it."""
    rubric = _power(base_rubric, rate=0.05)
    rates = {"small": {"all": 0.05, "tenant=small": 0.5}, "big": {"all": 0.05, "tenant=big": 0.05}}
    now = dt.datetime.now(dt.timezone.utc)
    truth, judged, own_all = [], [], 0
    for i in range(20_000):
        tenant = "small" if i < 2_000 else "big"
        trace = f"{i:032x}"
        score = (40.0 if tenant == "small" else 80.0) + 20 * (sample_point("x" + trace) - 0.5)
        truth.append(score)
        inclusion = Weighting.of(rates[tenant], sample_point(trace))
        if not inclusion.selected:
            continue
        judged.append(score)
        own_all += "all" in inclusion.own
        metadata = {"tenant": tenant, "inclusion_probability": inclusion.probability,
                    "sampled_in": list(inclusion.own)}
        weighting = Weighting.from_metadata(metadata)
        contribution = DriftContribution.of_score(rubric, trace, metadata, now, 1 + score / 25, 0,
                                                  weighting=weighting)
        if i == 0:  # a pending record keeps the weighting across the read-back
            assert DriftContribution.from_json(contribution.to_json()) == contribution
        _apply(redis_client, contribution)
    day = agg.day_of(now)
    rows = agg.read_days(redis_client, agg.cell_key(rubric, "all"), [day])
    true_mean, plain = sum(truth) / len(truth), sum(judged) / len(judged)
    hajek = weighted_means.mean(rows.values())
    assert abs(plain - true_mean) > 10  # what the unweighted mean of every judged trace would say
    assert hajek == pytest.approx(true_mean, abs=1.5)
    row = rows[day]
    # Unweighted: only the traces the parent's own 5% picked (about half of those judged here).
    assert row["n"] == own_all == sum(sample_point(f"{i:032x}") < 0.05 for i in range(20_000)) < len(judged) * 0.6
    assert row["sum"] / row["n"] == pytest.approx(true_mean, abs=3.0)
    small = agg.read_days(redis_client, agg.cell_key(rubric, "tenant=small"), [day])[day]
    assert small["sum"] / small["n"] == pytest.approx(40, abs=1.5)
    # The weekly summary reads the Hájek mean where the cell-days carry weights.
    [all_cell] = [r for r in run_check(redis_client, {rubric.key: rubric}, today=now.date()) if r.segment == "all"]
    assert all_cell.decision.curr_mean == pytest.approx(hajek, abs=0.01)


def test_a_rubric_without_a_target_writes_no_weights_and_reads_as_before(redis_client, base_rubric):
    now = dt.datetime.now(dt.timezone.utc)
    for i, score in enumerate((2, 4, 5)):
        _apply(redis_client, DriftContribution.of_score(base_rubric, f"t{i}", {"tenant": "a"}, now, score, 0))
    row = agg.read_days(redis_client, agg.cell_key(base_rubric, "all"), [agg.day_of(now)])[agg.day_of(now)]
    assert not any(k.startswith("w:") for k in row) and weighted_means.mean([row]) == pytest.approx(200 / 3)


def test_an_unscored_trace_counts_in_its_own_cells_only(base_rubric):
    rubric = _power(base_rubric)
    weighting = Weighting(0.5, ("tenant=small",))
    unscored = UnscoredContribution.of_trace(rubric, {"tenant": "small"}, None, "unparseable", None, weighting)
    assert unscored.cells == (agg.cell_key(rubric, "tenant=small"),)
