"""The slices a judged trace counts in for attribution: what it ran with, read off the trace
and its observations (issue 27, item 1).

``dimensions_of`` gives, per dimension, one bounded text value:

- ``prompt``: ``name@version`` of the judged generation(s) (the steps the rubric reads, else every
  generation of the trace; an observation rubric's own), several joined by ``+``;
- ``release``, ``version``, ``environment``: the trace's;
- ``model``: the judged generation(s)' model (what produced the answer, not the judge);
- ``input_tokens``: a bucket of the judged generation(s)' input tokens (``TOKEN_BUCKETS``), from
  the server's usage, else estimated from the input's characters (4 a token);
- ``tool``: the tools the trace called (its TOOL observations' names), ``none`` when it called none;
- ``meta.<key>``: each trace metadata key a rubric variable reads (``source: metadata``).

Values are cut to ``MAX_VALUE_CHARS``; the cardinality is bounded where they are read (the top
values per dimension and ``other``, worker/drift/cause.py), which also adds the feature and
tenant the cell does not fix (the drift cells' own segment keys).
"""
from __future__ import annotations

import json
import re

from worker.json_types import JSONDict
from worker.langfuse_io.steps import text_or_none
from worker.langfuse_io.traces import Trace
from worker.rubrics.fields import metadata_text
from worker.rubrics.rubric import Rubric

MAX_VALUE_CHARS = 80
TOKEN_BUCKETS = (1000, 3000, 10000)  # input tokens: <1k, 1k–3k, 3k–10k, ≥10k
_SIMPLE_PATH = re.compile(r"^\$\.([A-Za-z0-9_\-]+)$")


def token_bucket(tokens: float) -> str:
    edges = ["<1k", "1k-3k", "3k-10k"]
    for edge, name in zip(TOKEN_BUCKETS, edges):
        if tokens < edge:
            return name
    return "≥10k"


def metadata_keys(rubric: Rubric) -> tuple[str, ...]:
    """The trace metadata keys the rubric's variables read (``source: metadata`` at ``$.key``)."""
    keys = []
    for var in rubric.variables:
        if var.source == "metadata":
            for path in var.paths:
                match = _SIMPLE_PATH.match(path)
                if match:
                    keys.append(match.group(1))
    return tuple(dict.fromkeys(keys))


def dimensions_of(trace: Trace, rubric: Rubric, judged_names: tuple[str, ...] = ()) -> dict[str, str]:
    """The trace's value of every dimension it has (the module doc). ``judged_names``: the
    observation names the rubric reads (their generations are the judged ones)."""
    steps = trace.steps
    generations = [s for s in steps if s.get("type") == "GENERATION"]
    judged = [s for s in generations if s.get("name") in judged_names] or generations
    if trace.subject is not None:  # an observation rubric: the judged observation itself
        judged = steps
    out = generation_dims(judged)
    for name, value in (("release", trace.release), ("version", trace.version), ("environment", trace.environment)):
        text = text_or_none(value)
        if text:
            out[name] = text
    out.setdefault("input_tokens", token_bucket(_estimated_tokens(trace)))
    if trace.subject is None:
        tools = sorted({str(s.get("name")) for s in steps if s.get("type") == "TOOL" and s.get("name")})
        out["tool"] = "+".join(tools) if tools else "none"
    for key in metadata_keys(rubric):
        value = trace.metadata.get(key)
        if isinstance(value, (str, int, float)) and metadata_text(value):
            out[f"meta.{key}"] = metadata_text(value)
    return {k: v[:MAX_VALUE_CHARS] for k, v in out.items()}


def generation_dims(steps: list[JSONDict]) -> dict[str, str]:
    """The prompt (``name@version``), model and input-token bucket of these generations (lean
    steps, worker/langfuse_io/steps.py), several joined by ``+``; the bucket only when the server
    counted their tokens. worker/drift/signals.py reads every trace's with the same function."""
    out: dict[str, str] = {}
    for name in ("prompt", "model"):
        values = sorted({str(s[name]) for s in steps if s.get(name)})
        if values:
            out[name] = "+".join(values)
    counted = [float(s["input_tokens"]) for s in steps if s.get("input_tokens") is not None]
    if counted:
        out["input_tokens"] = token_bucket(sum(counted))
    return {k: v[:MAX_VALUE_CHARS] for k, v in out.items()}


def _estimated_tokens(trace: Trace) -> float:
    """Without the server's count: the input's characters, four a token."""
    source = trace.subject.get("input") if trace.subject is not None else trace.input
    text = source if isinstance(source, str) else json.dumps(source, ensure_ascii=False, default=str)
    return len(text) / 4
