"""Alert sinks: each turns one alert into its service's wire format and POSTs it: the webhook
the alert's JSON as the outbox keeps it, Slack and PagerDuty the description every kind gives
(``Alert.describe``), rendered the same way whatever the kind.

A sink raises on failure; the outbox (outbox.py) keeps the alert and retries it later.
"""
from __future__ import annotations

import hashlib
import re
from typing import Protocol
from urllib.parse import quote

import httpx

from worker.alerts.kinds import Alert, Line
from worker.json_types import JSONDict
from worker.retrying import call_with_retries
from worker.settings import Settings


class Sink(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...


def _post(url: str, body: JSONDict, timeout: float = 10.0) -> None:
    def once() -> None:
        response = httpx.post(url, json=body, timeout=timeout)
        response.raise_for_status()

    call_with_retries(once, attempts=3, deadline=30)


class WebhookSink:
    """Generic JSON webhook: the alert as the outbox keeps it (``Alert.as_json``)."""

    name = "webhook"

    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, alert: Alert) -> None:
        _post(self.url, alert.as_json())


class SlackSink:
    """Slack incoming webhook with a Block Kit message."""

    name = "slack"

    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, alert: Alert) -> None:
        _post(self.url, slack_message(alert))


class PagerDutySink:
    """PagerDuty Events API v2 ``trigger`` event, deduplicated by the cell."""

    name = "pagerduty"

    def __init__(self, routing_key: str, url: str = "https://events.pagerduty.com/v2/enqueue") -> None:
        self.routing_key = routing_key
        self.url = url

    def send(self, alert: Alert) -> None:
        _post(self.url, pagerduty_event(alert, self.routing_key))


def sinks_for(settings: Settings) -> list[Sink]:
    """The sinks the settings configure (none: alerts wait in the outbox)."""
    sinks: list[Sink] = []
    if settings.alert_webhook_url:
        sinks.append(WebhookSink(settings.alert_webhook_url))
    if settings.slack_webhook_url:
        sinks.append(SlackSink(settings.slack_webhook_url))
    if settings.pagerduty_routing_key:
        sinks.append(PagerDutySink(settings.pagerduty_routing_key, settings.pagerduty_events_url))
    return sinks


# -- Slack ---------------------------------------------------------------------------------
# Block Kit's limits (a message past one is refused with invalid_blocks, and would stay in the outbox).
HEADER_MAX, FIELDS_MAX, FIELD_MAX, SECTION_MAX, CONTEXT_MAX = 150, 10, 2000, 3000, 2000


def _slack_text(text: str) -> str:
    """Slack mrkdwn control characters escaped, so a client-supplied id cannot forge a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_url(url: str) -> str:
    """A link target inside ``<url|text>``: escaped, and a ``|`` percent-encoded so it cannot end
    the URL early (ids in our links are percent-encoded already; this holds for any URL)."""
    return _slack_text(url.replace("|", "%7C"))


def _fit(text: str, limit: int) -> str:
    """Escaped text cut to Slack's limit, never inside an entity such as ``&amp;``."""
    if len(text) <= limit:
        return text
    return re.sub(r"&[a-z]*$", "", text[:limit - 1]) + "…"


def _href(url: str | None) -> str | None:
    """Only http(s) links reach PagerDuty's href (never ``javascript:``), with unsafe characters
    percent-encoded."""
    if not url or not url.lower().startswith(("http://", "https://")):
        return None
    return quote(url, safe=":/?#[]@!$&'()*+,;=%-._~")


def _field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _fit(f"*{label}*\n{_slack_text(value)}", FIELD_MAX)}


def _slack_line(line: Line) -> str:
    score = _slack_text(f"{line.score}{line.unit}")
    if line.url:  # the link carries the whole id: its text can be short
        return f"• <{_slack_url(line.url)}|{_slack_text(line.trace_id[:12])}> {score}"
    return f"• {_slack_text(line.trace_id)} {score}"


def slack_message(alert: Alert) -> JSONDict:
    """Header, the kind's labelled values, the traces it names, a closing note; the title as the
    notification text."""
    d = alert.describe()
    header = (d.headline or alert.title)[:HEADER_MAX]
    blocks: list[JSONDict] = [{"type": "header", "text": {"type": "plain_text", "text": header}}]
    if d.fields:
        blocks.append({"type": "section", "fields": [_field(label, value) for label, value in d.fields[:FIELDS_MAX]]})
    if d.lines_title is not None:
        text = f"*{_slack_text(d.lines_title)}*\n"
        lines: list[str] = []
        for line in map(_slack_line, d.lines):  # whole lines only: a cut one would break its link
            if len(text) + sum(len(x) + 1 for x in lines) + len(line) > SECTION_MAX:
                break
            lines.append(line)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text + ("\n".join(lines) or "none")}})
    if d.note:
        note = _fit(_slack_text(d.note), CONTEXT_MAX)
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    return {"text": alert.title, "blocks": blocks}


# -- PagerDuty -----------------------------------------------------------------------------

def _dedup(key: str) -> str:
    """PagerDuty keeps 255 characters of a dedup key: a longer one (a cell of many dimensions) is hashed."""
    return key if len(key) <= 255 else "tracejudge:" + hashlib.sha256(key.encode()).hexdigest()


def pagerduty_event(alert: Alert, routing_key: str) -> JSONDict:
    """An Events v2 trigger: the title as summary, the kind's severity, fields and links."""
    d = alert.describe()
    payload = {"summary": alert.title[:1024], "source": "tracejudge", "severity": alert.severity,
               "component": alert.rubric, "group": d.group, "class": alert.kind, "custom_details": d.details}
    links = [{"href": _href(line.url), "text": f"trace {line.trace_id} ({line.score})"}
             for line in d.lines[:5] if _href(line.url)]
    return {"routing_key": routing_key, "event_action": "trigger", "dedup_key": _dedup(alert.dedup_key()),
            "payload": payload, "links": links}
