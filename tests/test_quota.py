"""Per-segment quota on a real Redis: raises the rate of small segments, never lowers a rate."""
import dataclasses
import datetime as dt

import pytest

from samplers.hashing import is_sampled
from samplers.quota import SegmentQuota
from samplers.selection import select
from samplers.source import TraceRef
from tests.helpers import REPO
from worker.rubrics.rubric import load_rubrics

BASE_RATE = 0.01
DAY0 = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def rubric():
    helpfulness = load_rubrics(REPO / "rubrics")["helpfulness@v1"]
    return dataclasses.replace(helpfulness, sampling_rate=BASE_RATE, segment_key="tenant", min_per_segment_day=5)


def ref(trace_id, day, tenant="tiny", hour=12):
    metadata = {} if tenant is None else {"tenant": tenant}
    return TraceRef(trace_id, "support-chat", "production", (), metadata, DAY0 + dt.timedelta(days=day, hours=hour))


def fill_history(quota, rubric, tenant, per_day, days):
    """Counts ``per_day`` traces a day for ``days`` days before day 0 of the test (day index < 0)."""
    for back in range(1, days + 1):
        day = (DAY0 - dt.timedelta(days=back)).date()
        for start in range(0, per_day, 5000):
            ids = [f"{tenant}-h{back}-{i}" for i in range(start, min(per_day, start + 5000))]
            quota.client.pfadd(f"tracejudge:quota:{rubric.key}:tenant={tenant}:{day.isoformat()}", *ids)


def observed_mean(client, rubric, tenant, days=7):
    """What Redis's HyperLogLogs report for the history (approximate by design, ~1%)."""
    counts = [client.pfcount(f"tracejudge:quota:{rubric.key}:tenant={tenant}:"
                             f"{(DAY0 - dt.timedelta(days=back)).date().isoformat()}") for back in range(1, days + 1)]
    return sum(counts) / len(counts)


def test_a_segment_with_10_traces_a_day_and_per_day_5_gets_about_half_sampled(redis_client, rubric):
    quota = SegmentQuota(redis_client)
    picked_per_day = []
    for day in range(40):
        picked = [i for i in range(10) if select([rubric], ref(f"tiny-{day}-{i}", day), None, quota)]
        picked_per_day.append(len(picked))
    steady = picked_per_day[7:]  # once a week of history exists
    share = sum(steady) / (10 * len(steady))
    assert 0.4 < share < 0.6, picked_per_day
    # The rate itself is exactly per_day / traffic = 5 / 10 once the history is 10 a day.
    assert quota.rate(rubric, ref("tiny-next", 40), BASE_RATE) == pytest.approx(0.5)
    # At the base rate alone such a segment would get about 0.1 judged traces a day.
    plain = sum(1 for day in range(7, 40) for i in range(10) if is_sampled(f"tiny-{day}-{i}", BASE_RATE))
    assert plain < sum(steady) / 5


def test_a_new_segment_gets_its_quota_from_its_second_day_in_scan_order_independent_ways(redis_client, rubric):
    quota = SegmentQuota(redis_client)
    first_day = [quota.rate(rubric, ref(f"new-{i}", 0, tenant="newcomer"), BASE_RATE) for i in range(10)]
    assert first_day == [BASE_RATE] * 10  # no complete day yet: today's partial count never decides
    second_day = [quota.rate(rubric, ref(f"new2-{i}", 1, tenant="newcomer"), BASE_RATE) for i in range(10)]
    day0 = redis_client.pfcount(f"tracejudge:quota:{rubric.key}:tenant=newcomer:{DAY0.date().isoformat()}")
    assert second_day == pytest.approx([min(1.0, 5 / day0)] * 10)  # the same for every trace of the day


def test_a_big_segment_keeps_the_base_rate(redis_client, rubric):
    quota = SegmentQuota(redis_client)
    fill_history(quota, rubric, "huge", 20_000, 7)
    ids = [f"huge-{i}" for i in range(3000)]
    with_quota = [t for t in ids if select([rubric], ref(t, 0, tenant="huge"), None, quota)]
    without = [t for t in ids if select([rubric], ref(t, 0, tenant="huge"), None)]
    assert with_quota == without and 10 < len(without) < 60
    assert quota.rate(rubric, ref("huge-x", 0, tenant="huge"), BASE_RATE) == BASE_RATE


@pytest.mark.parametrize("traffic", [1, 3, 50, 400, 600, 5000])
def test_the_quota_never_lowers_the_rate(redis_client, rubric, traffic):
    quota = SegmentQuota(redis_client)
    fill_history(quota, rubric, f"seg{traffic}", traffic, 7)
    for base in (0.0, 0.001, BASE_RATE, 0.3, 1.0):
        rate = quota.rate(rubric, ref(f"probe-{traffic}", 0, tenant=f"seg{traffic}"), base)
        assert rate >= base and rate <= 1.0
        if base == 0.0:
            assert rate == 0.0  # a rubric at rate 0 is off, quota included
    expected = max(BASE_RATE, min(1.0, 5 / observed_mean(redis_client, rubric, f"seg{traffic}")))
    assert quota.rate(rubric, ref(f"probe2-{traffic}", 0, tenant=f"seg{traffic}"), BASE_RATE) == pytest.approx(expected)
    ids = [f"t{traffic}-{i}" for i in range(2000)]
    base_only = {t for t in ids if is_sampled(t, BASE_RATE)}
    with_quota = {t for t in ids if select([rubric], ref(t, 0, tenant=f"seg{traffic}"), None, quota)}
    assert base_only <= with_quota  # raising a rate only adds traces


def test_traces_outside_any_segment_and_rubrics_without_a_quota_use_the_plain_rate(redis_client, rubric):
    quota = SegmentQuota(redis_client)
    assert quota.rate(rubric, ref("no-tenant", 0, tenant=None), BASE_RATE) == BASE_RATE
    plain = dataclasses.replace(rubric, segment_key=None, min_per_segment_day=0)
    assert quota.rate(plain, ref("t", 0), BASE_RATE) == BASE_RATE
    assert redis_client.keys("tracejudge:quota:*") == []  # nothing counted for either


def test_decisions_are_deterministic_across_replicas_and_rescans(redis_client, rubric):
    fill_history(SegmentQuota(redis_client), rubric, "mid", 40, 7)
    ids = [f"mid-{i}" for i in range(30)]
    first = [bool(select([rubric], ref(t, 0, tenant="mid"), None, SegmentQuota(redis_client))) for t in ids]
    day_key = f"tracejudge:quota:{rubric.key}:tenant=mid:{DAY0.date().isoformat()}"
    counted = redis_client.pfcount(day_key)
    # Another replica, and a re-scan of the same window: the counts do not move, nor the decisions.
    replica = SegmentQuota(redis_client)
    again = [bool(select([rubric], ref(t, 0, tenant="mid"), None, replica)) for t in ids]
    assert first == again
    assert redis_client.pfcount(day_key) == counted and 28 <= counted <= 32  # a re-scan counts nobody twice
    rate = 5 / observed_mean(redis_client, rubric, "mid")  # complete days only, never today's count
    assert first == [is_sampled(t, rate) for t in ids]  # u < effective rate, the contract's hash


def test_rubrics_that_do_not_apply_do_not_count_the_trace(redis_client, rubric):
    from worker.rubrics.rubric import AppliesTo

    only_summaries = dataclasses.replace(rubric, applies_to=AppliesTo(trace_names=("summarize",)))
    assert select([only_summaries], ref("chat-1", 0), None, SegmentQuota(redis_client)) == []
    assert redis_client.keys("tracejudge:quota:*") == []
