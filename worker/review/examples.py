"""``tracejudge rubrics examples pull RUBRIC``: human-labelled production traces appended to the
rubric's ``examples.jsonl``, so ``rubrics test`` and its kappa gate grow with real traffic.

Each trace is stored as the judge would see it: the root's input, output, metadata and tags and
the observations the rubric reads, with PII and secrets masked by the judge's own redaction
(worker/judging/redaction.py, when ``TRACEJUDGE_REDACT_PII`` is on), every string inside the JSON
masked in place so the rubric's JSON paths still select the same fields. One example per trace
(id ``lf-<trace id>``): a trace already in the file, by its example id or its ``trace.id``, is
skipped, so a rerun appends nothing. Each line is checked as ``rubrics lint`` checks examples
before it is written, and the file is only appended to.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

from langfuse.api import LangfuseAPI

from worker.authoring.examples import examples_path, parse_example
from worker.judging.redaction import Redactor
from worker.judging.variables import observation_names
from worker.langfuse_io.traces import Trace, TraceReader
from worker.review.labels import human_labels, level_of
from worker.rubrics.rubric import Rubric

_OBSERVATION_KEYS = ("name", "type", "input", "output", "metadata", "model")


@dataclasses.dataclass
class PullResult:
    path: Path
    labelled_traces: int = 0
    added: int = 0
    already_present: int = 0
    off_scale: int = 0  # labelled traces none of whose labels are on this version's scale


def present_traces(path: Path) -> set[str]:
    """Trace ids the examples file already holds (by ``trace.id``, or an ``lf-<trace id>`` example id)."""
    seen: set[str] = set()
    if not path.is_file():
        return seen
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            raw = json.loads(line)
        except ValueError:
            continue  # blank, a // comment, or broken (rubrics lint names it)
        if not isinstance(raw, dict):
            continue
        if isinstance(raw.get("trace"), dict) and raw["trace"].get("id"):
            seen.add(str(raw["trace"]["id"]))
        if isinstance(raw.get("id"), str) and raw["id"].startswith("lf-"):
            seen.add(raw["id"][3:])
    return seen


def _masked(value: object, redactor: Redactor | None) -> object:
    if redactor is None:
        return value
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, list):
        return [_masked(v, redactor) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v, redactor) for k, v in value.items()}
    return value


def example_trace(trace: Trace, rubric: Rubric, *, redact: bool) -> dict[str, object]:
    redactor = Redactor() if redact else None
    wanted = set(observation_names(rubric))
    observations = [{k: o.get(k) for k in _OBSERVATION_KEYS if o.get(k) is not None}
                    for o in trace.observations if o.get("name") in wanted]
    out: dict[str, object] = {
        "id": trace.id, "name": trace.name, "environment": trace.environment,
        "input": _masked(trace.input, redactor), "output": _masked(trace.output, redactor),
        "metadata": _masked(trace.metadata, redactor), "tags": list(trace.tags),
        "observations": _masked(observations, redactor)}
    return {k: v for k, v in out.items() if v is not None or k == "output"}


def pull_examples(api: LangfuseAPI, traces: TraceReader, rubric: Rubric, *, since: dt.datetime,
                  redact: bool = True, path: Path | None = None) -> PullResult:
    path = Path(path or examples_path(rubric))
    result = PullResult(path)
    labelled = human_labels(api, {rubric.name}, since).get(rubric.name, {})
    result.labelled_traces = len(labelled)
    present = present_traces(path)
    lines = []
    for trace_id in sorted(labelled):
        if trace_id in present:
            result.already_present += 1
            continue
        ratings = [{"rater": rater, "value": level_of(rubric, raw)} for rater, (raw, _) in sorted(labelled[trace_id].items())]
        ratings = [r for r in ratings if r["value"] is not None]
        if not ratings:
            result.off_scale += 1
            continue
        trace = traces.fetch(trace_id, observation_names(rubric))
        example = {"id": f"lf-{trace_id}", "trace": example_trace(trace, rubric, redact=redact), "labels": ratings,
                   "note": "production trace labelled in Langfuse (pulled "
                           f"{dt.datetime.now(dt.timezone.utc).date().isoformat()})"}
        line = json.dumps(example, ensure_ascii=False, default=str)
        parse_example(line, rubric.scale, f"{path}: new example lf-{trace_id}")  # raises ConfigError if invalid
        lines.append(line)
        present.add(trace_id)
    if lines:
        existing = path.read_text(encoding="utf-8") if path.is_file() else ""
        with path.open("a", encoding="utf-8") as fh:
            if existing and not existing.endswith("\n"):
                fh.write("\n")
            fh.write("\n".join(lines) + "\n")
    result.added = len(lines)
    return result
