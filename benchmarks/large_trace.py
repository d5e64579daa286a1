"""Judging one agent-sized trace: today's whole-trace fetch beside the fetch sized for agents.

One trace of 500 observations x 50 kB of input/output (emulators/agent_trace.py: the chat
history an agent re-sends on every step, a repeated `retrieval` step) is judged for
groundedness@v1 (it reads the trace's input and output and the `retrieval` step's output):
fetch, map, render, ask the judge, parse. Each fetch is run in the same process against the
same server, and the benchmark prints, per fetch:

- time: the wall time of fetch + judge (median of --repeat runs; the judge emulator answers at once);
- bytes read: HTTP response bytes the Langfuse client received, and requests made;
- peak memory: the peak of Python allocations during one judged trace (tracemalloc, a separate
  run from the timed ones, since tracing slows Python down).

Fetches compared: "whole (today)" is ``TraceReader.fetch(trace_id)``, every observation with
its full I/O, as the worker read every trace before; "root + named steps" is what the worker does
now, ``fetch(trace_id, observation_names(rubric))``; "legacy (v3 servers)" is the same named
fetch on the legacy API, which can only read the whole trace and keeps only what the rubric names.
Both emulators run in child processes so their memory is not counted.

    python -m benchmarks.large_trace [--observations 500] [--payload-bytes 50000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tracemalloc
import types
from pathlib import Path

import httpx
from langfuse.api import LangfuseAPI

from emulators.agent_trace import agent_trace
from emulators.stack import start_emulator, stop
from worker.errors import Unscored
from worker.judges import build_judge
from worker.judging.outcome import Tally
from worker.judging.pipeline import ask_and_parse, prepare
from worker.judging.variables import observation_names
from worker.langfuse_io.observations import ServerGeneration
from worker.langfuse_io.traces import TraceReader
from worker.rubrics.rubric import load_rubrics
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PK, SK = "pk-lf-bench", "sk-lf-bench"
RUBRIC = "groundedness@v1"


class CountingTransport(httpx.BaseTransport):
    """Counts the response bytes and requests of a client (the SDK's own HTTP client)."""

    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.bytes = 0
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        body = response.read()
        self.bytes += len(body)
        self.requests += 1
        return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)


def _api(base_url: str, transport: CountingTransport, timeout: float) -> LangfuseAPI:
    return LangfuseAPI(base_url=base_url, username=PK, password=SK, x_langfuse_public_key=PK,
                       httpx_client=httpx.Client(timeout=timeout, transport=transport), timeout=timeout)


def _judge_once(settings: Settings, rubric, base_url: str, mode: str, trace_id: str, *, traced: bool) -> dict:
    transport = CountingTransport()
    generation = ServerGeneration(clock=lambda: 0.0)
    reader = TraceReader(_api(base_url, transport, settings.langfuse_timeout_seconds), generation=generation)
    if mode == "legacy":
        generation.mark_v2_missing()  # as after a v3 server's 404 on v2; this clock never re-probes
    names = None if mode == "whole" else observation_names(rubric)
    judge = build_judge(rubric.judge.provider, settings)
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    trace = reader.fetch(trace_id, names)
    fetched = time.perf_counter()
    job = prepare(types.SimpleNamespace(settings=settings), rubric, trace, "bench")
    verdict, _ = ask_and_parse(judge, rubric, job.request, Tally())
    done = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1] if traced else None
    if traced:
        tracemalloc.stop()
    return {"seconds": done - started, "fetch_seconds": fetched - started, "bytes": transport.bytes,
            "requests": transport.requests, "peak": peak, "score": verdict.value,
            "observations_kept": len(trace.observations)}


def run(n_observations: int, payload_bytes: int, repeat: int) -> list[dict]:
    workdir = Path(tempfile.mkdtemp(prefix="tracejudge-large-trace-"))
    observations = agent_trace(n_observations, payload_bytes)
    trace_id = observations[0]["traceId"]
    seed = workdir / "agent.jsonl"
    seed.write_text("".join(json.dumps(o) + "\n" for o in observations))
    io_bytes = sum(len(json.dumps(o["input"])) + len(json.dumps(o["output"])) for o in observations)
    del observations
    langfuse, judge = None, None
    try:
        langfuse, langfuse_url = start_emulator("emulators.langfuse_api", [
            "--public-key", PK, "--secret-key", SK, "--generation", "v4-dual", "--seed-file", str(seed)],
            workdir / "langfuse.log")
        judge, judge_url = start_emulator("emulators.judge_api", [], workdir / "judge.log")
        settings = Settings.from_env({
            "LANGFUSE_BASE_URL": langfuse_url, "LANGFUSE_PUBLIC_KEY": PK, "LANGFUSE_SECRET_KEY": SK,
            "ANTHROPIC_API_KEY": "bench", "ANTHROPIC_BASE_URL": judge_url, "LANGFUSE_TIMEOUT": "120",
            "TRACEJUDGE_RUBRICS_DIR": str(ROOT / "rubrics")})
        rubric = load_rubrics(settings.rubrics_dir)[RUBRIC]
        rows = []
        for mode, label in (("whole", "whole (today)"), ("named", "root + named steps"),
                            ("legacy", "legacy (v3 servers)")):
            try:
                timed = [_judge_once(settings, rubric, langfuse_url, mode, trace_id, traced=False)
                         for _ in range(repeat)]
                traced = _judge_once(settings, rubric, langfuse_url, mode, trace_id, traced=True)
            except Unscored as exc:
                raise SystemExit(f"{label}: the trace ended unscored ({exc})") from None
            rows.append({"fetch": label, "seconds": statistics.median(r["seconds"] for r in timed),
                         "fetch_seconds": statistics.median(r["fetch_seconds"] for r in timed),
                         "bytes": timed[0]["bytes"], "requests": timed[0]["requests"], "peak": traced["peak"],
                         "score": timed[0]["score"], "kept": timed[0]["observations_kept"]})
        print(f"one agent trace: {n_observations} observations x {payload_bytes:,} B "
              f"({io_bytes / 1e6:.1f} MB of input/output), judged for {RUBRIC}; median of {repeat}")
        return rows
    finally:
        stop(judge)
        stop(langfuse)


def print_table(rows: list[dict]) -> None:
    header = f"{'fetch':<22}{'time s':>9}{'(fetch s)':>11}{'bytes read':>14}{'requests':>10}{'peak MB':>10}" \
             f"{'kept':>6}{'score':>7}"
    print(header)
    for r in rows:
        print(f"{r['fetch']:<22}{r['seconds']:>9.2f}{r['fetch_seconds']:>11.2f}{r['bytes']:>14,}{r['requests']:>10}"
              f"{r['peak'] / 1e6:>10.1f}{r['kept']:>6}{r['score']:>7}")
    base, new = rows[0], rows[1]
    print(f"root + named steps vs today: {base['bytes'] / max(new['bytes'], 1):.0f}x fewer bytes, "
          f"{base['seconds'] / max(new['seconds'], 1e-9):.1f}x faster, {base['peak'] / max(new['peak'], 1):.0f}x "
          f"less peak memory; same score: {base['score'] == new['score']}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=int, default=500)
    parser.add_argument("--payload-bytes", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print_table(run(args.observations, args.payload_bytes, args.repeat))


if __name__ == "__main__":
    main()
