"""tracejudge samplers: which traces get judged (deterministic sampling, filters, cursor)."""
