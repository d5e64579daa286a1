"""Every alert kind renders with its own fields: in Slack as Block Kit (header, labelled fields, the
traces it names, a closing note, the title as fallback text), in PagerDuty as an Events v2 trigger
(summary, severity, source, component/group/class, custom_details, a dedup key per condition, links
when the alert has a URL). The generic webhook posts the alert's JSON unchanged (public contract).

Each alert goes through the real sink classes, over HTTP, to a local webhook."""
from __future__ import annotations

import dataclasses
import json

import pytest

from tests.helpers import Webhook
from tests.test_alert_kinds import CAUSE as CAUSE_RECORD
from tests.test_alert_kinds import agreement, budget, cause_found, drop, incident, missing, paused, rise
from worker.alerts.kinds import KINDS, Alert, DriftAlert, TraceLink, from_json
from worker.alerts.sinks import PagerDutySink, SlackSink, WebhookSink

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
SEVERITIES = {"critical", "error", "warning", "info"}

# kind -> (alert, the Slack fields it shows exactly, its PagerDuty custom_details, severity, group)
CASES = {
    "quality_drop": (drop(), {
        "Rubric": "helpfulness v1", "Cell": "feature=summarize", "Last week": "80.0 (n=300)",
        "This week": "72.5 (n=310)", "Drop": "7.5 points", "q-value": "0.002"},
        {"drop_points": 7.5, "q_value": 0.002, "prev": {"mean": 80.0, "n": 300}}, "warning", "feature=summarize"),
    "quality_drop_incident": (incident(), {
        "Rubric": "helpfulness v1", "Cell": "feature=summarize",
        "Effect": "−12.1 points [−14.0, −10.2] (95%, always valid; n=120 since the start)",
        "Started": "2026-12-02T14:05:00Z (2026-12-02T13:50:00Z – 2026-12-02T14:25:00Z)",
        "Detected": "2026-12-02T17:41:00Z (trace time); alerted 2026-12-02T17:50:03Z",
        "Reference": "82.3 over 2026-11-04..2026-12-01 (n=3104)"},
        {"incident_id": "inc1", "effect_interval": [10.2, 14.0], "started_at": "2026-12-02T14:05:00Z"},
        "warning", "feature=summarize"),
    "quality_drop_cause": (cause_found(), {
        "Rubric": "helpfulness v1", "Cell": "feature=summarize",
        "Effect": "−12.1 points [−14.0, −10.2] (95%, always valid; n=120 since the start)",
        "Started": "2026-12-02T14:05:00Z (2026-12-02T13:50:00Z – 2026-12-02T14:25:00Z)",
        "Detected": "2026-12-02T17:41:00Z (trace time); alerted 2026-12-02T17:50:03Z",
        "Reference": "82.3 over 2026-11-04..2026-12-01 (n=3104)",
        "Where": "input_tokens=3k-10k (35% of traffic): 79.0 → 50.2 (rate -28.8, 95% -32.6 … -24.9; n 337 → 105) "
                 "explains 96% of the drop (mix-adjusted, z -12.4)",
        "What changed": "prompt summarize@12 78.7, summarize@13 69.2 (old: before the start) (n 1050 vs 300); "
                        "explains 100% of the drop"},
        {"incident_id": "inc1", "cause": CAUSE_RECORD}, "warning", "feature=summarize"),
    "unscored_rise": (rise(), {
        "Rubric": "helpfulness v1", "Cell": "feature=summarize", "Unscored last week": "1.0% (n=300)",
        "Unscored this week": "9.0% (n=310)", "q-value": "0.002"},
        {"unscored_rate": {"prev": 0.01, "curr": 0.09}, "owner": "team-x"}, "warning", "feature=summarize"),
    "budget_held": (budget(held_by="global", spent_usd=1234.5, cap_usd=1250.0), {
        "Rubric": "helpfulness", "Cap": "fleet $1,250.0000 a day",
        "Spent": "$1,234.5000 on 2026-12-01 (UTC), 98.8% of the cap", "Typical job": "$0.0020"},
        {"day": "2026-12-01", "held_by": "global", "spent_usd": 1234.5, "cap_usd": 1250.0, "typical_job_usd": 0.002},
        "warning", "global"),
    "scores_missing": (missing(), {
        "Rubric": "helpfulness v1", "Missing": "1,234 scores so far", "Why": "not found on read-back",
        "Day": "2026-12-01 (UTC)"},
        {"version": 1, "day": "2026-12-01", "missing": 1234, "reason": "not found on read-back", "owner": "team-x"},
        "error", "v1"),
    "work_paused": (paused(), {
        "Paused": "openai:gpt-4.1", "Why": "authentication failed (HTTP 401): the key was revoked or is wrong",
        "Since": "2026-12-01T09:15:00+00:00", "Opened by": "a helpfulness job"},
        {"circuit": "openai:gpt-4.1", "reason": "authentication failed (HTTP 401): the key was revoked or is wrong",
         "opened_at": "2026-12-01T09:15:00+00:00"}, "error", "openai:gpt-4.1"),
    "agreement_low": (agreement(), {
        "Rubric": "helpfulness v2", "Kappa": "0.41 (95% 0.30 – 0.52)", "Minimum": "0.60",
        "Pairs": "1,234 human-labelled traces over 28 days", "Exact agreement": "52.3%"},
        {"version": 2, "kappa": 0.4123, "kappa_low": 0.3012, "kappa_high": 0.5234, "min_kappa": 0.6, "pairs": 1234,
         "exact": 0.5234, "window_days": 28, "owner": "team-x",
         "disagreements": [{"trace_id": "tr-aaaaaaaaaaaaaaaa", "human": 1, "judge": 5},
                           {"trace_id": "tr-b", "human": 2.0, "judge": 4.5}]}, "warning", "v2"),
}


def via_slack(webhook: Webhook, alert: Alert) -> dict:
    SlackSink(webhook.base_url + "/services/T000/B000/XXXXSECRET").send(alert)
    return webhook.received[-1]


def via_pagerduty(webhook: Webhook, alert: Alert) -> dict:
    PagerDutySink(ROUTING_KEY, webhook.base_url + "/v2/enqueue").send(alert)
    return webhook.received[-1]


def slack_fields(message: dict) -> dict[str, str]:
    """The labelled values of the message's field sections, label -> value (as Slack shows them)."""
    out = {}
    for block in message["blocks"]:
        for field in block.get("fields", []):
            label, _, value = field["text"].partition("\n")
            out[label.strip("*")] = value
    return out


def assert_block_kit(message: dict, text_max: int = 2000) -> None:
    """The shape Slack accepts: blocks of known types within Block Kit's limits, and fallback text."""
    assert isinstance(message["text"], str) and message["text"]
    blocks = message["blocks"]
    assert isinstance(blocks, list) and 1 <= len(blocks) <= 50
    header = blocks[0]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert 0 < len(header["text"]["text"]) <= 150
    for block in blocks[1:]:
        assert block["type"] in {"section", "context"}, block
        if block["type"] == "section":
            assert "text" in block or block.get("fields"), block
            assert len(block.get("fields", [])) <= 10
            for field in block.get("fields", []):
                assert field["type"] == "mrkdwn" and 0 < len(field["text"]) <= 2000
            if "text" in block:
                assert block["text"]["type"] == "mrkdwn" and 0 < len(block["text"]["text"]) <= text_max
        else:
            assert 1 <= len(block["elements"]) <= 10
            for element in block["elements"]:
                assert element["type"] == "mrkdwn" and 0 < len(element["text"]) <= 2000


def assert_events_v2(event: dict) -> None:
    assert event["routing_key"] == ROUTING_KEY and event["event_action"] == "trigger"
    assert 0 < len(event["dedup_key"]) <= 255
    payload = event["payload"]
    assert 0 < len(payload["summary"]) <= 1024 and payload["source"] == "tracejudge"
    assert payload["severity"] in SEVERITIES
    for key in ("component", "group", "class"):
        assert isinstance(payload[key], str) and payload[key], key
    assert isinstance(payload["custom_details"], dict)
    for link in event["links"]:
        assert link["href"].startswith(("http://", "https://")) and link["text"]


@pytest.mark.parametrize("case", list(CASES))
def test_each_kind_renders_its_own_fields_in_slack(case, webhook):
    alert, fields, *_ = CASES[case]
    message = via_slack(webhook, alert)
    assert_block_kit(message)
    assert message["text"] == alert.title
    assert slack_fields(message) == fields
    if not isinstance(alert, DriftAlert):  # no drift figures on the other kinds
        blocks = json.dumps(message["blocks"])
        assert "Last week" not in blocks and "Drop" not in blocks and "n=0" not in blocks
    assert "XXXXSECRET" not in json.dumps(message) and ROUTING_KEY not in json.dumps(message)


@pytest.mark.parametrize("case", list(CASES))
def test_each_kind_renders_its_own_fields_in_pagerduty(case, webhook):
    alert, _, details, severity, group = CASES[case]
    event = via_pagerduty(webhook, alert)
    assert_events_v2(event)
    payload = event["payload"]
    assert payload["summary"] == alert.title and payload["class"] == alert.kind
    assert payload["severity"] == severity and payload["group"] == group and payload["component"] == alert.rubric
    assert details.items() <= payload["custom_details"].items()
    assert event["dedup_key"] == f"tracejudge:{'unscored:' if case == 'unscored_rise' else ''}{alert.cell}"
    body = {k: v for k, v in event.items() if k != "routing_key"}
    assert ROUTING_KEY not in json.dumps(body)  # the key only where Events v2 wants it


@pytest.mark.parametrize("case", list(CASES))
def test_the_webhook_posts_the_alert_json_unchanged(case, webhook):
    alert = CASES[case][0]
    WebhookSink(webhook.base_url + "/hook").send(alert)
    body = webhook.received[-1]
    assert body == json.loads(json.dumps({"kind": alert.kind, **dataclasses.asdict(alert)}))
    assert set(body) == {"kind"} | {f.name for f in dataclasses.fields(KINDS[alert.kind])}
    assert from_json(body) == alert


def test_every_kind_has_a_rendering_case():
    assert {CASES[c][0].kind for c in CASES} == set(KINDS)


def test_a_drift_alert_lists_and_links_the_lowest_traces(webhook):
    alert = incident(bottom_traces=[TraceLink("a" * 32, 3.4, "http://ui/trace/" + "a" * 32),
                                    TraceLink("b" * 32, 9.6, "javascript:alert(1)")])
    message = via_slack(webhook, alert)
    text = message["blocks"][2]["text"]["text"]
    assert text.startswith("*Lowest-scoring traces since the start*\n")
    assert f"• <http://ui/trace/{'a' * 32}|{'a' * 12}> 3 pts" in text
    event = via_pagerduty(webhook, alert)
    assert event["links"] == [{"href": "http://ui/trace/" + "a" * 32, "text": f"trace {'a' * 32} (3)"}]


def test_agreement_low_lists_the_widest_disagreements_linked_when_they_have_a_url(webhook):
    alert = agreement(disagreements=[{"trace_id": "tr-1", "human": 1, "judge": 5, "url": "https://lf/trace/tr-1"},
                                     {"trace_id": "x>|<http://evil", "human": 2.0, "judge": 4.5}])
    message = via_slack(webhook, alert)
    assert message["blocks"][0]["text"]["text"] == "Judge–human agreement low: helpfulness v2"
    listing = message["blocks"][2]["text"]["text"]
    assert listing == ("*Widest disagreements*\n• <https://lf/trace/tr-1|tr-1> human 1 · judge 5\n"
                       "• x&gt;|&lt;http://evil human 2 · judge 4.5")
    assert "owner: team-x" in message["blocks"][3]["elements"][0]["text"]
    event = via_pagerduty(webhook, alert)
    assert event["links"] == [{"href": "https://lf/trace/tr-1", "text": "trace tr-1 (human 1 · judge 5)"}]
    no_pairs = via_slack(webhook, agreement(disagreements=[], kappa_low=None, kappa_high=None, exact=None))
    assert no_pairs["blocks"][2]["text"]["text"] == "*Widest disagreements*\nnone"
    assert slack_fields(no_pairs)["Kappa"] == "0.41" and "Exact agreement" not in slack_fields(no_pairs)


def test_a_kind_without_traces_has_no_list_and_no_links(webhook):
    for alert in (budget(), missing(), paused()):
        message = via_slack(webhook, alert)
        assert [b["type"] for b in message["blocks"]] == ["header", "section", "context"]
        assert via_pagerduty(webhook, alert)["links"] == []


def test_the_dedup_key_is_one_per_condition(webhook):
    # a later alert on the same condition (another day's id, a worse figure) updates the same incident
    for first, later in ((missing(), missing(id="missing-helpfulness@v1-2026-12-02", missing=2000)),
                         (agreement(), agreement(id="k2", kappa=0.3)),
                         (paused(), paused(id="p2", opened_at="2026-12-01T10:00:00+00:00")),
                         (budget(), budget(id="b2", day="2026-12-02"))):
        assert via_pagerduty(webhook, first)["dedup_key"] == via_pagerduty(webhook, later)["dedup_key"]
    keys = {via_pagerduty(webhook, a)["dedup_key"] for a in (drop(), rise(), budget(), missing(), paused(),
                                                                  agreement(), missing(version=2, cell="missing:h@v2"))}
    assert len(keys) == 7  # different conditions never fold into one incident


def test_text_past_the_services_limits_is_cut_to_fit(webhook):
    long = "x" * 5000
    alert = paused(title="t" * 5000, reason="<" * 3000, circuit=long)
    message = via_slack(webhook, alert)
    assert_block_kit(message)
    fields = slack_fields(message)
    assert fields["Why"].endswith("&lt;…") and fields["Paused"].endswith("x…")  # cut between entities, marked
    assert len(via_pagerduty(webhook, alert)["payload"]["summary"]) == 1024
    many = drop(bottom_traces=[TraceLink(f"t{i:031d}", i, "https://cloud.langfuse.com/project/" + "p" * 200
                                         + f"/traces/t{i:031d}") for i in range(20)])
    message = via_slack(webhook, many)
    assert_block_kit(message, text_max=3000)  # a section's text may be 3,000 characters
    listing = message["blocks"][2]["text"]["text"].split("\n")
    assert 1 < len(listing) - 1 < 20 and all(line.endswith(" pts") for line in listing[1:])  # whole lines only
    huge_cell = drop(cell="helpfulness|v1|m|" + "tenant=acme|" * 40)
    key = via_pagerduty(webhook, huge_cell)["dedup_key"]
    assert len(key) <= 255 and key == via_pagerduty(webhook, huge_cell)["dedup_key"]


def test_ids_from_clients_cannot_forge_slack_markup(webhook):
    alert = missing(rubric="help<!channel>", reason="<http://evil|click> & more")
    message = via_slack(webhook, alert)
    assert message["blocks"][0]["text"]["type"] == "plain_text"  # the header shows its text as is
    mrkdwn = json.dumps(message["blocks"][1:])
    assert "<!channel>" not in mrkdwn and "<http://evil" not in mrkdwn
    assert slack_fields(message)["Why"] == "&lt;http://evil|click&gt; &amp; more"
