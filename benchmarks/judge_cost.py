"""Judge cost per 1,000 judged traces for the shipped rubrics: online, online with prompt
caching, batch, batch with caching, side by side in one run.

Every figure comes from the token counts the judge emulator reported to the real SDKs (its
cache accounting follows the providers' rules: a read only for an identical prefix written
within the TTL and at least the model's minimum cacheable length) priced by worker/prices.json.
Requests are rendered from seeded traces (emulators/seed.py) by the worker's own steps.

Assumption behind the caching rows: calls for one rubric version come at least once per cache
TTL (5 minutes), so the prefix stays warm; at lower traffic the first call of each gap pays
the cache write again. Anthropic applies caching inside Message Batches on a best-effort basis.

    python -m benchmarks.judge_cost [--traces 300] [--rubrics rubrics/]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

from emulators.judge_api import ANTHROPIC_MIN_CACHE, OPENAI_MIN_CACHE, JudgeEmulator
from emulators.judge_verdicts import tokens
from emulators.seed import generate
from worker.batching.providers import batches_for
from worker.batching.store import Item
from worker.errors import Unscored
from worker.judges import build_judge
from worker.judges.base import Usage
from worker.pipeline import prepare
from worker.pricing import cost_usd
from worker.rubrics import load_rubrics
from worker.settings import Settings
from worker.traces import Trace

MODES = (("online", False, False), ("online + cache", False, True), ("batch", True, False),
         ("batch + cache", True, True))
GOAL = Decimal("0.40")


def seeded_traces(n: int, seed: int) -> list[Trace]:
    by_trace: dict[str, list[dict]] = defaultdict(list)
    for obs in generate(n, seed=seed):
        by_trace[obs["traceId"]].append(obs)
    traces = []
    for trace_id, observations in by_trace.items():
        root = next((o for o in observations if o.get("isRootObservation")), None)
        env = (root or {}).get("environment") or ""
        if root is None or env.startswith("langfuse") or (root.get("traceName") or "").startswith("tracejudge"):
            continue
        stamp = dt.datetime.fromisoformat(root["startTime"].replace("Z", "+00:00"))
        traces.append(Trace(trace_id, root.get("traceName"), env, stamp, root.get("input"), root.get("output"),
                            root.get("metadata") or {}, list(root.get("tags") or []), observations))
    return traces


def rendered(rubrics, traces, settings) -> dict[str, list]:
    """Each rubric's judge requests for the traces it applies to (rendered as the worker does)."""
    rt = type("Rt", (), {"settings": settings})()
    out = {}
    for key, rubric in sorted(rubrics.items()):
        jobs = []
        for trace in traces:
            try:
                jobs.append(prepare(rt, rubric, trace, f"{trace.id[:24]}-{rubric.version}"))
            except Unscored:
                continue
        out[key] = jobs
    return out


def measure(emu, settings, rubric, jobs, *, batch: bool, cache: bool) -> Usage:
    emu.reset()  # a cold cache per mode, so the modes do not help each other
    judge = build_judge(rubric.judge.provider, settings)
    judge.cache_prefix = cache
    total = _measure(judge, rubric, jobs, batch)
    if not cache:  # OpenAI caches on its own: the no-cache rows price every input token in full
        total = Usage(total.input_tokens + total.cache_read_tokens + total.cache_write_tokens, total.output_tokens)
    return total


def _measure(judge, rubric, jobs, batch: bool) -> Usage:
    total = Usage()
    if not batch:
        # The first call alone, then 8 at a time, as a warm fleet would send them.
        total = judge.ask(jobs[0].request).usage
        with ThreadPoolExecutor(8) as pool:
            for usage in pool.map(lambda job: judge.ask(job.request).usage, jobs[1:]):
                total = total + usage
        return total
    api = batches_for(judge)
    items = [Item(job.score_id, job.trace_id, rubric.key, judge.provider, dataclasses.asdict(job.request),
                  {}, {}, None) for job in jobs]
    batch_id = api.submit(items)
    while not api.ended(batch_id):
        time.sleep(0.05)
    by_id = {i.score_id: i for i in items}
    for custom_id, kind, payload in api.results(batch_id):
        if kind == "succeeded":
            total = total + api.reply(payload, by_id[custom_id]).usage
    return total


def prefix_tokens(judge, request) -> tuple[int, int]:
    """(≈ tokens of the static prefix: tools + system, the model's minimum cacheable length)."""
    params = judge.request_params(request)
    if judge.provider == "anthropic":
        floor = next(n for p, n in ANTHROPIC_MIN_CACHE if request.model.startswith(p) or p == "claude-")
        return tokens(json.dumps(params["tools"], sort_keys=True) + "\n" + (request.system or "") + "\n"), floor
    return tokens(json.dumps(params.get("response_format")) + (request.system or "")), OPENAI_MIN_CACHE


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rubrics", type=Path, default=Path("rubrics"))
    args = parser.parse_args(argv)

    emu = JudgeEmulator()
    emu.start()
    emu.configure(batch_delay_seconds=0)
    try:
        settings = Settings.from_env({"ANTHROPIC_API_KEY": "bench", "OPENAI_API_KEY": "bench",
                                      "LANGFUSE_PUBLIC_KEY": "pk-lf-bench", "LANGFUSE_SECRET_KEY": "sk-lf-bench",
                                      "ANTHROPIC_BASE_URL": emu.base_url, "OPENAI_BASE_URL": emu.base_url + "/v1",
                                      "TRACEJUDGE_RUBRICS_DIR": str(args.rubrics)})
        rubrics = load_rubrics(args.rubrics)
        jobs = rendered(rubrics, seeded_traces(args.traces, args.seed), settings)
        print(f"judge cost per 1,000 judged traces, {args.traces} seeded traces, prices from worker/prices.json")
        print(f"{'rubric':<26}{'model':<22}{'n':>5}" + "".join(f"{m:>16}" for m, _, _ in MODES)
              + "   static prefix ≈ tokens / cacheable minimum")
        totals = defaultdict(Decimal)
        for key, rubric_jobs in jobs.items():
            if not rubric_jobs:
                continue
            rubric = rubrics[key]
            row = []
            for name, batch, cache in MODES:
                usage = measure(emu, settings, rubric, rubric_jobs, batch=batch, cache=cache)
                per_1000 = cost_usd(rubric.judge.model, usage, batch=batch) * 1000 / len(rubric_jobs)
                totals[name] += per_1000
                row.append(per_1000)
                if name == "online + cache":
                    cached = usage.cache_read_tokens + usage.cache_write_tokens
            prefix, floor = prefix_tokens(build_judge(rubric.judge.provider, settings), rubric_jobs[0].request)
            print(f"{key:<26}{rubric.judge.model:<22}{len(rubric_jobs):>5}"
                  + "".join(f"{'$' + format(v, '.4f'):>16}" for v in row)
                  + f"   {prefix} / {floor}: {'cached' if cached else 'too short to cache'}")
        print(f"{'all rubrics':<53}" + "".join(f"{'$' + format(totals[m], '.4f'):>16}" for m, _, _ in MODES))
        base = totals["online"]
        ratios = "  ".join(f"{m}: {totals[m] / base:.0%}" for m, _, _ in MODES[1:])
        ratio = totals["batch + cache"] / base
        print(f"relative to plain online: {ratios}")
        print(f"batch + cache / online = {ratio:.3f} (goal <= {GOAL}): {'met' if ratio <= GOAL else 'NOT met'}")
    finally:
        emu.stop()


if __name__ == "__main__":
    main()
