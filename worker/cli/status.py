"""``tracejudge status``: what the fleet is doing, read from Redis (text or ``--json``)."""
from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, NotRequired, TypedDict

import click

from worker.cli.agreement import AgreementSummary
from worker.cli.budget import BudgetSummary, budget_lines
from worker.cli.common import load_settings, reports_errors

if TYPE_CHECKING:
    import redis

    from worker.rubrics.rubric import Rubric
    from worker.settings import Settings


class QueueFigures(TypedDict):
    ready: int
    in_flight: int
    delayed: int
    dead_letters: int


class SamplerFigures(TypedDict):
    cursor: str | None
    lag_seconds: float | None
    last_pass_at: str | None
    last_pass: str | None
    scanned: int
    excluded: int
    selected: int
    budget_held: int
    enqueued: int


class RateLimitWaits(TypedDict):
    waits: int
    seconds: float


class WriteBack(TypedDict):
    written: int
    confirmed: int
    awaiting_read_back: int
    missing: int
    rewritten: int
    mean_seconds_to_confirm: float | None
    read_back_requests: int
    note: NotRequired[str]  # the read-back still due (print_status adds it)


class DetectorCell(TypedDict):
    alerted_at: str | None
    line: str


class JudgeFigures(TypedDict):
    calls: int
    tokens: dict[str, int]  # input, output, cache_read, cache_write
    cost_usd: float


class StatusReport(TypedDict):
    """``status --json``."""

    queue: QueueFigures
    budget: BudgetSummary
    sampler: SamplerFigures
    rate_limit_waits: dict[str, RateLimitWaits]
    outcomes: dict[str, int]
    write_back: WriteBack
    unscored_by_reason: dict[str, int]
    agreement: dict[str, AgreementSummary]
    review: dict[str, int]
    detection: dict[str, DetectorCell]
    paused: dict[str, dict[str, str]]
    structured_output: dict[str, str]
    warnings: list[str]
    judge: JudgeFigures
    # power-aware rubrics (sampling.detection_target): the plan, "lines" as the text prints them
    sampling_plans: dict[str, dict[str, object]]


def status_report(settings: Settings, client: redis.Redis, rubrics: dict[str, Rubric]) -> StatusReport:
    from samplers.sampler import CURSOR_KEY, LAST_PASS_KEY
    from worker.accounting.budget import Budget
    from worker.accounting.outcomes import OutcomeLog
    from worker.cli.agreement import agreement_summary
    from worker.cli.budget import budget_summary
    from worker.fleet.metrics import RATELIMIT_WAIT_SECONDS, RATELIMIT_WAITS
    from worker.fleet.queues import queue_depth
    from worker.fleet.redis_health import eviction_warning
    from worker.judges.structured import MEMORY_KEY as STRUCTURED_MODES
    from worker.rate_limits.circuit import open_circuits
    from worker.redis_client import as_text
    from worker.review.agreement import read_all as read_agreement
    from worker.review.queue import STATS as REVIEW_STATS

    depth = queue_depth(client)
    stats = OutcomeLog(client).stats()
    cursor = client.get(CURSOR_KEY)
    cursor_at = dt.datetime.fromisoformat(as_text(cursor)) if cursor else None
    last = {as_text(k): as_text(v) for k, v in client.hgetall(LAST_PASS_KEY).items()}
    waits = {as_text(k): int(float(v)) for k, v in client.hgetall(RATELIMIT_WAITS).items()}
    waited = {as_text(k): round(float(v), 3) for k, v in client.hgetall(RATELIMIT_WAIT_SECONDS).items()}
    tokens = {kind: stats.get(f"{kind}_tokens", 0) for kind in ("input", "output", "cache_read", "cache_write")}
    return {
        "queue": {"ready": depth.ready, "in_flight": depth.unacked, "delayed": depth.delayed,
                  "dead_letters": depth.dead},
        "budget": budget_summary(Budget(client, settings.daily_budget_usd), rubrics),
        "sampler": {"cursor": cursor_at.isoformat() if cursor_at else None,
                    "lag_seconds": round((dt.datetime.now(dt.timezone.utc) - cursor_at).total_seconds(), 1)
                    if cursor_at else None,
                    "last_pass_at": last.get("at"), "last_pass": last.get("line"),
                    "scanned": stats.get("sampler_scanned", 0), "excluded": stats.get("sampler_excluded", 0),
                    "selected": stats.get("sampler_selected", 0), "budget_held": stats.get("sampler_budget_held", 0),
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
        "agreement": {key: agreement_summary(r) for key, r in read_agreement(client).items()},
        "review": {as_text(k): int(v) for k, v in sorted(client.hgetall(REVIEW_STATS).items())},
        "detection": _detection(client),
        "paused": open_circuits(client),  # circuit breakers open: their work waits for a probe
        # the structured-output mode each judge endpoint settled on (learned once for the fleet)
        "structured_output": {as_text(k): as_text(v) for k, v in sorted(client.hgetall(STRUCTURED_MODES).items())},
        "warnings": [w for w in (eviction_warning(client),) if w],
        "judge": {"calls": stats.get("judge_calls", 0), "tokens": tokens,
                  "cost_usd": round(stats.get("cost_microusd", 0) / 1_000_000, 6)},
        "sampling_plans": _plans(client, rubrics),
    }


def _plans(client: redis.Redis, rubrics: dict[str, Rubric]) -> dict[str, dict[str, object]]:
    """Each power-aware rubric's rate plan: per cell its rate, achieved detection time, whether it
    meets the target and why not (samplers/planner.py)."""
    import dataclasses

    from samplers.planner import plan_lines

    out: dict[str, dict[str, object]] = {}
    for key, rubric in sorted(rubrics.items()):
        if rubric.power is not None:
            plan, lines = plan_lines(client, rubric)
            fields = (dataclasses.asdict(plan) if plan
                      else {"rubric_key": key, "target": rubric.power.label, "cells": []})
            out[key] = {**fields, "lines": lines}
    return out


def _detection(client: redis.Redis) -> dict[str, DetectorCell]:
    """The sequential detector per cell: open incidents, and what each watched cell can see."""
    from worker.drift.aggregates import CELLS
    from worker.drift.detection import describe
    from worker.redis_client import as_text

    cells: dict[str, DetectorCell] = {}
    for raw in sorted(client.smembers(CELLS)):
        alerted, line = describe(client, as_text(raw))
        cells[as_text(raw)] = {"alerted_at": alerted, "line": line}
    return cells


def render_text(report: StatusReport) -> str:
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
    for plan in report["sampling_plans"].values():
        plan_lines = plan.get("lines")
        lines += ["sampling plan: " + str(line) for line in (plan_lines if isinstance(plan_lines, list) else [])]
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def print_status(settings: Settings, as_json: bool) -> None:
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
def status(as_json: bool) -> None:
    """Queue depths, dead letters, budget, sampler cursor and lag, rate-limit waits, outcomes."""
    print_status(load_settings(), as_json)
