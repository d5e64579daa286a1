"""Drift end to end: seeded traces where one feature dropped, judged by the real pipeline,
checked week over week, alerted once through a webhook."""
from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import pytest

from emulators.http_base import Emulator
from emulators.seed import generate
from tests.helpers import drain, sampler_for
from worker.drift.run import run_drift
from worker.drift.stats import CellInput, WeekStats, decide, min_n_means


class WebhookReceiver(Emulator):
    def __init__(self):
        super().__init__("127.0.0.1", 0)
        self.received, self.fail = [], False
        self._lock = threading.Lock()

    def handle(self, method, path, query, headers, body):
        if self.fail:
            return 503, {"error": "down"}, {}
        with self._lock:
            self.received.append(body)
        return 200, {"ok": True}, {}


@pytest.mark.slow
def test_one_feature_drops_and_only_that_feature_alerts_once(settings, runtime, broker, redis_client, langfuse_emu):
    # The seed ends at the last UTC midnight and is checked as of the day before: "this week" is
    # then exactly the seed's 7 drifted days, and the seed the same traces, at any time of day
    # (its traffic follows the UTC hour) and even if midnight passes during the test.
    end = dt.datetime.combine(dt.datetime.now(dt.timezone.utc).date(), dt.time(), dt.timezone.utc)
    today = (end - dt.timedelta(days=1)).date()
    # 35 days: the sequential detector's reference is the 28 days before the week it watches.
    observations = generate(3500, days=35, include_malformed=False, seed=31,
                            drift={"feature": "summarize", "points": 15}, end=end)
    langfuse_emu.load_observations(observations)
    webhook = WebhookReceiver()
    webhook.start()
    try:
        s = dataclasses.replace(settings, sample_rate=1.0, alert_webhook_url=webhook.base_url + "/hook")
        rubrics = {k: v for k, v in runtime.rubrics.items() if k == "helpfulness@v1"}
        sampler = sampler_for(s, runtime, broker)
        sampler.rubrics = list(rubrics.values())
        # The whole seed: ``whole_window``'s 16 days would cut the detector's 28-day reference
        # wherever the clock stands, and feature=summarize's by the hour (198 scores at 19:55 UTC).
        sampler.run_pass(end - dt.timedelta(days=36), dt.datetime.now(dt.timezone.utc))
        drain(broker, redis_client, threads=32, timeout=240)

        webhook.fail = True  # a sink failure delays the alert but loses nothing
        first = run_drift(s, rubrics, redis_client, lambda t: f"http://ui/trace/{t}", today=today)
        reports, alerts, (sent, pending) = first.reports, first.alerts, first.delivery
        assert sent == 0 and pending == len(alerts) > 0
        webhook.fail = False
        second = run_drift(s, rubrics, redis_client, lambda t: f"http://ui/trace/{t}", today=today)
        assert second.alerts == [] and second.delivery == (len(alerts), 0)

        # The weekly summary still names the drop; the sequential detector pages it, once.
        alerting = {r.segment for r in reports if r.decision.status == "alert"}
        assert "feature=summarize" in alerting
        assert all(seg.startswith("feature=summarize") for seg in alerting), alerting
        explained = {r.segment for r in reports if r.decision.status == "explained"}
        assert all(seg == "all" or seg.startswith("tenant=") for seg in explained)
        assert all(not r.new_alert for r in reports)
        paged = {a["segment"] for a in webhook.received}
        assert "feature=summarize" in paged and paged <= alerting, paged
        summarize = next(a for a in webhook.received if a["segment"] == "feature=summarize")
        assert summarize["kind"] == "quality_drop" and summarize["effect_points"] >= 7.5
        assert summarize["reference"]["n"] >= 200 and summarize["started_at"] and summarize["incident_id"]
        assert len(summarize["bottom_traces"]) == 20
        assert all(t["url"].startswith("http://ui/trace/") for t in summarize["bottom_traces"])
        assert all(r.moving_average for r in reports)
    finally:
        webhook.stop()


def test_a_1_point_wobble_in_a_huge_cell_does_not_alert_and_small_cells_say_insufficient():
    huge = CellInput("big", WeekStats(100_000, 70.0 * 100_000, (70.0**2 + 400) * 100_000),
                     WeekStats(100_000, 69.0 * 100_000, (69.0**2 + 400) * 100_000))
    small = CellInput("small", WeekStats(20, 70.0 * 20, (70.0**2 + 400) * 20), WeekStats(20, 66.0 * 20, (66.0**2 + 400) * 20))
    big_decision, small_decision = decide([huge, small])
    assert big_decision.q < 0.01 and big_decision.status == "ok"  # significant but below half the threshold
    # sized for the run: two cells share the Benjamini–Hochberg correction
    assert small_decision.status == "insufficient_data" and small_decision.n_needed == min_n_means(
        (400 * 20 / 19) ** 0.5, 5.0, cells=2)
    assert small_decision.n_have == 20
