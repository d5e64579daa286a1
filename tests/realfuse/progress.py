"""What the run should end (every selected subject × rubric version, with its score id) and
what did, read from the fleet's own Redis; waiting until it settles."""
from __future__ import annotations

import collections
import json
import re
import time
from pathlib import Path

import redis

from tests.realfuse.common import log
from tests.realfuse.traffic import Plan
from worker.fleet.queues import queue_depth
from worker.jobs import Subject
from worker.langfuse_io.scores import score_id_for

DONE, CONFIRMED, EXHAUSTED = "tracejudge:done:", "tracejudge:confirmed:", "tracejudge:exhausted"
SESSIONS_PENDING, UNCONFIRMED = "tracejudge:sessions:pending:", "tracejudge:unconfirmed"


class Expected:
    """Every (subject, rubric version) the run should end: the sample rate is 1, so every
    judgeable trace, every GENERATION and TOOL of one, every session."""

    def __init__(self, plan: Plan, rubrics: dict):
        self.items: list[dict] = []  # {target, subject, trace_id, rubric, key, score_id}
        for rubric in rubrics.values():
            if rubric.target == "trace":
                subjects = [(tid, tid, tid) for tid, t in plan.traces.items() if not t["excluded"]]
            elif rubric.target == "observation":
                subjects = [(str(Subject.observation(tid, oid)), oid, tid) for tid, oid in plan.judged_observations()]
            else:
                subjects = [(str(Subject.session(sid, 1)), sid, None) for sid in plan.sessions]
            for arg, subject, trace_id in subjects:
                self.items.append({"target": rubric.target, "subject": subject, "trace_id": trace_id,
                                   "rubric": rubric.name, "key": rubric.key,
                                   "score_id": score_id_for(arg, rubric.name, rubric.version)})
        self.by_score_id = {i["score_id"]: i for i in self.items}


def read_outcomes(client: redis.Redis, expected: Expected) -> dict[str, dict]:
    """score id -> {done: scored | unscored:<reason> | None, confirmed: confirmed | missing | None,
    exhausted: the dead-letter record or None}."""
    ids = [i["score_id"] for i in expected.items]
    pipe = client.pipeline(transaction=False)
    for sid in ids:
        pipe.get(DONE + sid)
        pipe.get(CONFIRMED + sid)
        pipe.hget(EXHAUSTED, sid)
    raw = pipe.execute()
    out = {}
    for n, sid in enumerate(ids):
        done, confirmed, exhausted = raw[3 * n:3 * n + 3]
        out[sid] = {"done": done.decode() if done else None, "confirmed": confirmed.decode() if confirmed else None,
                    "exhausted": json.loads(exhausted) if exhausted else None}
    return out


def queue_state(client: redis.Redis) -> dict:
    depth = queue_depth(client)
    pending = sum(client.zcard(k) for k in client.scan_iter(SESSIONS_PENDING + "*"))
    return {"ready": depth.ready, "in_flight": depth.unacked, "delayed": depth.delayed, "dead": depth.dead,
            "sessions_pending": pending, "unconfirmed": client.zcard(UNCONFIRMED)}


def wait_until_settled(client: redis.Redis, expected: Expected, timeout: float, stall_seconds: float) -> dict:
    """Until every expected item ended, every written score was read back, the queue is empty and
    no session waits; or nothing moved for ``stall_seconds`` while the queue was idle; or ``timeout``."""
    last_sig, t0 = None, time.monotonic()
    last_change = t0
    while True:
        outcomes = read_outcomes(client, expected)
        state = queue_state(client)
        ended = sum(1 for o in outcomes.values() if o["done"])
        scored = sum(1 for o in outcomes.values() if o["done"] == "scored")
        read_back = sum(1 for o in outcomes.values() if o["done"] == "scored" and o["confirmed"])
        dead = sum(1 for o in outcomes.values() if not o["done"] and o["exhausted"])
        sig = (ended, read_back, dead, state["ready"], state["in_flight"], state["sessions_pending"])
        now = time.monotonic()
        if sig != last_sig:
            last_sig, last_change = sig, now
            log(f"   {now - t0:5.0f}s  ended {ended}/{len(expected.items)} (scored {scored}, read back {read_back}), "
                f"dead-lettered {dead}; queue ready {state['ready']}, in flight {state['in_flight']}, "
                f"delayed {state['delayed']}, dead {state['dead']}; sessions pending {state['sessions_pending']}")
        if (ended + dead == len(expected.items) and read_back == scored and not state["ready"]
                and not state["in_flight"] and not state["delayed"] and not state["sessions_pending"]):
            return {"how": "settled", "seconds": now - t0}
        idle = not state["ready"] and not state["in_flight"] and not state["sessions_pending"]
        if idle and now - last_change > stall_seconds:
            return {"how": f"stopped waiting: nothing moved for {stall_seconds:.0f} s", "seconds": now - t0}
        if now - t0 > timeout:
            return {"how": f"timed out after {timeout:.0f} s", "seconds": now - t0}
        time.sleep(2)


def _entries(path: Path):
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            yield entry


def job_failures(path: Path) -> collections.Counter:
    """Error-level lines of a tracejudge log (a job that failed with an unhandled exception and
    was retried, a tick that failed), grouped by event and the exception's last line."""
    found: collections.Counter = collections.Counter()
    for entry in _entries(path):
        if entry.get("level") in ("error", "critical"):
            exc = (entry.get("exc") or "").strip().splitlines()
            event = re.sub(r"\('[^)]*\)", "(...)", str(entry.get("event", "")))[:80]
            found[event + (f" {exc[-1][:160]}" if exc else "")] += 1
    return found


def warnings(path: Path, limit: int = 6) -> list[str]:
    """A log's warnings and errors, grouped, most frequent first."""
    groups: collections.Counter = collections.Counter()
    for entry in _entries(path):
        if entry.get("level") in ("warning", "error", "critical"):
            exc = (entry.get("exc") or "").strip().splitlines()
            last = exc[-1][:140] if exc else str(entry.get("error_type") or entry.get("error") or "")
            groups[(entry["level"], str(entry.get("event", ""))[:90] + (f" | {last}" if last else ""))] += 1
    return [f"{n:4d}x {level}: {what}" for (level, what), n in groups.most_common(limit)]
