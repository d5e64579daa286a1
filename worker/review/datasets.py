"""Failures into a Langfuse dataset per rubric, each trace once, ready for offline regression runs.

A failure is a trace the judge scored below ``review.dataset.below``, or one users flagged with
the feedback score ``review.dataset.user_feedback`` names (a number below its ``below``, or one
of its ``values``). The item's input is the trace's input (what a regression run replays), its
metadata the failing output and why it is there; ``sourceTraceId`` links it to the trace.

Langfuse upserts a dataset by name and a dataset item by id, so the item id is deterministic
(``dataset_item_id_for``): a repeat, even after a crash between the POST and the marker, rewrites
the same item, never adds a second. The Redis markers spare the repeat itself:

    tracejudge:review:dataset:<name>                 the dataset was created
    tracejudge:review:dataset-item:<name>:<trace>    the trace is in it (kept MARKER_TTL_S)
    tracejudge:review:dataset-pending:<name>         hash trace -> why, while its trace cannot be read

A trace that cannot be read right now (Langfuse down, a trace not yet or no longer there) waits
in the pending hash and is retried by every later tick, so one unreadable trace never holds the
scan back; after MAX_ATTEMPTS the item is written without its input (the link still works).

A dataset holds only traces its rubric applies to. A judged failure is one by construction; a
user-flagged trace (the feedback score is on any trace of the project) is checked on its read as
the sampler and the worker check a trace they judge (``out_of_scope``): environment, trace name,
tags, metadata, the named steps of a trace rubric, a matching observation for an observation
rubric; Langfuse's internal traces and our own never. One whose scope cannot be checked (never
readable) goes in only when the rubric has nothing to check (``applies_to`` empty).
"""
from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator

import redis
from langfuse.api import LangfuseAPI

from samplers import observations as observation_scope
from samplers.selection import applies
from samplers.source import TraceRef, is_own_or_internal
from worker.errors import TraceJudgeError
from worker.judging.session_view import has_tool_calls
from worker.langfuse_io.client import NO_SDK_RETRIES
from worker.langfuse_io.traces import Trace, TraceReader
from worker.redis_client import as_text
from worker.retrying import call_with_retries
from worker.review.queue import MARKER_TTL_S, STATS
from worker.rubrics.review_spec import FeedbackSpec
from worker.rubrics.rubric import Rubric
from worker.rubrics.scales import is_real

DATASET = "tracejudge:review:dataset:"
ITEM = "tracejudge:review:dataset-item:"
PENDING = "tracejudge:review:dataset-pending:"
MAX_ATTEMPTS = 10
SKIP_TTL_S = 86400
SCOPED = frozenset({"user_feedback"})  # reasons whose traces are checked against the rubric's applies_to
log = logging.getLogger("tracejudge.review")
_NAMESPACE = uuid.UUID("3b7e52a1-8f0c-4c55-9d62-0f5a2c9e4d17")


def dataset_name(rubric: Rubric) -> str:
    spec = rubric.review.dataset if rubric.review else None
    return (spec.name if spec and spec.name else None) or f"tracejudge-{rubric.name}-failures"


def dataset_item_id_for(dataset: str, trace_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{dataset}|{trace_id}"))


def flagged(spec: FeedbackSpec, value: object) -> bool:
    """Whether a user-feedback score's value flags its trace."""
    if spec.values and str(value) in spec.values:
        return True
    return spec.below is not None and is_real(value) and value < spec.below


def checks_scope(rubric: Rubric) -> bool:
    """Whether the rubric applies to only some traces (anything to check on a trace's read)."""
    return rubric.target != "trace" or rubric.applies_to != type(rubric.applies_to)()


def out_of_scope(rubric: Rubric, trace: Trace) -> str | None:
    """Why ``rubric`` does not apply to ``trace`` (None when it does): the sampler's checks on
    the trace (samplers/selection.py, samplers/observations.py) and the worker's on its read."""
    ref = TraceRef(trace_id=trace.id, name=trace.name, environment=trace.environment, tags=tuple(trace.tags or ()),
                   metadata=trace.metadata if isinstance(trace.metadata, dict) else {}, timestamp=trace.timestamp)
    if is_own_or_internal(ref):
        return "an internal or tracejudge trace"
    a = rubric.applies_to
    if rubric.target == "observation":
        for obs in trace.observations:
            metadata = obs.get("metadata")
            candidate = observation_scope.ObservationRef(
                trace_id=trace.id, observation_id=str(obs.get("id")), type=obs.get("type"), name=obs.get("name"),
                level=obs.get("level"), model=obs.get("model"),
                environment=obs.get("environment") or trace.environment, trace_name=trace.name, tags=ref.tags,
                metadata=metadata if isinstance(metadata, dict) else {}, start=None)
            if observation_scope.applies(rubric, candidate) and not (
                    a.with_tool_calls and obs.get("type") == "GENERATION" and not has_tool_calls(obs)):
                return None
        return "no observation the rubric applies to"
    if not applies(rubric, ref):
        return (f"trace {trace.name!r} in {trace.environment!r} is outside applies_to "
                "(environments, trace_names, tags, metadata)")
    missing = [n for n in a.observations if trace.observation(n) is None] if rubric.target == "trace" else []
    if missing:
        return f"no observation named {', '.join(missing)}"
    return None


def feedback_specs(rubrics: dict[str, Rubric]) -> Iterator[tuple[Rubric, FeedbackSpec]]:
    """The newest loaded version of each rubric that names a user-feedback score."""
    newest: dict[str, Rubric] = {}
    for rubric in rubrics.values():
        if rubric.name not in newest or rubric.version > newest[rubric.name].version:
            newest[rubric.name] = rubric
    for rubric in newest.values():
        spec = rubric.review.dataset if rubric.review else None
        if spec and spec.user_feedback:
            yield rubric, spec.user_feedback


class DatasetWriter:
    """Adds failing traces to one rubric's dataset, each once."""

    def __init__(self, api: LangfuseAPI, client: redis.Redis, traces: TraceReader, rubric: Rubric):
        self.api, self.client, self.traces, self.rubric = api, client, traces, rubric
        self.name = dataset_name(rubric)

    def ensure(self) -> None:
        if self.client.exists(DATASET + self.name):
            return
        call_with_retries(lambda: self.api.datasets.create(
            name=self.name, metadata={"tracejudge_rubric": self.rubric.name}, request_options=NO_SDK_RETRIES,
            description=f"tracejudge: production failures of the rubric {self.rubric.name} (scored below its "
                        "threshold, or flagged by users), for offline regression runs"))
        self.client.set(DATASET + self.name, 1)

    def add(self, trace_id: str, reason: str, details: dict[str, object], *, attempts: int = 0) -> bool:
        """True when this call put the trace in the dataset; False when it was there already, or
        its trace cannot be read now (it is then retried by ``retry_pending``)."""
        key = f"{ITEM}{self.name}:{trace_id}"
        if self.client.exists(key):
            return False
        if not attempts and self.client.hexists(PENDING + self.name, trace_id):
            return False  # seen again by an overlapping scan: ``retry_pending`` has it
        scoped = reason in SCOPED and checks_scope(self.rubric)
        try:
            trace = self.traces.fetch(trace_id, names=self._names() if scoped else ())
            content: dict[str, object] = {"input": trace.input, "failing_output": trace.output,
                                          "trace_name": trace.name, "trace_metadata": trace.metadata}
        except TraceJudgeError as exc:
            if attempts + 1 < MAX_ATTEMPTS:
                self.client.hset(PENDING + self.name, trace_id, json.dumps(
                    {"reason": reason, "details": details, "attempts": attempts + 1}, default=str))
                log.info("dataset item waits for its trace", extra={"trace_id": trace_id, "dataset": self.name,
                                                                      "error_type": type(exc).__name__})
                return False
            if scoped:
                return self._skip(trace_id, reason, f"trace unreadable, its scope unchecked: {type(exc).__name__}")
            content = {"input": None, "trace_unreadable": f"{type(exc).__name__}: {str(exc)[:200]}"}
        else:
            why = out_of_scope(self.rubric, trace) if scoped else None
            if why:
                return self._skip(trace_id, reason, why)
        self.ensure()
        metadata = {"reason": reason, "rubric": self.rubric.name, **{k: v for k, v in content.items() if k != "input"},
                    **details}
        call_with_retries(lambda: self.api.dataset_items.create(
            dataset_name=self.name, id=dataset_item_id_for(self.name, trace_id), input=content["input"],
            metadata=metadata, source_trace_id=trace_id, request_options=NO_SDK_RETRIES))
        self.client.set(key, reason, ex=MARKER_TTL_S)
        self.client.hdel(PENDING + self.name, trace_id)
        self.client.hincrby(STATS, f"dataset_items:{self.rubric.name}", 1)
        return True

    def _names(self) -> tuple[str, ...] | None:
        """The observations the scope check reads: the named steps of a trace rubric, every
        observation for an observation rubric (which must have one it applies to)."""
        return None if self.rubric.target == "observation" else tuple(self.rubric.applies_to.observations)

    def _skip(self, trace_id: str, reason: str, why: str) -> bool:
        """A flagged trace the rubric does not apply to: not in its dataset (counted, logged)."""
        # Remembered a day, so the scans' overlap does not read it again (a later version may widen the scope).
        self.client.set(f"{ITEM}{self.name}:{trace_id}", f"out of scope: {why[:200]}", ex=SKIP_TTL_S)
        self.client.hincrby(STATS, f"dataset_out_of_scope:{self.rubric.name}", 1)
        log.info("flagged trace outside the rubric's scope: not in its dataset",
                 extra={"trace_id": trace_id, "dataset": self.name, "reason": reason, "why": why[:200]})
        return False

    def retry_pending(self) -> int:
        """Try the traces that could not be read before again; returns how many were added."""
        added = 0
        for trace_id, raw in sorted(self.client.hgetall(PENDING + self.name).items()):
            pending = json.loads(raw)
            self.client.hdel(PENDING + self.name, trace_id)
            added += self.add(as_text(trace_id), pending["reason"], pending["details"], attempts=pending["attempts"])
        return added
