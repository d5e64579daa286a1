"""Public test helpers: constants, the environment of the test stack, building and installing a
runtime, running the real worker, seeding traces and the contract's expected selection.

Fixtures live in conftest.py (which imports from here); tests import helpers from this module,
never from conftest. Worker modules are imported inside the helpers that need them, so importing
this module (as conftest does for every test) pulls in no more of the worker than conftest did.
"""
from __future__ import annotations

import types
import contextlib
import dataclasses
import datetime as dt
import hashlib
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from emulators.stack import free_port  # the one free-port helper, for tests too

if TYPE_CHECKING:
    from samplers.sampler import Sampler
    from worker.runtime import Runtime

__all__ = [
    "REPO", "PK", "SK", "PIPELINE_RUBRICS",
    "free_port", "make_env", "utc", "drain",
    "hand_built_runtime", "installed",
    "contract_sampled", "roots", "expected_pairs", "sampled_roots", "sampler_for", "whole_window",
    "score_pairs", "one_trace", "spy_on", "openai_rubrics", "Webhook", "wait_until",
]

REPO = Path(__file__).resolve().parent.parent
PK, SK = "pk-lf-test", "sk-lf-test"
PIPELINE_RUBRICS = ("helpfulness", "groundedness")


# -- the test stack ------------------------------------------------------------------------------

def make_env(langfuse_emu, judge_emu, redis_url, rubrics_dir: Path, **extra) -> dict[str, str]:
    env = {
        "LANGFUSE_BASE_URL": langfuse_emu.base_url,
        "LANGFUSE_PUBLIC_KEY": PK,
        "LANGFUSE_SECRET_KEY": SK,
        "REDIS_URL": redis_url,
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": judge_emu.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": judge_emu.base_url + "/v1",
        "TRACEJUDGE_RUBRICS_DIR": str(rubrics_dir),
        "TRACEJUDGE_SETTLE_SECONDS": "0",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def utc(**delta) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(**delta)


def drain(broker, client, *, threads: int = 8, timeout: float = 60.0, confirm: bool = True) -> None:
    """Run a real dramatiq worker in this process until the judge queue is empty; then, as the
    scheduler would, read the written scores back from Langfuse (``confirm``), so they count in
    the drift aggregates."""
    import dramatiq

    from worker.fleet.queues import queue_depth
    from worker.runtime import get_runtime

    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=50)
    worker.start()
    try:
        deadline = time.monotonic() + timeout
        while queue_depth(client).outstanding:
            if time.monotonic() > deadline:
                raise AssertionError(f"queue not drained in {timeout}s: {queue_depth(client)}")
            time.sleep(0.05)
    finally:
        worker.stop()
    if confirm:
        confirm_all(get_runtime())


def confirm_all(rt) -> None:
    """What the scheduler's next tick does: read back every score written so far."""
    from worker.judging.confirm import GRACE_SECONDS, confirm_writes

    confirm_writes(rt, now=time.time() + GRACE_SECONDS)


# -- runtimes ------------------------------------------------------------------------------------

def hand_built_runtime(settings, redis_client, **settings_changes) -> "Runtime":
    """The one way tests build a runtime (the ``runtime`` fixture's included).

    Built through ``Runtime.__init__``, as the worker builds its own, so it has every attribute
    the real one has, today's and any Runtime gains later. ``settings_changes`` replace those
    Settings fields first (``rubrics_dir=...``, ``langfuse_base_url=...``, ...); the runtime's
    ``settings`` are the result. It is not installed: see ``installed``.
    """
    from worker.runtime import Runtime

    if settings_changes:
        settings = dataclasses.replace(settings, **settings_changes)
    return Runtime(settings, redis_client=redis_client)


@contextlib.contextmanager
def installed(rt: "Runtime"):
    """``rt`` is the process's runtime (the one the dramatiq actors use) until the block ends."""
    from worker.runtime import set_runtime

    set_runtime(rt)
    try:
        yield rt
    finally:
        set_runtime(None)


# -- seeding and the contract's expected selection -----------------------------------------------

def contract_sampled(trace_id: str, rate: float) -> bool:
    u = int.from_bytes(hashlib.sha256(("tracejudge:v1:" + trace_id).encode()).digest()[:8], "big") / 2**64
    return u < rate


def roots(observations: list[dict]) -> list[dict]:
    return [o for o in observations if o.get("isRootObservation") or not o.get("parentObservationId")]


def halves(observations: list[dict]) -> tuple[list[dict], list[dict]]:
    """The seed split near its middle at a trace's edge: a cut through a trace would load its
    retrieval span only with the second half, after the first pass judged it without one (a late
    observation, which is not what the tests that load in two halves are about)."""
    half = len(observations) // 2
    while 0 < half < len(observations) and observations[half]["traceId"] == observations[half - 1]["traceId"]:
        half += 1
    return observations[:half], observations[half:]


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


def sampler_for(settings, runtime, broker) -> "Sampler":
    from samplers.sampler import Sampler
    from samplers.source import LangfuseTraceSource
    from worker.langfuse_io.client import build_langfuse_api

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


def copy_rubrics(tmp_path: Path, *names: str) -> Path:
    """A rubrics folder of the shipped rubrics ``names``, with the prompt files every version is
    hashed with."""
    from worker.rubrics.rubric import SHARED_PROMPTS

    root = tmp_path / "rubrics"
    root.mkdir()
    for name in names:
        shutil.copytree(REPO / "rubrics" / name, root / name)
    for shared in SHARED_PROMPTS:
        shutil.copy(REPO / "rubrics" / shared, root / shared)
    return root


def start_worker_command(env: dict, log_path: Path, *, processes: int, threads: int) -> subprocess.Popen:
    """``tracejudge worker`` as the Procfile runs it, in a process group of its own (stop it with
    ``os.killpg``), its output appended to ``log_path``."""
    from emulators.stack import child_env

    return subprocess.Popen(
        [sys.executable, "-c", "from worker.cli.main import main; main()", "worker", "--processes", str(processes),
         "--threads", str(threads)], env=child_env(env), stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
        start_new_session=True)


class Webhook:
    """An alert webhook on a free port that keeps every JSON body it receives (``received``)."""

    def __init__(self):
        from emulators.http_base import Emulator

        received, lock = [], threading.Lock()

        class Receiver(Emulator):
            def handle(self, method, path, query, headers, body):
                with lock:
                    received.append(body)
                return 200, {"ok": True}, {}

        self.received, self._server = received, Receiver("127.0.0.1", 0)

    def start(self) -> str:
        self._server.start()
        self.base_url = self._server.base_url
        return self.base_url

    def stop(self) -> None:
        self._server.stop()


def wait_until(predicate, timeout: float, what, proc=None, log_path=None, *, interval: float = 0.2,
               ignoring: tuple[type[BaseException], ...] = ()) -> None:
    """Poll ``predicate`` every ``interval`` s (an exception in ``ignoring`` counts as not yet);
    fail after ``timeout`` s, or at once when the worker subprocess ``proc`` exited, with the tail
    of its log (``log_path``) either way. ``what`` names the wait in the failure: a string, or a
    function returning one (called only on failure, e.g. to show the state it waited on)."""
    def tail() -> str:
        return f":\n{Path(log_path).read_text(errors='replace')[-3000:]}" if log_path is not None else ""

    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except ignoring:
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited early ({proc.returncode}){tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}{tail()}")
        time.sleep(interval)


class RecordingBroker:
    """The part of a dramatiq broker the Retries middleware uses: every actor has
    ``actor_options`` (none: dramatiq's defaults apply), and enqueue records each delay."""

    def __init__(self, actor_options: dict | None = None) -> None:
        self.delays: list[int | None] = []
        self.actor_options = actor_options or {}

    def get_actor(self, name: str):
        return types.SimpleNamespace(options=self.actor_options)

    def enqueue(self, message, *, delay: int | None = None):
        self.delays.append(delay)
        return message
