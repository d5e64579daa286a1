"""The traces the check sends: the seed's shapes (emulators/seed.py) under fresh ids, started a
few seconds in the past, sent over OTLP/JSON as the v4 SDKs send them (Langfuse's attribute
mapping, as in ../shared/realfuse/ingest_seed.py)."""
from __future__ import annotations

import collections
import datetime as dt
import json
import random

import httpx

from emulators import seed
from tests.realfuse.common import PUBLIC_KEY, SECRET_KEY, Failed, log

CASES = ("non_utf8", "prompt_injection", "jinja_syntax")  # the seed's malformed answers sent
# (not missing_output: a young trace without output waits up to an hour for it, by design)


class Plan:
    """What was sent: observations in the seed's format, and per trace what it is."""

    def __init__(self):
        self.observations: list[dict] = []
        self.traces: dict[str, dict] = {}  # trace id -> {kind, case, excluded, session}
        self.sessions: dict[str, list[str]] = {}

    def add(self, observations: list[dict], kind: str, *, case: str | None = None, excluded: bool = False,
            session: str | None = None) -> str:
        trace_id = observations[0]["traceId"]
        for obs in observations:
            obs["sessionId"] = session  # only the multi-turn sessions carry one
        self.observations += observations
        self.traces[trace_id] = {"kind": kind, "case": case, "excluded": excluded, "session": session}
        if session:
            self.sessions.setdefault(session, []).append(trace_id)
        return trace_id

    def judged_observations(self) -> list[tuple[str, str]]:
        """(trace id, observation id) of every GENERATION and TOOL an observation rubric lists."""
        return [(o["traceId"], o["id"]) for o in self.observations
                if o["type"] in ("GENERATION", "TOOL") and not self.traces[o["traceId"]]["excluded"]]

    def trace_of(self, subject_id: str) -> str | None:
        """The trace of a trace or observation id."""
        if subject_id in self.traces:
            return subject_id
        return next((o["traceId"] for o in self.observations if o["id"] == subject_id), None)

    def case(self, case: str) -> str:
        return next(t for t, info in self.traces.items() if info["case"] == case)


def _hex(rng: random.Random, n: int) -> str:
    return "%0*x" % (n, rng.getrandbits(n * 4))


def build_plan(rng: random.Random, now: dt.datetime) -> Plan:
    """39 traces, each started 8 to 22 s before ``now``."""
    plan = Plan()

    def at() -> dt.datetime:
        return now - dt.timedelta(seconds=rng.uniform(8, 22))

    features = list(seed.FEATURES)
    for i in range(20):  # plain traffic: every feature, six tenants; search-qa has a retrieval step
        feature, tenant = features[i % 4], seed.TENANTS[i % 6]
        q = min(1.0, max(0.0, rng.gauss(seed.FEATURES[feature][0], 0.25)))
        observations = seed._trace(rng, _hex(rng, 32), at(), feature, tenant, "production",
                                   seed._answer(rng, feature, q))
        # the generation names its prompt (attribution's slices and every trace's signals read it back)
        observations[1].update(promptName=feature, promptVersion=1 + i % 2)
        trace_id = plan.add(observations, "single")
        plan.traces[trace_id]["prompt"] = f"{feature}@{1 + i % 2}"
    for i in range(6):  # agent runs: a GENERATION calling a tool, the TOOL, the answer (seed.generate_targets)
        tool, args, result = seed.TOOLS[i % len(seed.TOOLS)]
        q = min(1.0, max(0.0, rng.gauss(0.75, 0.2)))
        root, generation = seed._trace(rng, _hex(rng, 32), at(), "support-chat", seed.TENANTS[i % 4], "production",
                                       seed._answer(rng, "support-chat", q), name="support-agent")
        planner = {**generation, "id": _hex(rng, 16), "name": "plan",
                   "output": {"role": "assistant", "tool_calls": [{"id": f"call_{_hex(rng, 6)}", "type": "function",
                              "function": {"name": tool, "arguments": json.dumps(args)}}]}}
        step = {**generation, "id": _hex(rng, 16), "type": "TOOL", "name": tool, "parentObservationId": planner["id"],
                "input": args, "output": result, "providedModelName": None}
        plan.add([root, planner, step, {**generation, "name": "answer"}], "agent")
    for s in range(3):  # multi-turn chat sessions: three turns 3 to 5 s apart
        session = f"chat-{_hex(rng, 12)}"
        when = now - dt.timedelta(seconds=22 - s)
        for _turn in range(3):
            q = min(1.0, max(0.0, rng.gauss(0.78, 0.2)))
            plan.add(seed._trace(rng, _hex(rng, 32), when, "support-chat", seed.TENANTS[s], "production",
                                 seed._answer(rng, "support-chat", q)), "session", session=session)
            when += dt.timedelta(seconds=rng.uniform(3, 5))
    # the seed's malformed answers under fresh ids (the seed's ids are fixed: a rerun would reuse them)
    malformed = seed._malformed(random.Random(0), now)
    for case in CASES:
        root = next(o for o in malformed if o["traceId"] == seed.MALFORMED[case] and o["isRootObservation"])
        plan.add(seed._trace(rng, _hex(rng, 32), at(), "support-chat", "acme", "production", root["output"]["content"]),
                 "malformed", case=case)
    # Never judged: tracejudge's own traces. (No langfuse-* environment: the server's public ingestion
    # strips that reserved prefix, "langfuse-evaluation" is stored as "evaluation".)
    plan.add(seed._trace(rng, _hex(rng, 32), at(), "support-chat", "acme", "production",
                         seed._answer(rng, "support-chat", 0.5), name="tracejudge-judge"),
             "excluded", case="tracejudge-judge", excluded=True)
    return plan


def _ns(stamp: str) -> str:
    when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return str(int(when.replace(microsecond=0).timestamp()) * 10**9 + when.microsecond * 1000)


def _attr(key: str, value) -> dict:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return {"key": key, "value": {"arrayValue": {"values": [{"stringValue": x} for x in value]}}}
    # json.dumps escapes a lone surrogate as \udcc3: the server keeps that text, as a JS app's SDK sends it
    return {"key": key, "value": {"stringValue": value if isinstance(value, str) else json.dumps(value)}}


def _span(obs: dict, root: dict) -> dict:
    """One observation as an OTel span; the trace's attributes on every span (propagate_attributes)."""
    attrs: dict = {}
    for field, key in (("traceName", "langfuse.trace.name"), ("userId", "user.id"), ("sessionId", "session.id"),
                       ("environment", "langfuse.environment"), ("release", "langfuse.release"),
                       ("version", "langfuse.version")):
        value = (root.get("traceName") or root.get("name")) if field == "traceName" else root.get(field)
        if value is not None:
            attrs[key] = value
    if root.get("tags"):
        attrs["langfuse.trace.tags"] = root["tags"]
    for k, v in (root.get("metadata") or {}).items():
        attrs[f"langfuse.trace.metadata.{k}"] = v if isinstance(v, str) else json.dumps(v)
    if obs is root:
        for field in ("input", "output"):
            if root.get(field) is not None:
                attrs[f"langfuse.trace.{field}"] = root[field]
    attrs["langfuse.observation.type"] = (obs.get("type") or "SPAN").lower()
    for field, key in (("input", "langfuse.observation.input"), ("output", "langfuse.observation.output"),
                       ("level", "langfuse.observation.level"), ("providedModelName", "langfuse.observation.model.name"),
                       ("usageDetails", "langfuse.observation.usage_details"),
                       ("promptName", "langfuse.observation.prompt.name"),
                       ("promptVersion", "langfuse.observation.prompt.version"),
                       ("costDetails", "langfuse.observation.cost_details")):
        if obs.get(field) is not None:
            attrs[key] = obs[field]
    span = {"traceId": obs["traceId"], "spanId": obs["id"], "name": obs.get("name") or "span", "kind": 1,
            "startTimeUnixNano": _ns(obs["startTime"]), "endTimeUnixNano": _ns(obs.get("endTime") or obs["startTime"]),
            "attributes": [_attr(k, v) for k, v in attrs.items()], "status": {}}
    if obs.get("parentObservationId"):
        span["parentSpanId"] = obs["parentObservationId"]
    return span


def send_otlp(base: str, plan: Plan) -> None:
    by_trace: dict[str, list[dict]] = collections.defaultdict(list)
    for obs in plan.observations:
        by_trace[obs["traceId"]].append(obs)
    spans = []
    for observations in by_trace.values():
        root = next(o for o in observations if not o.get("parentObservationId"))
        spans += [_span(o, root) for o in observations]
    payload = {"resourceSpans": [{"resource": {"attributes": [_attr("service.name", "tracejudge-langfuse-test")]},
                                  "scopeSpans": [{"scope": {"name": "tracejudge-langfuse-test", "version": "1"},
                                                  "spans": spans}]}]}
    answer = httpx.post(base + "/api/public/otel/v1/traces", content=json.dumps(payload).encode(),
                        auth=(PUBLIC_KEY, SECRET_KEY), timeout=120,
                        headers={"content-type": "application/json", "x-langfuse-ingestion-version": "4"})
    if answer.status_code != 200:
        raise Failed(f"OTLP ingest answered {answer.status_code}: {answer.text[:300]}")
    log(f"sent {len(by_trace)} traces ({len(spans)} spans) over OTLP/JSON: 200")
