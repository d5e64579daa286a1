"""Each alert kind has its own fields, and every sink renders every kind with them."""
from __future__ import annotations

import dataclasses
import json

import pytest

from worker.alerts import outbox
from worker.alerts.kinds import (AgreementLow, BudgetHeld, CauseFound, QualityDrop, ScoresMissing, TraceLink,
                                 UnscoredRise, Week, WorkPaused, from_json)
from worker.alerts.sinks import pagerduty_event, slack_message


def drop(**over) -> QualityDrop:
    fields = dict(id="a1", title="helpfulness v1 dropped 7.5 points for feature=summarize", cell="c1",
                  rubric="helpfulness", owner="team-x", route=None, version=1, judge_model="claude-sonnet-4-6",
                  segment="feature=summarize", prev=Week(80.0, 300), curr=Week(72.5, 310), drop_points=7.5,
                  p_value=0.0001, q_value=0.002, unscored_rate={"prev": 0.01, "curr": 0.02},
                  bottom_traces=[TraceLink("t-1", 12.0, "http://ui/trace/t-1")])
    return QualityDrop(**{**fields, **over})


def rise() -> UnscoredRise:
    shared = {f.name for f in dataclasses.fields(UnscoredRise)}
    d = {k: v for k, v in drop().__dict__.items() if k in shared}
    return UnscoredRise(**{**d, "title": "helpfulness v1: unscored rate rose to 9.0%",
                           "unscored_rate": {"prev": 0.01, "curr": 0.09}})


def budget(**over) -> BudgetHeld:
    fields = dict(id="b1", title="helpfulness: judging paused", cell="budget:helpfulness", rubric="helpfulness",
                  owner="unowned", route=None, day="2026-12-01", held_by="rubric", spent_usd=4.9876,
                  cap_usd=5.0, typical_job_usd=0.002)
    return BudgetHeld(**{**fields, **over})


def incident(**over) -> QualityDrop:
    """A quality drop as the sequential detector raises it."""
    return drop(**{**dict(
        id="inc1", title="helpfulness v1 feature=summarize: −12.1 points [−14.0, −10.2], started Wed 14:05", p_value=None,
        q_value=None, unscored_rate={}, prev=Week(82.3, 3104), curr=Week(70.2, 120), drop_points=12.1,
        started_at="2026-12-02T14:05:00Z", started_between=["2026-12-02T13:50:00Z", "2026-12-02T14:25:00Z"],
        detected_at="2026-12-02T17:41:00Z", alerted_at="2026-12-02T17:50:03Z", effect_points=12.1,
        effect_interval=[10.2, 14.0], reference={"mean": 82.3, "n": 3104, "since": "2026-11-04", "until": "2026-12-01"},
        incident_id="inc1"), **over})


CAUSE = {"status": "slice", "reason": "input_tokens=3k-10k explains 96% of the drop (z -12.4; n = 300 after the start)",
         "lines": ["WHERE input_tokens=3k-10k (35% of traffic): 79.0 → 50.2 (rate -28.8, 95% -32.6 … -24.9; "
                   "n 337 → 105) explains 96% of the drop (mix-adjusted, z -12.4)",
                   "CHANGED prompt summarize@12 78.7, summarize@13 69.2 (old: before the start) (n 1050 vs 300); "
                   "explains 100% of the drop"],
         "slices": [], "events": [], "after": [], "before": [], "n_before": 1050, "n_after": 300,
         "computed_at": "2026-12-02T17:50:03Z"}


def cause_found(**over) -> CauseFound:
    """The same incident, updated once attribution names its cause."""
    base = dataclasses.asdict(incident())
    base.pop("prev"), base.pop("curr"), base.pop("bottom_traces")
    return CauseFound(**{**base, "id": "inc1:cause", "prev": Week(82.3, 3104), "curr": Week(70.2, 120),
                         "bottom_traces": [], "cause": CAUSE,
                         "examples_after": [TraceLink("tr-low", 2.4, "http://ui/trace/tr-low")],
                         "examples_before": [TraceLink("tr-typ", 81.5, "http://ui/trace/tr-typ")], **over})


def missing(**over) -> ScoresMissing:
    fields = dict(id="missing-helpfulness@v1-2026-12-01", title="helpfulness@v1: 1234 score(s) written to Langfuse did "
                  "not land (not found on read-back); they are counted as missing, not scored",
                  cell="missing:helpfulness@v1", rubric="helpfulness", owner="team-x", route="#ai-quality", version=1,
                  day="2026-12-01", missing=1234, reason="not found on read-back")
    return ScoresMissing(**{**fields, **over})


def paused(**over) -> WorkPaused:
    fields = dict(id="p1", title="openai:gpt-4.1: paused (authentication failed (HTTP 401): the key was revoked or is "
                  "wrong); its jobs wait until a probe succeeds", cell="circuit:openai:gpt-4.1", rubric="helpfulness",
                  owner="unowned", route=None, circuit="openai:gpt-4.1",
                  reason="authentication failed (HTTP 401): the key was revoked or is wrong",
                  opened_at="2026-12-01T09:15:00+00:00")
    return WorkPaused(**{**fields, **over})


def agreement(**over) -> AgreementLow:
    fields = dict(id="k1", title="helpfulness v2: judge–human agreement fell to kappa 0.41 (minimum 0.6, n=1234 "
                  "human-labelled traces, 28 days)", cell="helpfulness|v2|agreement", rubric="helpfulness",
                  owner="team-x", route="#ai-quality", version=2, kappa=0.4123, kappa_low=0.3012, kappa_high=0.5234,
                  min_kappa=0.6, pairs=1234, exact=0.5234, window_days=28,
                  disagreements=[{"trace_id": "tr-aaaaaaaaaaaaaaaa", "human": 1, "judge": 5},
                                 {"trace_id": "tr-b", "human": 2.0, "judge": 4.5}])
    return AgreementLow(**{**fields, **over})


def slack_text(message: dict) -> str:
    return json.dumps(message["blocks"])


def test_a_budget_alert_shows_spend_and_cap_not_drift_figures():
    text = slack_text(slack_message(budget()))
    assert "$4.9876 on 2026-12-01" in text and "$5.0000 a day" in text
    assert "Last week" not in text and "Drop" not in text and "n=0" not in text
    event = pagerduty_event(budget(), "rk")
    assert event["payload"]["custom_details"] == {"day": "2026-12-01", "held_by": "rubric", "spent_usd": 4.9876,
                                                  "cap_usd": 5.0, "typical_job_usd": 0.002, "owner": "unowned"}
    assert event["payload"]["group"] == "rubric" and event["links"] == []


def test_a_quality_drop_shows_both_weeks_and_the_lowest_traces():
    text = slack_text(slack_message(drop()))
    assert "80.0 (n=300)" in text and "72.5 (n=310)" in text and "7.5 points" in text
    assert "<http://ui/trace/t-1|t-1>" in text
    event = pagerduty_event(drop(), "rk")
    assert event["dedup_key"] == "tracejudge:c1" and event["payload"]["class"] == "quality_drop"
    assert event["links"] == [{"href": "http://ui/trace/t-1", "text": "trace t-1 (12)"}]


def test_an_unscored_rise_shows_the_unscored_rates_not_a_score_drop():
    text = slack_text(slack_message(rise()))
    assert "1.0% (n=300)" in text and "9.0% (n=310)" in text
    assert "Drop" not in text
    event = pagerduty_event(rise(), "rk")
    assert event["payload"]["class"] == "unscored_rise"
    # its own incident: a quality drop on the same cell is another one
    assert event["dedup_key"] == "tracejudge:unscored:c1" != pagerduty_event(drop(), "rk")["dedup_key"]


def test_a_client_supplied_trace_id_cannot_forge_a_slack_link():
    alert = drop(bottom_traces=[TraceLink("x>|<http://evil", 3.0, "http://ui/trace/x%3E%7C%3Chttp%3A%2F%2Fevil")])
    text = slack_text(slack_message(alert))
    assert "<http://evil" not in text and "x&gt;|&lt;http" in text


@pytest.mark.parametrize("alert", [drop(), incident(), rise(), budget(), missing(), paused(), agreement()],
                         ids=["drop", "incident", "rise", "budget", "missing", "paused", "agreement"])
def test_an_alert_reads_back_from_the_outbox_as_its_own_kind(alert, redis_client):
    class Keep:
        name = "keep"
        got: list = []

        def send(self, a):
            self.got.append(a)

    sink = Keep()
    outbox.enqueue(redis_client, alert, [sink])
    assert outbox.deliver(redis_client, [sink]) == (1, 0)
    assert sink.got == [alert] and type(sink.got[0]) is type(alert)


def test_an_outbox_entry_written_before_the_kinds_existed_still_reads():
    old = {"id": "b1", "kind": "budget_held", "title": "t", "rubric": "helpfulness", "version": "",
           "cell": "budget:helpfulness", "segment": "global", "day": "2026-11-30",
           "spent_usd": 5.0, "cap_usd": 5.0, "typical_job_usd": 0.01, "owner": "unowned", "route": None,
           "judge_model": "", "prev": {"mean": 0.0, "n": 0}, "curr": {"mean": 0.0, "n": 0}, "drop_points": 0.0,
           "p_value": None, "q_value": 1.0, "unscored_rate": None, "bottom_traces": []}
    alert = from_json(old)
    assert isinstance(alert, BudgetHeld) and alert.held_by == "global" and alert.cap_usd == 5.0
    with pytest.raises(ValueError, match="unknown alert kind"):
        from_json({"kind": "nonsense"})


def test_a_cause_found_updates_the_same_incident_and_reads_back_from_the_outbox():
    update, first = cause_found(), incident()
    assert update.dedup_key() == first.dedup_key() and update.incident_id == first.incident_id
    assert update.id != first.id  # the outbox keeps both: the alert, then its update
    back = from_json(json.loads(json.dumps(update.as_json())))
    assert back == update and isinstance(back, CauseFound)
    event = pagerduty_event(update, "R" * 32)
    assert event["dedup_key"] == pagerduty_event(first, "R" * 32)["dedup_key"]
    message = json.dumps(slack_message(update))
    assert "Cause found" in message and "tr-low" in message and "tr-typ" in message
