"""Alert sinks: each turns one alert into its service's wire format and POSTs it.

A sink raises on failure; the outbox (outbox.py) keeps the alert and retries it later.
"""
from __future__ import annotations

from typing import Protocol

import httpx

from worker.retrying import call_with_retries


class Sink(Protocol):
    name: str

    def send(self, alert: dict) -> None: ...


def _post(url: str, body: dict, timeout: float = 10.0) -> None:
    def once():
        response = httpx.post(url, json=body, timeout=timeout)
        response.raise_for_status()

    call_with_retries(once, attempts=3, deadline=30)


class WebhookSink:
    name = "webhook"

    def __init__(self, url: str):
        self.url = url

    def send(self, alert: dict) -> None:
        _post(self.url, alert)


class SlackSink:
    """Slack incoming webhook with a Block Kit message."""

    name = "slack"

    def __init__(self, url: str):
        self.url = url

    def send(self, alert: dict) -> None:
        _post(self.url, slack_message(alert))


class PagerDutySink:
    """PagerDuty Events API v2 ``trigger`` event, deduplicated by the cell."""

    name = "pagerduty"

    def __init__(self, routing_key: str, url: str = "https://events.pagerduty.com/v2/enqueue"):
        self.routing_key = routing_key
        self.url = url

    def send(self, alert: dict) -> None:
        _post(self.url, {
            "routing_key": self.routing_key,
            "event_action": "trigger",
            "dedup_key": f"tracejudge:{alert['cell']}",
            "payload": {
                "summary": alert["title"][:1024],
                "source": "tracejudge",
                "severity": "warning",
                "component": alert["rubric"],
                "group": alert["segment"],
                "class": alert["kind"],
                "custom_details": {k: alert[k] for k in ("prev", "curr", "drop_points", "q_value", "owner")},
            },
            "links": [{"href": t["url"], "text": f"trace {t['trace_id']} ({t['points']:.0f})"}
                      for t in alert["bottom_traces"][:5]],
        })


def slack_message(alert: dict) -> dict:
    lines = "\n".join(f"• <{t['url']}|{t['trace_id'][:12]}> {t['points']:.0f} pts" for t in alert["bottom_traces"][:20])
    prev, curr = alert["prev"], alert["curr"]
    return {
        "text": alert["title"],
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": alert["title"][:150]}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*Rubric*\n{alert['rubric']} v{alert['version']}"},
                {"type": "mrkdwn", "text": f"*Cell*\n{alert['segment']}"},
                {"type": "mrkdwn", "text": f"*Last week*\n{prev['mean']:.1f} (n={prev['n']})"},
                {"type": "mrkdwn", "text": f"*This week*\n{curr['mean']:.1f} (n={curr['n']})"},
                {"type": "mrkdwn", "text": f"*Drop*\n{alert['drop_points']:.1f} points"},
                {"type": "mrkdwn", "text": f"*q-value*\n{alert['q_value']:.2g}"},
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text": "*Lowest-scoring traces this week*\n" + (lines or "none")}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"owner: {alert['owner']} · judge {alert['judge_model']}"}]},
        ],
    }
