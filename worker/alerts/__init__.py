"""Alert sinks (generic webhook, Slack, PagerDuty) behind one interface, and a Redis outbox."""
