"""``tracejudge status``: what the fleet is doing, read from Redis (text or ``--json``)."""
from __future__ import annotations

import datetime as dt
import json

import click

from worker.cli.budget import budget_lines
from worker.cli.common import _settings, reports_errors


def status_report(settings, client, rubrics: dict) -> dict:
    from samplers.sampler import CURSOR_KEY, LAST_PASS_KEY
    from worker.accounting.budget import Budget
    from worker.accounting.outcomes import OutcomeLog
    from worker.cli.budget import budget_summary
    from worker.fleet.metrics import RATELIMIT_WAIT_SECONDS, RATELIMIT_WAITS
    from worker.fleet.queues import queue_depth
    from worker.fleet.redis_health import eviction_warning
    from worker.judges.structured import MEMORY_KEY as STRUCTURED_MODES
    from worker.rate_limits.circuit import open_circuits
    from worker.review.agreement import read_all as read_agreement
    from worker.review.queue import STATS as REVIEW_STATS

    depth = queue_depth(client)
    stats = OutcomeLog(client).stats()
    cursor = client.get(CURSOR_KEY)
    cursor_at = dt.datetime.fromisoformat(cursor.decode()) if cursor else None
    last = {k.decode(): v.decode() for k, v in client.hgetall(LAST_PASS_KEY).items()}
    waits = {k.decode(): int(float(v)) for k, v in client.hgetall(RATELIMIT_WAITS).items()}
    waited = {k.decode(): round(float(v), 3) for k, v in client.hgetall(RATELIMIT_WAIT_SECONDS).items()}
    tokens = {kind: stats.get(f"{kind}_tokens", 0) for kind in ("input", "output", "cache_read", "cache_write")}
    return {
        "queue": {"ready": depth.ready, "in_flight": depth.unacked, "delayed": depth.delayed,
                  "dead_letters": depth.dead},
        "budget": budget_summary(Budget(client, settings.daily_budget_usd), rubrics),
        "sampler": {"cursor": cursor_at.isoformat() if cursor_at else None,
                    "lag_seconds": round((dt.datetime.now(dt.timezone.utc) - cursor_at).total_seconds(), 1)
                    if cursor_at else None,
                    "last_pass_at": last.get("at"), "last_pass": last.get("line"),
                    **{k: stats.get(f"sampler_{k}", 0) for k in ("scanned", "excluded", "selected", "budget_held")},
                    "enqueued": stats.get("enqueued", 0)},
        "rate_limit_waits": {key: {"waits": n, "seconds": waited.get(key, 0.0)} for key, n in sorted(waits.items())},
        "outcomes": {k: stats.get(k, 0) for k in ("scored", "unscored", "not_applicable", "retries_exhausted")},
        # "scored" counts writes Langfuse accepted; only "confirmed" ones were read back from it.
        "write_back": {"written": stats.get("scored", 0), "confirmed": stats.get("confirmed", 0),
                       "awaiting_read_back": OutcomeLog(client).waiting(), "missing": stats.get("missing", 0),
                       "rewritten": stats.get("rewritten", 0),
                       "mean_seconds_to_confirm": round(stats.get("confirm_wait_ms", 0) / stats["confirmed"] / 1000, 2)
                       if stats.get("confirmed") else None,
                       "read_back_requests": stats.get("confirm_requests", 0)},
        "unscored_by_reason": {k.split(":", 1)[1]: v for k, v in sorted(stats.items())
                               if k.startswith("unscored:") and k.count(":") == 1},
        # judge-human agreement per rubric version, as the scheduler's review tick last computed it
        "agreement": {key: {k: r.get(k) for k in ("n", "exact", "within_one", "kappa", "kappa_low", "kappa_high",
                                                  "spearman", "status", "min_kappa", "window_days", "computed_at")}
                      for key, r in read_agreement(client).items()},
        "review": {k.decode(): int(v) for k, v in sorted(client.hgetall(REVIEW_STATS).items())},
        "detection": _detection(client),
        "paused": open_circuits(client),  # circuit breakers open: their work waits for a probe
        # the structured-output mode each judge endpoint settled on (learned once for the fleet)
        "structured_output": {k.decode(): v.decode() for k, v in sorted(client.hgetall(STRUCTURED_MODES).items())},
        "warnings": [w for w in (eviction_warning(client),) if w],
        "judge": {"calls": stats.get("judge_calls", 0), "tokens": tokens,
                  "cost_usd": round(stats.get("cost_microusd", 0) / 1_000_000, 6)},
    }


def _detection(client) -> dict:
    """The sequential detector per cell: open incidents, and what each watched cell can see."""
    from worker.drift.aggregates import CELLS
    from worker.drift.detection import describe

    cells = {}
    for raw in sorted(client.smembers(CELLS)):
        alerted, line = describe(client, raw.decode())
        cells[raw.decode()] = {"alerted_at": alerted, "line": line}
    return cells


def render_text(report: dict) -> str:
    q, s, b, j = report["queue"], report["sampler"], report["budget"], report["judge"]
    lines = [f"queue: {q['ready']} ready, {q['in_flight']} in flight, {q['delayed']} delayed, "
             f"{q['dead_letters']} dead letters",
             f"sampler cursor: {s['cursor'] or 'not set'}"
             + (f" (lag {s['lag_seconds']:.0f}s)" if s["lag_seconds"] is not None else ""),
             f"sampler totals: scanned {s['scanned']}, selected {s['selected']}, enqueued {s['enqueued']}, "
             f"excluded {s['excluded']}, held back by budget {s['budget_held']}"]
    if s["last_pass"]:
        lines.append(f"last pass ({s['last_pass_at']}): {s['last_pass']}")
    lines += budget_lines(b)
    o = report["outcomes"]
    lines.append(f"outcomes: {o['scored']} scored, {o['unscored']} unscored, {o['not_applicable']} not applicable, "
                 f"{o['retries_exhausted']} retries exhausted")
    for reason, n in report["unscored_by_reason"].items():
        lines.append(f"  unscored {reason}: {n}")
    w = report["write_back"]
    lines.append(f"write-back: {w['written']} written, {w['confirmed']} confirmed in Langfuse, "
                 f"{w['awaiting_read_back']} awaiting read-back (unconfirmed), {w['missing']} missing, "
                 f"{w['rewritten']} re-written")
    if w.get("note"):
        lines.append(f"  {w['note']}")
    t = j["tokens"]
    lines.append(f"judge: {j['calls']} calls, tokens in {t['input']} / out {t['output']} / cache read "
                 f"{t['cache_read']} / cache write {t['cache_write']}, cost ${j['cost_usd']:.4f}")
    if report["rate_limit_waits"]:
        lines.append("rate-limit waits: " + ", ".join(
            f"{k} {v['waits']} ({v['seconds']:.1f}s)" for k, v in report["rate_limit_waits"].items()))
    else:
        lines.append("rate-limit waits: none")
    from worker.cli.agreement import agreement_line

    for key, figures in report["agreement"].items():
        lines.append("agreement: " + agreement_line(key, figures))
    if report["review"]:
        lines.append("review: " + ", ".join(f"{k} {v}" for k, v in report["review"].items()))
    for key, mode in report["structured_output"].items():
        lines.append(f"structured output: {key} falls back to {mode} (learned once for the fleet: the "
                     "modes before it are not supported there)")
    for cell, det in report["detection"].items():
        lines.append(f"detector: {cell}: {det['line']}" + (f" (alerted {det['alerted_at']})" if det["alerted_at"] else ""))
    for name, state in report["paused"].items():
        lines.append(f"paused: {name}: {state.get('reason', '?')} (next probe at {state.get('probe_at', '?')})")
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def print_status(settings, as_json: bool) -> None:
    import redis

    from worker.fleet.confirmer import read_back_before_reading
    from worker.rubrics.rubric import load_rubrics

    client = redis.Redis.from_url(settings.redis_url)
    try:
        note = read_back_before_reading(settings, client)  # written scores due: counted before they are shown
        report = status_report(settings, client, load_rubrics(settings.rubrics_dir))
        if note:
            report["write_back"]["note"] = note
    except redis.RedisError as exc:  # the URL may hold a password: name the error, not the URL
        raise click.ClickException(f"cannot read the fleet's state from Redis (REDIS_URL): {exc}") from None
    click.echo(json.dumps(report, indent=2) if as_json else render_text(report))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@reports_errors
def status(as_json):
    """Queue depths, dead letters, budget, sampler cursor and lag, rate-limit waits, outcomes."""
    print_status(_settings(), as_json)
