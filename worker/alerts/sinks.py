"""Alert sinks: each turns one alert into its service's wire format and POSTs it.

A sink raises on failure; the outbox (outbox.py) keeps the alert and retries it later.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol
from urllib.parse import quote

import httpx

from worker.alerts.kinds import Alert, BudgetHeld, DriftAlert, QualityDrop, ScoresMissing, UnscoredRise, WorkPaused
from worker.retrying import call_with_retries
from worker.settings import Settings


class Sink(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...


def _post(url: str, body: dict, timeout: float = 10.0) -> None:
    def once():
        response = httpx.post(url, json=body, timeout=timeout)
        response.raise_for_status()

    call_with_retries(once, attempts=3, deadline=30)


class WebhookSink:
    """Generic JSON webhook: the alert as the outbox keeps it (``Alert.as_json``)."""

    name = "webhook"

    def __init__(self, url: str):
        self.url = url

    def send(self, alert: Alert) -> None:
        _post(self.url, alert.as_json())


class SlackSink:
    """Slack incoming webhook with a Block Kit message."""

    name = "slack"

    def __init__(self, url: str):
        self.url = url

    def send(self, alert: Alert) -> None:
        _post(self.url, slack_message(alert))


class PagerDutySink:
    """PagerDuty Events API v2 ``trigger`` event, deduplicated by the cell."""

    name = "pagerduty"

    def __init__(self, routing_key: str, url: str = "https://events.pagerduty.com/v2/enqueue"):
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

def _slack_text(text: str) -> str:
    """Slack mrkdwn control characters escaped, so a client-supplied id cannot forge a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_url(url: str) -> str:
    """A link target inside ``<url|text>``: escaped, and a ``|`` percent-encoded so it cannot end
    the URL early (ids in our links are percent-encoded already; this holds for any URL)."""
    return _slack_text(url.replace("|", "%7C"))


def _href(url: str | None) -> str | None:
    """Only http(s) links reach PagerDuty's href (never ``javascript:``), with unsafe characters
    percent-encoded."""
    if not url or not url.lower().startswith(("http://", "https://")):
        return None
    return quote(url, safe=":/?#[]@!$&'()*+,;=%-._~")


def _field(label: str, value: str) -> dict:
    return {"type": "mrkdwn", "text": f"*{label}*\n{value}"}


def slack_message(alert: Alert) -> dict:
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}}]
    if isinstance(alert, DriftAlert):
        fields = [_field("Rubric", f"{_slack_text(alert.rubric)} v{alert.version}"),
                  _field("Cell", _slack_text(alert.segment))]
        if isinstance(alert, UnscoredRise):
            rate = alert.unscored_rate
            fields += [_field("Unscored last week", f"{100 * (rate.get('prev') or 0):.1f}% (n={alert.prev.n})"),
                       _field("Unscored this week", f"{100 * (rate.get('curr') or 0):.1f}% (n={alert.curr.n})")]
        elif isinstance(alert, QualityDrop) and alert.incident_id:
            fields += _incident_fields(alert)
        else:
            fields += [_field("Last week", f"{alert.prev.mean:.1f} (n={alert.prev.n})"),
                       _field("This week", f"{alert.curr.mean:.1f} (n={alert.curr.n})"),
                       _field("Drop", f"{alert.drop_points:.1f} points")]
        if alert.q_value is not None:
            fields.append(_field("q-value", f"{alert.q_value:.2g}"))
        lines = "\n".join(f"• <{_slack_url(t.url)}|{_slack_text(t.trace_id[:12])}> {t.points:.0f} pts"
                          for t in alert.bottom_traces[:20])
        blocks += [{"type": "section", "fields": fields},
                   {"type": "section", "text": {"type": "mrkdwn", "text": (
                       "*Lowest-scoring traces since the start*\n" if isinstance(alert, QualityDrop) and alert.incident_id
                       else "*Lowest-scoring traces this week*\n") + (lines or "none")}},
                   {"type": "context", "elements": [{"type": "mrkdwn", "text": f"owner: {_slack_text(alert.owner)} · "
                                                     f"judge {_slack_text(alert.judge_model)}"}]}]
    elif isinstance(alert, BudgetHeld):
        scope = "fleet" if alert.held_by == "global" else "rubric"
        blocks += [{"type": "section", "fields": [
            _field("Rubric", _slack_text(alert.rubric)), _field("Cap", f"{scope} ${alert.cap_usd:.4f} a day"),
            _field("Spent", f"${alert.spent_usd:.4f} on {alert.day} (UTC)"),
            _field("Typical job", f"${alert.typical_job_usd:.4f}")]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "queued jobs are parked until the next UTC "
                                              "day or a raised cap (`tracejudge budget unpark`)"}]}]
    elif isinstance(alert, ScoresMissing):
        blocks += [{"type": "section", "fields": [
            _field("Rubric", f"{_slack_text(alert.rubric)} v{alert.version}"),
            _field("Missing", f"{alert.missing} score(s) so far"), _field("Why", _slack_text(alert.reason))]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "written to Langfuse, never found on "
                                              "read-back: counted as missing, not scored (`tracejudge status`)"}]}]
    elif isinstance(alert, WorkPaused):
        blocks += [{"type": "section", "fields": [
            _field("Paused", _slack_text(alert.circuit)), _field("Why", _slack_text(alert.reason)),
            _field("Since", alert.opened_at)]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "its jobs wait (nothing is paid or "
                                              "dead-lettered) and resume by themselves once a probe succeeds"}]}]
    return {"text": alert.title, "blocks": blocks}


def _incident_fields(alert: QualityDrop) -> list[dict]:
    """What the sequential detector pinned: the effect, when it began, when it was seen, the reference."""
    ref, (lo, hi) = alert.reference or {}, alert.effect_interval or (None, None)
    effect = f"−{alert.effect_points:.1f} points" + (f" [−{hi:.1f}, −{lo:.1f}]" if lo is not None else "")
    between = alert.started_between or ["?", "?"]
    return [_field("Effect", f"{effect} (95%, always valid; n={alert.curr.n} since the start)"),
            _field("Started", f"{alert.started_at} ({between[0]} – {between[1]})"),
            _field("Detected", f"{alert.detected_at} (trace time); alerted {alert.alerted_at}"),
            _field("Reference", f"{ref.get('mean', 0):.1f} over {ref.get('since')}..{ref.get('until')} "
                                f"(n={ref.get('n')})")]


# -- PagerDuty -----------------------------------------------------------------------------

def pagerduty_event(alert: Alert, routing_key: str) -> dict:
    payload: dict = {"summary": alert.title[:1024], "source": "tracejudge", "severity": "warning",
                     "component": alert.rubric, "class": alert.kind}
    links: list[dict] = []
    if isinstance(alert, DriftAlert):
        payload["group"] = alert.segment
        payload["custom_details"] = {"prev": dataclasses.asdict(alert.prev), "curr": dataclasses.asdict(alert.curr),
                                     "drop_points": alert.drop_points, "q_value": alert.q_value,
                                     "unscored_rate": alert.unscored_rate, "owner": alert.owner}
        if isinstance(alert, QualityDrop) and alert.incident_id:
            payload["custom_details"].update(
                {name: getattr(alert, name) for name in ("started_at", "started_between", "detected_at", "alerted_at",
                                                         "effect_points", "effect_interval", "reference", "incident_id")})
        links = [{"href": _href(t.url), "text": f"trace {t.trace_id} ({t.points:.0f})"}
                 for t in alert.bottom_traces[:5] if _href(t.url)]
    elif isinstance(alert, BudgetHeld):
        payload["group"] = alert.held_by
        payload["custom_details"] = {"day": alert.day, "spent_usd": alert.spent_usd, "cap_usd": alert.cap_usd,
                                     "typical_job_usd": alert.typical_job_usd}
    elif isinstance(alert, ScoresMissing):
        payload["group"] = f"v{alert.version}"
        payload["custom_details"] = {"day": alert.day, "missing": alert.missing, "reason": alert.reason}
    elif isinstance(alert, WorkPaused):
        payload["group"] = alert.circuit
        payload["custom_details"] = {"reason": alert.reason, "opened_at": alert.opened_at}
    return {"routing_key": routing_key, "event_action": "trigger", "dedup_key": f"tracejudge:{alert.cell}",
            "payload": payload, "links": links}
