"""A rubric's labelled examples: ``rubrics/<name>/examples.jsonl``, beside the version folders.

They live outside ``v<N>/`` so adding examples never changes a released version's sha256. One
JSON object per line::

    {"id": "ex-001",
     "trace": {"name": ..., "input": ..., "output": ..., "metadata": {...}, "tags": [...],
               "observations": [{"name": "retrieval", "output": ...}]},
     "labels": [{"rater": "alice", "value": 4}, {"rater": "bob", "value": 5}],
     "note": "optional"}

A label's value is on the rubric version's scale: a number within the bounds (a whole number
on an integer scale), one of the label strings of a categorical scale, or true/false. Blank
lines and lines starting with ``//`` are skipped. Every problem names ``file:line``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from worker.authoring.agreement import reference_label
from worker.errors import ConfigError
from worker.langfuse_io.traces import Trace
from worker.rubrics.rubric import Rubric
from worker.rubrics.scales import Level, Scale, is_real

FILENAME = "examples.jsonl"
_EXAMPLE_KEYS = {"id", "trace", "labels", "note"}
_TRACE_KEYS = {"id", "name", "environment", "input", "output", "metadata", "tags", "observations"}


@dataclasses.dataclass(frozen=True)
class Example:
    id: str
    trace: dict[str, object]  # as written in the file (Trace.from_dict reads it)
    labels: tuple[tuple[str, Level], ...]  # (rater, value on the scale), raters distinct
    note: str | None
    line: int

    def to_trace(self) -> Trace:
        """The example as the worker's view of a trace (as ``rubrics render --file`` reads one)."""
        return Trace.from_dict(self.trace, default_id=self.id)

    @property
    def ratings(self) -> dict[str, Level]:
        return dict(self.labels)


def examples_path(rubric: Rubric) -> Path:
    """``rubrics/<name>/examples.jsonl`` for any version of the rubric."""
    return rubric.path.parent / FILENAME


def levels(scale: Scale) -> list[Level] | None:
    """The scale's ordered categories, lowest value first; None for a continuous numeric scale."""
    if scale.kind == "categorical":
        return [label for label, _ in sorted(scale.labels, key=lambda pair: pair[1])]
    if scale.kind == "boolean":
        return [False, True]
    if scale.integer:
        lo, hi = scale.bounds
        return [step for step in range(int(lo), int(hi) + 1)]
    return None


def load_examples(path: Path, scale: Scale) -> list[Example]:
    """Every example in ``path``, validated against ``scale``; ConfigError names file:line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no labelled examples file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 ({exc.reason})") from None
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        where = f"{path}:{number}"
        example = parse_example(line, scale, where, number)
        if example.id in seen:
            raise ConfigError(f"{where}: duplicate id {example.id!r} (first on line {seen[example.id]})")
        seen[example.id] = number
        examples.append(example)
    if not examples:
        raise ConfigError(f"{path}: no examples in the file")
    return examples


def parse_example(line: str, scale: Scale, where: str, number: int = 0) -> Example:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: invalid JSON at column {exc.colno}: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each line must be a JSON object")
    unknown = set(raw) - _EXAMPLE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_EXAMPLE_KEYS)}")
    example_id = raw.get("id")
    if not isinstance(example_id, str) or not example_id.strip():
        raise ConfigError(f"{where}: 'id' is required (a non-empty string)")
    trace = raw.get("trace")
    if not isinstance(trace, dict):
        raise ConfigError(f"{where}: example {example_id}: 'trace' is required (an object)")
    _check_trace(trace, f"{where}: example {example_id}")
    note = raw.get("note")
    if note is not None and not isinstance(note, str):
        raise ConfigError(f"{where}: example {example_id}: 'note' must be a string")
    labels = raw.get("labels")
    if not isinstance(labels, list) or not labels:
        raise ConfigError(f"{where}: example {example_id}: 'labels' is required (a non-empty list of "
                          '{"rater": ..., "value": ...})')
    pairs: list[tuple[str, Level]] = []
    for i, label in enumerate(labels):
        at = f"{where}: example {example_id}: labels[{i}]"
        if not isinstance(label, dict) or set(label) != {"rater", "value"}:
            raise ConfigError(f"{at} must be an object with exactly 'rater' and 'value'")
        rater = label["rater"]
        if not isinstance(rater, str) or not rater.strip():
            raise ConfigError(f"{at}: 'rater' must be a non-empty string")
        if rater in dict(pairs):
            raise ConfigError(f"{at}: rater {rater!r} labels this example twice")
        pairs.append((rater, label_on_scale(label["value"], scale, at)))
    return Example(example_id, trace, tuple(pairs), note, number)


def label_on_scale(value: object, scale: Scale, where: str) -> Level:
    """The label as a level of the scale (number, label string or bool); ConfigError if off it."""
    if scale.kind == "boolean":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: value {value!r} is not true or false (the scale is boolean)")
        return value
    if scale.kind == "categorical":
        names = [label for label, _ in scale.labels]
        if not isinstance(value, str) or value not in names:
            raise ConfigError(f"{where}: value {value!r} is not one of the labels {names}")
        return value
    if not is_real(value) or not math.isfinite(value):
        raise ConfigError(f"{where}: value {value!r} is not a number (the scale is {scale.describe()})")
    lo, hi = scale.bounds
    if not lo <= value <= hi or (scale.integer and value != int(value)):
        raise ConfigError(f"{where}: value {value!r} is off the scale ({scale.describe()})")
    return int(value) if scale.integer else float(value)


def judge_label(verdict_raw: object, scale: Scale) -> Level:
    """A parsed verdict's raw score as a level comparable with human labels."""
    if scale.kind == "boolean":
        return bool(verdict_raw)
    if scale.kind == "categorical" and isinstance(verdict_raw, str):
        return verdict_raw
    if scale.kind == "numeric" and is_real(verdict_raw):
        return int(verdict_raw) if scale.integer else float(verdict_raw)
    raise TypeError(f"{verdict_raw!r} is not a parsed verdict on the scale ({scale.describe()})")


def _check_trace(trace: dict[str, object], where: str) -> None:
    unknown = set(trace) - _TRACE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown trace field(s) {sorted(unknown)}; allowed: {sorted(_TRACE_KEYS)}")
    if "output" not in trace:
        raise ConfigError(f"{where}: trace.output is required (the answer being judged)")
    if not isinstance(trace.get("metadata", {}), dict):
        raise ConfigError(f"{where}: trace.metadata must be an object")
    tags = trace.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ConfigError(f"{where}: trace.tags must be a list of strings")
    observations = trace.get("observations", [])
    if not isinstance(observations, list):
        raise ConfigError(f"{where}: trace.observations must be a list")
    for i, obs in enumerate(observations):
        if not isinstance(obs, dict) or not isinstance(obs.get("name"), str):
            raise ConfigError(f"{where}: trace.observations[{i}] must be an object with a 'name'")


def reference_label_of(example: Example, scale: Scale) -> Level:
    """The human reference label: the raters' median (numeric) or majority (ties to the lower value)."""
    return reference_label([value for _, value in example.labels], levels(scale), numeric=scale.kind == "numeric")
