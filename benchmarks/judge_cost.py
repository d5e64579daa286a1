"""Judge cost per 1,000 judged traces: online, online with prompt caching, batch, batch with
caching, side by side in one run, for two rubric sets: the shipped starter rubrics (rubrics/)
and a production-size rubric (benchmarks/rubrics/: helpfulness with a full scoring guide and
calibration examples; same traces, variables, user message and judge as helpfulness@v1).

Every figure comes from the token counts the judge emulator reported to the real SDKs (its
cache accounting follows the providers' rules: a read only for an identical prefix written
within the TTL and at least the model's minimum cacheable length) priced by worker/accounting/prices.json.
Requests are rendered from seeded traces (emulators/seed.py) by the worker's own steps. Token
counts are the emulator's estimate (characters / 4), not the providers' tokenizers.

The caching columns assume a warm cache: calls for one rubric version come at least once per
cache TTL (5 minutes) and every batch item after the first reads the prefix. Neither is
guaranteed (Anthropic caches inside Message Batches on a best-effort basis), so each set also
measures every call missing the cache (each miss writes the prefix at 1.25x input) and states
the share of cache hits that the 40% goal needs. The emulator's verdicts carry one sentence of
reasoning; a real judge writes more, so the ratio is also given at --output-tokens per verdict.

    python -m benchmarks.judge_cost [--traces 300] [--rubrics rubrics/] [--production-rubrics benchmarks/rubrics/]
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

from emulators.judge_api import ANTHROPIC_MIN_CACHE, DEFAULTS, OPENAI_MIN_CACHE, JudgeEmulator
from emulators.judge_verdicts import tokens
from emulators.seed import generate
from worker.accounting.pricing import cost_usd
from worker.batching.providers import batches_for
from worker.batching.store import Item
from worker.errors import Unscored
from worker.judges import build_judge
from worker.judges.base import Usage
from worker.judging.pipeline import prepare
from worker.langfuse_io.traces import Trace
from worker.rubrics.rubric import load_rubrics
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# (name, batch, cache, cold): the four priced columns, then the two cache-miss measurements.
MODES = (("online", False, False, False), ("online + cache", False, True, False), ("batch", True, False, False),
         ("batch + cache", True, True, False), ("online + cache, cold", False, True, True),
         ("batch + cache, cold", True, True, True))
COLUMNS = [m[0] for m in MODES[:4]]
GOAL = Decimal("0.40")


@dataclasses.dataclass
class RubricCost:
    key: str
    model: str
    n: int
    usage: dict[str, Usage]          # by mode: the summed usage of the n calls
    per_1000: dict[str, Decimal]     # by mode: USD per 1,000 judged traces
    prefix_tokens: int
    cache_floor: int
    cached: bool                     # did the warm online + cache run read or write the cache at all


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


def measure(emu, settings, rubric, jobs, *, batch: bool, cache: bool, cold: bool = False) -> Usage:
    emu.reset()  # a cold cache per mode, so the modes do not help each other
    # cold: a TTL of 0 makes every cached prefix expire at once, so every call is a miss that writes.
    emu.configure(cache_ttl_seconds=0.0 if cold else DEFAULTS["cache_ttl_seconds"])
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


def measure_rubric(emu, settings, rubric, jobs) -> RubricCost:
    usage, per_1000 = {}, {}
    for name, batch, cache, cold in MODES:
        usage[name] = measure(emu, settings, rubric, jobs, batch=batch, cache=cache, cold=cold)
        per_1000[name] = cost_usd(rubric.judge.model, usage[name], batch=batch) * 1000 / len(jobs)
    warm = usage["online + cache"]
    prefix, floor = prefix_tokens(build_judge(rubric.judge.provider, settings), jobs[0].request)
    return RubricCost(rubric.key, rubric.judge.model, len(jobs), usage, per_1000, prefix, floor,
                      bool(warm.cache_read_tokens + warm.cache_write_tokens))


def with_output_tokens(cost: RubricCost, per_verdict: int) -> dict[str, Decimal]:
    """The per-1,000 costs had every verdict been ``per_verdict`` output tokens long."""
    out = {}
    for name, batch, _, _ in MODES:
        usage = dataclasses.replace(cost.usage[name], output_tokens=per_verdict * cost.n)
        out[name] = cost_usd(cost.model, usage, batch=batch) * 1000 / cost.n
    return out


def break_even_hit_rate(warm: Decimal, cold: Decimal, online: Decimal, goal: Decimal = GOAL) -> Decimal | None:
    """The least share of calls that must read the cache for the cost to stay within goal x online.

    ``warm`` is the cost with every call a hit, ``cold`` with every call a miss (a miss writes
    the prefix); a mix costs h * warm + (1 - h) * cold. None when even all hits miss the goal."""
    target = goal * online
    if warm > target:
        return None
    if cold <= target:
        return Decimal(0)
    return (cold - target) / (cold - warm)


def totals(costs: list[RubricCost], per_1000=lambda c: c.per_1000) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(Decimal)
    for cost in costs:
        for name, value in per_1000(cost).items():
            out[name] += value
    return out


def _cell(value: Decimal, online: Decimal) -> str:
    return f"{'$' + format(value, '.4f'):>10} {value / online:>5.0%}"


def _prefix_note(cost: RubricCost) -> str:
    verdict = "cached" if cost.cached else "not cached (below the minimum)"
    return f"{cost.prefix_tokens:,} / {cost.cache_floor:,}: {verdict}"


def print_set(title: str, folder: Path, costs: list[RubricCost], output_tokens: int) -> Decimal:
    """One table; returns batch + cache / online for the set."""
    shown = folder.resolve().relative_to(ROOT) if folder.resolve().is_relative_to(ROOT) else folder
    print(f"\n== {title}: {shown}/ ==")
    print(f"{'rubric':<28}{'model':<20}{'n':>5}" + "".join(f"{m:>17}" for m in COLUMNS)
          + "   static prefix ≈ tokens / cacheable minimum")
    for cost in costs:
        online = cost.per_1000["online"]
        print(f"{cost.key:<28}{cost.model:<20}{cost.n:>5}" + "".join(_cell(cost.per_1000[m], online) for m in COLUMNS)
              + f"   {_prefix_note(cost)}")
    total = totals(costs)
    online = total["online"]
    if len(costs) > 1:
        print(f"{'all rubrics (sum)':<53}" + "".join(_cell(total[m], online) for m in COLUMNS))
    ratio = total["batch + cache"] / online
    print(f"  every call a cache miss (calls > 5 min apart; batch items not sharing the cache): online + cache "
          f"{total['online + cache, cold'] / online:.0%}, batch + cache {total['batch + cache, cold'] / online:.0%}")
    needed = break_even_hit_rate(total["batch + cache"], total["batch + cache, cold"], online)
    print(f"  batch + cache <= {GOAL:.0%} of online " + (
        "is out of reach: it stays above even when every call hits the cache" if needed is None else
        f"needs at least {needed:.0%} of calls to read the cache" if needed else "holds even with no cache hits"))
    out_now = sum(c.usage["online"].output_tokens for c in costs) / sum(c.n for c in costs)
    at = totals(costs, lambda c: with_output_tokens(c, output_tokens))
    print(f"  judge output measured: {out_now:.0f} tokens per verdict (the emulator's one-sentence reasoning); "
          f"at {output_tokens} tokens batch + cache = {at['batch + cache'] / at['online']:.0%} of online")
    return ratio


def _prefix_summary(costs: list[RubricCost]) -> str:
    sizes = sorted(c.prefix_tokens for c in costs)
    size = f"{sizes[0]:,}" if len(sizes) == 1 else f"{sizes[0]:,}-{sizes[-1]:,}"
    floors = " / ".join(sorted({f"{c.cache_floor:,} ({c.model})" for c in costs}))
    cached = sum(c.cached for c in costs)
    verdict = ("cached" if cached == len(costs) else "never cached" if not cached
               else f"{cached} of {len(costs)} cached")
    return f"static prefix ≈ {size} tokens vs cacheable minimum {floors}: {verdict}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Judge cost per 1,000 judged traces, two rubric sets.")
    parser.add_argument("--traces", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rubrics", type=Path, default=ROOT / "rubrics")
    parser.add_argument("--production-rubrics", type=Path, default=ROOT / "benchmarks" / "rubrics")
    parser.add_argument("--output-tokens", type=int, default=150,
                        help="verdict length for the sensitivity line (a real judge's reasoning + tool call)")
    args = parser.parse_args(argv)
    sets = (("shipped starter rubrics", args.rubrics),
            ("production-size rubric (calibrated scoring guide)", args.production_rubrics))

    emu = JudgeEmulator()
    emu.start()
    emu.configure(batch_delay_seconds=0)
    try:
        settings = Settings.from_env({"ANTHROPIC_API_KEY": "bench", "OPENAI_API_KEY": "bench",
                                      "LANGFUSE_PUBLIC_KEY": "pk-lf-bench", "LANGFUSE_SECRET_KEY": "sk-lf-bench",
                                      "ANTHROPIC_BASE_URL": emu.base_url, "OPENAI_BASE_URL": emu.base_url + "/v1",
                                      "TRACEJUDGE_RUBRICS_DIR": str(args.rubrics)})
        traces = seeded_traces(args.traces, args.seed)
        print(f"judge cost per 1,000 judged traces ({args.traces} seeded traces; prices from worker/accounting/prices.json; "
              f"% = share of plain online)")
        results = []
        for title, folder in sets:
            rubrics = load_rubrics(folder)
            costs = [measure_rubric(emu, settings, rubrics[key], jobs)
                     for key, jobs in rendered(rubrics, traces, settings).items() if jobs]
            results.append((title, costs, print_set(title, folder, costs, args.output_tokens)))
        print(f"\ngoal: batch + cache <= {GOAL:.0%} of plain online cost")
        for title, costs, ratio in results:
            print(f"  {title}: {ratio:.1%} {'met' if ratio <= GOAL else 'NOT met'} ({_prefix_summary(costs)})")
    finally:
        emu.stop()


if __name__ == "__main__":
    main()
