"""Agent-sized traces for the Langfuse emulator: one trace with hundreds of observations, each
carrying tens of kB of input/output (the chat history an agent re-sends on every step), and a
step name that repeats (`retrieval`) at different start times.

This is the trace the worker must not read whole: a v2 read with the `io` group returns every
observation's full input and output (events_full). Ask for the root (traceId +
isRootObservation=true) and for the named steps (traceId + name) instead.

The observations come back in ingestion order, the order an OTel exporter sends spans: each
when it ends. The root ends last, and the first retrieval runs longest, so ingestion order is
not start order and "the first `retrieval` in the list" depends on who sorted it.

    from emulators.agent_trace import load_agent_trace
    info = load_agent_trace(emulator, n_observations=500, payload_bytes=50_000)
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json

STEP_NAMES = ("llm-call", "tool-call", "retrieval")
STEP_TYPES = {"llm-call": "GENERATION", "tool-call": "TOOL", "retrieval": "RETRIEVER"}


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _filler(n_chars: int, step: int) -> str:
    unit = f"step {step}: the user asked about the refund policy; the tool returned three documents. "
    return (unit * (n_chars // len(unit) + 1))[:max(n_chars, 0)]


def _io(payload_bytes: int, step: int) -> tuple[list[dict], dict]:
    """About payload_bytes of JSON, split between the input history and the output."""
    half = payload_bytes // 2
    overhead = len(json.dumps([{"role": "system", "content": ""}, {"role": "user", "content": ""}]))
    history = [{"role": "system", "content": "You are a support agent. Use the tools."},
               {"role": "user", "content": _filler(half - overhead - 45, step)}]
    output = {"role": "assistant", "content": _filler(half - 30, step + 1)}
    return history, output


def agent_trace(n_observations: int = 500, payload_bytes: int = 50_000, *, retrievals: int = 5,
                trace_id: str | None = None, start: dt.datetime | None = None,
                environment: str = "production") -> list[dict]:
    """n_observations observations of one trace (a root plus n-1 steps), in ingestion order."""
    if n_observations < 2 or retrievals < 1 or retrievals > n_observations - 1:
        raise ValueError("need a root, at least one step, and 1..n-1 retrievals")
    trace_id = trace_id or hashlib.sha256(f"agent:{n_observations}:{payload_bytes}".encode()).hexdigest()[:32]
    start = start or dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    steps = n_observations - 1
    # retrievals spread over the run, so each has its own start time
    retrieval_steps = {round(i * (steps - 1) / max(retrievals - 1, 1)) for i in range(retrievals)}
    while len(retrieval_steps) < retrievals:  # tiny traces: fill the gaps
        retrieval_steps.add(min(set(range(steps)) - retrieval_steps))
    root_id = hashlib.sha256(f"{trace_id}:root".encode()).hexdigest()[:16]
    step_ms = 200
    end = start + dt.timedelta(milliseconds=step_ms * (steps + 2))
    common = {"traceId": trace_id, "environment": environment, "level": "DEFAULT", "userId": "user-agent",
              "sessionId": f"sess-{trace_id[:8]}", "release": "2026.11.3", "version": "agent-v1"}
    root = {**common, "id": root_id, "type": "AGENT", "name": "agent-run", "traceName": "agent-run",
            "parentObservationId": None, "isRootObservation": True, "startTime": _iso(start), "endTime": _iso(end),
            "tags": ["agent"], "metadata": {"feature": "agent", "tenant": "acme"},
            "input": [{"role": "user", "content": "Can I get a refund on my annual plan?"}],
            "output": {"role": "assistant", "content": "Yes: within 30 days of purchase. [[quality:0.80]]"}}
    observations = []
    first_retrieval = min(retrieval_steps)
    for i in range(steps):
        name = "retrieval" if i in retrieval_steps else STEP_NAMES[i % 2]
        begin = start + dt.timedelta(milliseconds=step_ms * (i + 1))
        # the first retrieval runs until just before the root ends, so it is ingested last of the steps
        finish = end - dt.timedelta(milliseconds=1) if i == first_retrieval else begin + dt.timedelta(milliseconds=150)
        history, output = _io(payload_bytes, i)
        observations.append({**common, "id": hashlib.sha256(f"{trace_id}:{i}".encode()).hexdigest()[:16],
                             "type": STEP_TYPES[name], "name": name,
                             "parentObservationId": root_id, "isRootObservation": False,
                             "startTime": _iso(begin), "endTime": _iso(finish), "input": history, "output": output,
                             "metadata": {"step": i}})
    observations.append(root)
    observations.sort(key=lambda o: o["endTime"])  # ingested as each span ends
    return observations


def load_agent_trace(emulator, n_observations: int = 500, payload_bytes: int = 50_000, **kwargs) -> dict:
    """Load one agent trace into a LangfuseEmulator; returns what a test needs to know about it."""
    observations = agent_trace(n_observations, payload_bytes, **kwargs)
    emulator.load_observations(observations)
    root = next(o for o in observations if o["isRootObservation"])
    retrievals = sorted((o for o in observations if o["name"] == "retrieval"), key=lambda o: o["startTime"])
    return {"trace_id": root["traceId"], "root_id": root["id"], "retrieval_ids": [o["id"] for o in retrievals],
            "ingestion_order": [o["id"] for o in observations], "observation_count": len(observations),
            "io_bytes": sum(len(json.dumps(o["input"])) + len(json.dumps(o["output"])) for o in observations)}
