"""Public test helpers for pipeline tests: seeding and the contract's expected selection."""
from __future__ import annotations

import hashlib
import shutil
import threading

import yaml

from samplers.sampler import Sampler
from samplers.source import LangfuseTraceSource
from worker.langfuse_client import build_langfuse_api
from tests.conftest import utc


def contract_sampled(trace_id: str, rate: float) -> bool:
    u = int.from_bytes(hashlib.sha256(("tracejudge:v1:" + trace_id).encode()).digest()[:8], "big") / 2**64
    return u < rate


def roots(observations: list[dict]) -> list[dict]:
    return [o for o in observations if o.get("isRootObservation") or not o.get("parentObservationId")]


def expected_pairs(observations: list[dict], rate: float) -> set[tuple[str, str]]:
    """(trace id, rubric name) the contract selects from a seed, computed independently."""
    with_retrieval = {o["traceId"] for o in observations if o.get("name") == "retrieval"}
    pairs = set()
    for root in roots(observations):
        env = root.get("environment") or ""
        name = root.get("traceName") or root.get("name") or ""
        if env.startswith("langfuse") or name.startswith("tracejudge"):
            continue
        if contract_sampled(root["traceId"], rate):
            pairs.add((root["traceId"], "helpfulness"))
            if root["traceId"] in with_retrieval:
                pairs.add((root["traceId"], "groundedness"))
    return pairs


def sampled_roots(observations: list[dict], rate: float) -> int:
    """Traces the hash selects (each is enqueued for every rubric, the worker checks retrieval)."""
    return len({t for t, _ in expected_pairs(observations, rate)})


def sampler_for(settings, runtime, broker) -> Sampler:
    return Sampler(settings, runtime.rubrics, LangfuseTraceSource(build_langfuse_api(settings)), broker,
                   runtime.redis)


def whole_window():
    return utc(days=16), utc(seconds=0)


def score_pairs(scores: list[dict]) -> list[tuple[str, str]]:
    return [(s["traceId"], s["name"]) for s in scores]


def one_trace(trace_id: str, answer, *, name: str = "support-chat", environment: str = "production",
              retrieval: list | None = None, minutes_ago: int = 120) -> list[dict]:
    """Observations (v2 shape) of one trace; ``answer`` None means the output is missing."""
    start = utc(minutes=minutes_ago).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    root_id = hashlib.sha256(trace_id.encode()).hexdigest()[:16]
    root = {
        "id": root_id, "traceId": trace_id, "type": "SPAN", "name": name, "traceName": name,
        "startTime": start, "endTime": start, "parentObservationId": None, "isRootObservation": True,
        "environment": environment, "level": "DEFAULT", "tags": ["prod"],
        "metadata": {"feature": name, "tenant": "acme"},
        "input": [{"role": "user", "content": "How do I reset my password?"}],
        "output": None if answer is None else {"role": "assistant", "content": answer},
    }
    observations = [root]
    if retrieval is not None:
        observations.append({"id": root_id[:8] + "retrieve", "traceId": trace_id, "type": "SPAN",
                             "name": "retrieval", "startTime": start, "endTime": start,
                             "parentObservationId": root_id, "isRootObservation": False,
                             "environment": environment, "level": "DEFAULT", "output": retrieval})
    return observations


def spy_on(judge_emu) -> list[dict]:
    """Every request body the judge emulator receives over HTTP, in arrival order."""
    seen, lock, handle = [], threading.Lock(), judge_emu.handle

    def recording(method, path, query, headers, body, **kw):
        with lock:
            seen.append(body)
        return handle(method, path, query, headers, body, **kw)

    judge_emu.handle = recording
    return seen


def openai_rubrics(tmp_path, source):
    """A copy of the rubrics in ``source`` with helpfulness judged by OpenAI."""
    target = tmp_path / "rubrics"
    shutil.copytree(source, target)
    meta_path = target / "helpfulness" / "v1" / "rubric.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["judge"] = {"provider": "openai", "model": "gpt-4o-2024-11-20", "max_tokens": 800}
    meta_path.write_text(yaml.safe_dump(meta))
    return target
