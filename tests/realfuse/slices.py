"""What attribution reads, read from the real server (issue 27): the slices the worker kept for
each judged trace (its generation's prompt name@version, release, input tokens: the v2 `usage`
and `prompt` field groups) and every trace's signals (worker/drift/signals.py: lean v2 listings of
the run's roots and generations, the `type` filter), each against what the run sent."""
from __future__ import annotations

import collections
import datetime as dt
import time

import redis
from langfuse.api import LangfuseAPI

from tests.realfuse.common import PUBLIC_KEY, SECRET_KEY, log
from tests.realfuse.traffic import Plan
from worker.drift import signals, slice_log
from worker.drift.dimensions import token_bucket


def check(base: str, client: redis.Redis, plan: Plan, run_start: dt.datetime) -> list[str]:
    problems = []
    prompts = {t: info["prompt"] for t, info in plan.traces.items() if info.get("prompt")}
    generation = {o["traceId"]: o for o in plan.observations if o["type"] == "GENERATION" and o["traceId"] in prompts}
    # 1. The slice log: one entry per confirmed trace score, with the slices the worker read.
    entries = [e for key in client.scan_iter(match=slice_log.LOG + "helpfulness|*")
               for e in slice_log.read(client, key.decode()[len(slice_log.LOG):] + "|all", 0)]
    kept = {e.member: e.dims for e in entries if e.member in prompts}
    wrong = [t for t, dims in kept.items()
             if dims.get("prompt") != prompts[t] or dims.get("release") != "2026.11.3"
             or dims.get("input_tokens") != token_bucket(generation[t]["usageDetails"]["input"])]
    log(f"slice log: {len(entries)} helpfulness entries; {len(kept)} of the {len(prompts)} prompted traces, "
        f"{len(kept) - len(wrong)} with the prompt, release and input tokens sent")
    if not kept:
        problems.append("no slice log entry for a trace whose generation named its prompt")
    if wrong:
        problems.append(f"{len(wrong)} slice log entries differ from what was sent, e.g. {wrong[0]}: {kept[wrong[0]]}")
    # 2. Every trace's signals over the run's window, from the real listings.
    client.set(signals.CURSOR, repr(run_start.timestamp() - 600))
    api = LangfuseAPI(base_url=base, username=PUBLIC_KEY, password=SECRET_KEY)
    counted = signals.catch_up(api, client, time.time() + signals.LAG_S)
    since, until = run_start.timestamp() - 3600, time.time() + 3600
    expected = collections.Counter(prompts.values())
    out_tokens = collections.Counter()
    for t, prompt in prompts.items():
        out_tokens[prompt] += generation[t]["usageDetails"]["output"]
    read = {p: signals.read(client, "all", ("prompt", p), since, until) for p in expected}
    log(f"every trace's signals: {counted} roots counted over the run's window; per prompt (n, output tokens) "
        + ", ".join(f"{p} {int(read[p].n)}/{expected[p]} {int(read[p].out)}/{out_tokens[p]}" for p in sorted(expected)))
    if counted < len(plan.traces):
        problems.append(f"signals counted {counted} roots, the run sent {len(plan.traces)}")
    bad = [p for p in expected if read[p].n != expected[p] or read[p].out != out_tokens[p]]
    if bad:
        problems.append(f"signals per prompt differ from what was sent: {bad}")
    return problems
