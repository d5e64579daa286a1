"""The chaos benchmark's audit: what the contract says should be judged against what Langfuse,
Redis, the alert receiver and the judge emulator show, as one table."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter

import httpx
import redis

from worker.accounting.outcomes import EXHAUSTED, UNSCORED_LOG, OutcomeLog
from worker.alerts.outbox import OUTBOX
from worker.fleet.queues import dead_letters, queue_depth
from worker.judging.finish import PENDING_WRITE


@dataclasses.dataclass
class Window:
    """One fault's window: judge and Langfuse counters before and after, Redis state at its end."""

    name: str
    started_at: float  # wall clock, as the judge emulator stamps arrivals
    ended_at: float
    judge: Counter
    langfuse: Counter
    pending_writes: int | None = None  # verdicts paid for and not yet written, at the window's end

    @property
    def seconds(self) -> float:
        return self.ended_at - self.started_at

    def paid(self, paid_at: list[float]) -> int:
        """Judge calls that arrived in the window and were answered 200 (billed)."""
        return sum(1 for t in paid_at if self.started_at <= t < self.ended_at)

    def judge_status(self, status: int) -> int:
        return self.judge.get(f"status:{status}", 0)

    def langfuse_writes(self, status: int) -> int:
        return self.langfuse.get(f"POST scores {status}", 0)


@dataclasses.dataclass
class FleetCheck:
    honcho_running: bool
    honcho_starts: int
    exits: list[str]  # each time honcho exited by itself: when and why
    processes: dict[str, list[int]]
    heartbeats: int
    expected_children: int


def expected_pairs(observations: list[dict], rubrics, rate: float) -> set[tuple[str, str]]:
    """(trace, rubric) pairs the contract selects, computed from the traces alone (not the sampler):
    root observations outside ``langfuse*`` environments and not our own, ``u < rate``, and the
    rubric's required observations present."""
    names: dict[str, set[str]] = {}
    for o in observations:
        names.setdefault(o["traceId"], set()).add(o.get("name") or "")
    pairs = set()
    for o in observations:
        if not (o.get("isRootObservation") or not o.get("parentObservationId")):
            continue
        if (o.get("environment") or "").startswith("langfuse") or \
                (o.get("traceName") or o.get("name") or "").startswith("tracejudge"):
            continue
        u = int.from_bytes(hashlib.sha256(("tracejudge:v1:" + o["traceId"]).encode()).digest()[:8], "big") / 2**64
        if u >= rate:
            continue
        for rubric in rubrics:
            if set(rubric.applies_to.observations) <= names[o["traceId"]]:
                pairs.add((o["traceId"], rubric.name))
    return pairs


def audit(client: redis.Redis, lf_url: str, expected: set, events: list[str], fleet: FleetCheck,
          windows: list[Window], alert_counts: Counter, alert_kinds: dict[str, str], totals: Counter,
          paid_at: list[float], recorded_calls: int) -> int:
    scores = httpx.get(f"{lf_url}/_emulator/scores", timeout=60).json()
    writes = httpx.get(f"{lf_url}/_emulator/score-writes", timeout=60).json()
    per_pair = Counter((s["traceId"], s["name"]) for s in scores)
    judged = set(per_pair)
    duplicated = sum(n - 1 for n in per_pair.values() if n > 1)
    stats = OutcomeLog(client).stats()
    explained: dict[tuple[str, str], str] = {}
    for raw in client.lrange(UNSCORED_LOG, 0, -1):
        entry = json.loads(raw)
        explained[(entry["trace_id"], entry["rubric"].split("@")[0])] = "unscored: " + entry["reason"]
    for raw in client.hgetall(EXHAUSTED).values():
        entry = json.loads(raw)
        explained[(entry["trace_id"], entry["rubric"].split("@")[0])] = "dead letter: " + entry["reason"][:60]
    for dead in dead_letters(client):
        explained.setdefault((dead["args"][0], dead["args"][1].split("@")[0]), "dead letter: " + dead["reason"][:60])
    unjudged = expected - judged
    lost = unjudged - set(explained)
    reasons = Counter(explained[p] for p in unjudged - lost)
    depth = queue_depth(client)
    pending = sum(1 for _ in client.scan_iter(match=PENDING_WRITE + "*", count=500))
    twice = [a for a, n in alert_counts.items() if n > 1]
    procs = fleet.processes
    alive = (fleet.honcho_running and len(procs["scheduler"]) == 1 and len(procs["worker"]) == 1
             and len(procs["worker-child"]) == fleet.expected_children)
    up_throughout = alive and not fleet.exits
    paid = totals.get("status:200", 0)

    rows: list[tuple[str, str, str]] = []

    def row(what: str, value, ok: bool | None = None) -> None:
        rows.append((what, str(value), "" if ok is None else ("ok" if ok else "FAIL")))

    row("honcho and every Procfile process alive at the end",
        f"honcho {'running' if fleet.honcho_running else 'exited'}; scheduler {len(procs['scheduler'])}, "
        f"worker {len(procs['worker'])} + {len(procs['worker-child'])}/{fleet.expected_children} children; "
        f"{fleet.heartbeats} broker heartbeats in 15 s", alive)
    row("fleet up throughout (honcho never exited by itself)",
        "yes" if not fleet.exits else f"no: {'; '.join(fleet.exits)} (benchmark restarted honcho "
                                      f"{fleet.honcho_starts - 1}x)", up_throughout)
    row("(trace, rubric) pairs the contract selects", len(expected))
    row("judged: a score in Langfuse", len(judged & expected))
    row("unscored / dead-lettered with a reason", f"{len(unjudged) - len(lost)} {dict(reasons) if reasons else ''}")
    row("lost (no score, no reason)", len(lost), not lost)
    row("duplicated scores (same trace x rubric)", duplicated, not duplicated)
    row("scores outside the contract's set", len(judged - expected), not (judged - expected))
    row("score writes / distinct score ids", f"{sum(writes.values())} / {len(writes)} (repeats are upserts)")
    row("counted scored / distinct scores", f"{stats.get('scored', 0)} / {len(judged)}",
        stats.get("scored", 0) == len(judged))
    # Informational: a process SIGKILLed during a judge call loses that reply, and its job, taken
    # over after the heartbeat timeout, pays again (at-least-once); anything else is a bug.
    row("judge calls paid (emulator 200s) / recorded by the fleet", f"{paid} / {recorded_calls}")
    row("queue at the end: ready+unacked+delayed / dead", f"{depth.outstanding} / {depth.dead}",
        depth.outstanding == 0)
    row("verdicts paid and never written (pending writes left)", pending, pending == 0)
    row("scores not read back yet", OutcomeLog(client).waiting())
    row("alerts delivered (distinct ids)", f"{sum(alert_counts.values())} ({len(alert_counts)}): "
        + ", ".join(f"{k} {n}" for k, n in sorted(Counter(alert_kinds.values()).items())))
    row("alerts delivered more than once", len(twice), not twice)
    row("alerts still in the outbox", client.hlen(OUTBOX), client.hlen(OUTBOX) == 0)
    for w in windows:
        if w.name.startswith("judge key revoked"):
            row(f"{w.name}: judge calls sent / answered 401 / paid",
                f"{w.judge.get('total', 0)} / {w.judge_status(401)} / {w.paid(paid_at)}  (401s: calls sent before "
                f"the breakers opened + probes)", w.paid(paid_at) == 0)
        elif w.name.startswith("Langfuse writes 403"):
            row(f"{w.name}: judge paid / score writes refused (403)",
                f"{w.paid(paid_at)} / {w.langfuse_writes(403)}; {w.pending_writes} paid verdicts kept to be "
                f"written at its end (not paid again)")
        else:
            row(f"{w.name}: judge paid / Langfuse score writes", f"{w.paid(paid_at)} / {w.langfuse_writes(200)}")

    print("\n== chaos audit ==")
    for line in events:
        print("  " + line)
    width = max(len(r[0]) for r in rows)
    for what, value, ok in rows:
        print(f"{what:<{width}}  {ok:<4}  {value}")
    failed = [r[0] for r in rows if r[2] == "FAIL"]
    print("RESULT:", "PASS" if not failed else "FAIL: " + "; ".join(failed))
    return 0 if not failed else 1
