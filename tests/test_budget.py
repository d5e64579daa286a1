"""Daily budget caps: spend counted once, a backlog stops at the cap, the rest is parked (never
dropped, never judged), one alert a day, and a raised cap or a new day judges the rest once."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from samplers.sampler import Sampler
from tests.helpers import drain, hand_built_runtime, make_env, one_trace, sampler_for, score_pairs, whole_window
from worker.accounting.budget import ALL, Budget
from worker.alerts import outbox
from worker.fleet.scheduler import budget_tick
from worker.jobs import judge_message
from worker.runtime import set_runtime

KEY = "helpfulness@v1"
# A fixed UTC day for tests that give Budget a time: they pass on any date and across midnight.
DAY = "2026-11-10"
NOON = dt.datetime(2026, 11, 10, 12, tzinfo=dt.timezone.utc).timestamp()


class AlertReceiver:
    """A webhook endpoint that keeps what it is sent."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = AlertReceiver()
    yield r
    r.close()


def seed(langfuse_emu, n: int) -> list[str]:
    ids = [f"budget-trace-{i:03d}" for i in range(n)]
    observations = []
    for trace_id in ids:
        observations += one_trace(trace_id, "Open Settings, choose Security, then Reset password.")
    langfuse_emu.load_observations(observations)
    return ids


def test_spend_is_counted_once_per_score_id_in_todays_utc_bucket(redis_client):
    budget = Budget(redis_client, global_cap_usd=None)
    assert budget.record("score-a", "helpfulness", Decimal("0.0125"), now=NOON)
    assert not budget.record("score-a", "helpfulness", Decimal("0.0125"), now=NOON)  # a redelivered job
    assert budget.record("score-b", "groundedness", Decimal("0.002"), now=NOON)
    assert not budget.record("score-c", "helpfulness", Decimal(0), now=NOON)  # nothing spent, nothing counted
    assert budget.spent(DAY) == {ALL: 0.0145, "helpfulness": 0.0125, "groundedness": 0.002}
    yesterday = NOON - 86400
    budget.record("score-d", "helpfulness", Decimal("1"), now=yesterday)
    assert budget.spent(DAY)[ALL] == 0.0145


def test_a_rubric_is_held_when_its_next_typical_job_would_cross_a_cap(redis_client, runtime):
    rubric = dataclasses.replace(runtime.rubrics[KEY], daily_budget_usd=0.05)
    budget = Budget(redis_client, global_cap_usd=1.0)
    for i in range(3):
        budget.record(f"s{i}", "helpfulness", Decimal("0.01"), now=NOON)
    assert budget.state(rubric, budget.day_fields(DAY)).held_by is None  # 0.03 spent + 0.01 typical fits under 0.05
    budget.record("s3", "helpfulness", Decimal("0.015"), now=NOON)
    state = budget.state(rubric, budget.day_fields(DAY))
    assert state.spent_usd < 0.05 < state.spent_usd + state.typical_job_usd
    assert state.held_by == "rubric" and state.left_usd == pytest.approx(0.005)
    assert budget.state(dataclasses.replace(rubric, daily_budget_usd=None), budget.day_fields(DAY)).held_by is None
    zero_cap = Budget(redis_client, global_cap_usd=0.0)
    assert zero_cap.state(rubric, zero_cap.day_fields(DAY)).held_by == "global"  # a cap of 0 judges nothing


def test_backlog_stops_at_the_cap_rest_is_parked_and_a_raised_cap_judges_it_exactly_once(
        settings, runtime, broker, redis_client, langfuse_emu, judge_emu, receiver):
    trace_ids = seed(langfuse_emu, 12)
    # Each change of settings is a new runtime for the worker (its budget takes its caps from
    # them), installed in place of the fixture's, which puts None back at the end.
    rt = hand_built_runtime(settings, redis_client, alert_webhook_url=receiver.url)
    set_runtime(rt)
    broker.enqueue(judge_message(trace_ids[0], KEY))
    drain(broker, redis_client, threads=1)
    one_job = Budget(redis_client, None).spent()[ALL]
    assert one_job > 0

    cap = 3.5 * one_job
    rt = hand_built_runtime(rt.settings, redis_client, daily_budget_usd=cap)
    set_runtime(rt)
    for trace_id in trace_ids[1:]:
        broker.enqueue(judge_message(trace_id, KEY))
    drain(broker, redis_client, threads=1)

    budget = Budget(redis_client, cap)
    spent = budget.spent()[ALL]
    judged = {t for t, _ in score_pairs(langfuse_emu.scores())}
    parked = budget.parked()[KEY]
    assert spent <= cap, "the backlog went past the cap"
    assert spent + budget.typical_job_usd("helpfulness") > cap, "judging stopped before the cap was near"
    assert 1 < len(judged) < len(trace_ids)
    assert len(judged) + parked == len(trace_ids), "a job was lost or judged while parked"
    assert rt.outcomes.stats()["scored"] == len(judged)
    assert judge_emu.stats()["total_requests"] == len(judged), "a parked job reached the judge"
    alerts = [a for a in receiver.received if a["kind"] == "budget_held"]
    assert len(alerts) == 1 and alerts[0]["rubric"] == "helpfulness" and alerts[0]["held_by"] == "global"
    assert not redis_client.hlen(outbox.OUTBOX)

    # Still held: the scheduler's tick leaves them parked.
    held_sampler = sampler_for(rt.settings, rt, broker)
    assert budget_tick(held_sampler, rt) == 0 and budget.parked()[KEY] == parked

    rt = hand_built_runtime(rt.settings, redis_client, daily_budget_usd=100.0)
    set_runtime(rt)
    assert budget_tick(sampler_for(rt.settings, rt, broker), rt) == parked
    drain(broker, redis_client, threads=4)
    pairs = score_pairs(langfuse_emu.scores())
    assert len(pairs) == len(set(pairs)) == len(trace_ids)
    assert {t for t, _ in pairs} == set(trace_ids)
    assert rt.outcomes.stats()["scored"] == len(trace_ids)
    assert sum(Budget(redis_client, None).parked().values()) == 0
    assert len([a for a in receiver.received if a["kind"] == "budget_held"]) == 1


def test_jobs_in_flight_together_do_not_overshoot_the_cap(settings, runtime, broker, redis_client, langfuse_emu,
                                                          judge_emu):
    judge_emu.configure(latency_ms=200)  # eight slow calls at once: all would pass a plain check
    trace_ids = seed(langfuse_emu, 30)
    broker.enqueue(judge_message(trace_ids[0], KEY))
    drain(broker, redis_client, threads=1)
    one_job = Budget(redis_client, None).spent()[ALL]
    cap = 5.5 * one_job
    set_runtime(hand_built_runtime(settings, redis_client, daily_budget_usd=cap))  # its budget has the cap
    for trace_id in trace_ids[1:]:
        broker.enqueue(judge_message(trace_id, KEY))
    drain(broker, redis_client, threads=8)
    budget = Budget(redis_client, cap)
    judged = {t for t, _ in score_pairs(langfuse_emu.scores())}
    assert budget.spent()[ALL] <= cap
    assert len(judged) + budget.parked()[KEY] == len(trace_ids)
    assert budget.day_fields()["reserved:*"] == 0  # every reservation was given back


def test_sampler_holds_back_a_rubric_over_its_cap_and_alerts_once_a_day(
        settings, runtime, broker, redis_client, langfuse_emu, receiver):
    seed(langfuse_emu, 5)
    settings = dataclasses.replace(settings, sample_rate=1.0, alert_webhook_url=receiver.url)
    rubrics = dict(runtime.rubrics)
    rubrics[KEY] = dataclasses.replace(rubrics[KEY], daily_budget_usd=0.01)
    Budget(redis_client, None).record("earlier-job", "helpfulness", Decimal("0.0101"))
    sampler = Sampler(settings, rubrics, sampler_for(settings, runtime, broker).source, broker, redis_client)

    report = sampler.run_pass(*whole_window())
    assert report.budget_held == 5 and report.per_rubric[KEY] == 0
    assert report.per_rubric["groundedness@v1"] == 5  # its own budget is untouched
    again = sampler.run_pass(*whole_window())
    assert again.budget_held == 5
    pending = [json.loads(v) for v in redis_client.hgetall(outbox.OUTBOX).values()]
    assert len(pending) == 1 and pending[0]["kind"] == "budget_held" and pending[0]["held_by"] == "rubric"
    assert int(redis_client.hget("tracejudge:stats", "sampler_budget_held")) == 10


def test_parked_jobs_go_back_on_the_queue_when_a_new_utc_day_starts(redis_client, runtime):
    rubric = dataclasses.replace(runtime.rubrics[KEY], daily_budget_usd=0.01)
    budget = Budget(redis_client, None)
    yesterday = time.time() - 86400
    for i in range(4):  # yesterday's 0.02 was over the cap; a job costs 0.005
        budget.record(f"yesterdays-job-{i}", "helpfulness", Decimal("0.005"), now=yesterday)
    budget.park("score-1", "trace-1", KEY)
    budget.park("score-1", "trace-1", KEY)  # a redelivered job parks once
    budget.park("score-2", "trace-2", KEY)
    enqueued = []
    assert budget.unpark({KEY: rubric}, lambda t, k: enqueued.append((t, k))) == 2  # today nothing is spent
    assert sorted(enqueued) == [("trace-1", KEY), ("trace-2", KEY)]
    assert sum(budget.parked().values()) == 0

    budget.record("todays-job", "helpfulness", Decimal("0.02"))
    budget.park("score-3", "trace-3", KEY)
    assert budget.unpark({KEY: rubric}, lambda t, k: enqueued.append((t, k))) == 0
    assert budget.parked()[KEY] == 1


def test_budget_show_prints_spend_caps_and_parked_jobs_as_json(
        langfuse_emu, judge_emu, redis_url, redis_client, test_rubrics):
    from worker.cli.budget import budget as budget_group

    Budget(redis_client, None).record("job", "helpfulness", Decimal("0.25"), now=NOON)
    Budget(redis_client, None).park("score-9", "trace-9", KEY)
    env = make_env(langfuse_emu, judge_emu, redis_url, test_rubrics, TRACEJUDGE_DAILY_BUDGET_USD="1.5")
    result = CliRunner().invoke(budget_group, ["show", "--day", DAY, "--json"], env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["global"] == {"spent_usd": 0.25, "cap_usd": 1.5, "left_usd": 1.25}
    assert shown["rubrics"][KEY]["spent_usd"] == 0.25 and shown["rubrics"][KEY]["parked"] == 1
    bad = CliRunner().invoke(budget_group, ["show", "--day", "yesterday"], env=env)
    assert bad.exit_code != 0 and "not a day" in bad.output
