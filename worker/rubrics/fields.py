"""The fields of rubric.yaml: what each section may hold, and its parser.

Each parser reads one section of a ``RubricDoc`` and records every problem with its line,
returning a usable value (or None) so the rest of the file is still checked. The ``judge``,
``review`` and ``calibration`` sections have their own modules (judge_spec.py, review_spec.py),
``target`` and ``session`` theirs (targets.py); rubric.py calls them all.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import TypedDict, TypeGuard

from worker.errors import ConfigError
from worker.rubrics.doc import Keys, RubricDoc, is_number
from worker.rubrics.power_spec import POWER_KEYS, POWER_SUBKEYS
from worker.rubrics.review_spec import CALIBRATION_KEYS, DATASET_KEYS, FEEDBACK_KEYS, REVIEW_KEYS
from worker.rubrics.scales import Scale
from worker.rubrics.targets import ALL_SOURCES as _SOURCES
from worker.rubrics.targets import SESSION_KEYS

_OBSERVATION_FIELDS = ("input", "output", "metadata", "model", "type", "level", "statusMessage", "name")
# Names the templates' render context already uses (worker/judging/prompt.py): a variable may not hide them.
RESERVED_NAMES = ("rubric", "scale")

# Keys the format knows; anything else is a warning (most likely a typo that silently does nothing).
_KNOWN: dict[tuple[str, ...], set[str]] = {
    (): {"name", "version", "description", "owner", "score", "applies_to", "sampling", "variables",
         "judge", "budget", "template", "review", "calibration", "target", "session"},
    ("owner",): {"team", "alert_route", "drift_threshold_points"},
    ("applies_to",): {"environments", "trace_names", "tags", "metadata", "observations",
                      "types", "names", "models", "levels", "with_tool_calls"},
    ("session",): SESSION_KEYS,
    ("sampling",): {"rate", "min_per_segment"} | POWER_KEYS, **POWER_SUBKEYS,  # power_spec.py: the target's keys
    ("sampling", "min_per_segment"): {"key", "per_day"},
    ("judge",): {"provider", "model", "max_tokens", "mode", "base_url", "api_key_env", "identity"},
    ("budget",): {"daily_usd"},
    ("review",): REVIEW_KEYS,
    ("review", "dataset"): DATASET_KEYS,
    ("review", "dataset", "user_feedback"): FEEDBACK_KEYS,
    ("calibration",): CALIBRATION_KEYS,
}
_SCALE_KEYS = {"numeric": {"type", "min", "max", "integer", "direction"},
               "categorical": {"type", "labels", "direction"},
               "boolean": {"type", "direction"}}
_VARIABLE_KEYS = {"from", "path", "name", "field", "required"}


class Owner(TypedDict, total=False):
    """The ``owner`` section: where the rubric's drift and agreement alerts go."""

    team: str
    alert_route: str
    drift_threshold_points: float  # the smallest drop worth an alert, on 0-100


@dataclasses.dataclass(frozen=True)
class Sampling:
    """The ``sampling`` section: the rate, and the per-segment quota that may raise it."""

    rate: float
    segment_key: str | None = None  # the trace metadata key of a segment with a daily minimum
    min_per_segment_day: int = 0


@dataclasses.dataclass(frozen=True)
class Variable:
    name: str
    source: str  # input | output | metadata | observation | trace
    paths: tuple[str, ...] = ("$",)  # JSONPath selections, first that resolves wins
    observation: str | None = None  # observation name, for source=observation
    field: str = "output"  # observation field, for source=observation
    required: bool = True


@dataclasses.dataclass(frozen=True)
class AppliesTo:
    environments: tuple[str, ...] = ()
    trace_names: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    observations: tuple[str, ...] = ()  # named observations the trace must have (checked by the worker)
    # target: observation only (worker/rubrics/targets.py): the v2 filters that list the observations
    types: tuple[str, ...] = ()  # GENERATION, TOOL, AGENT, RETRIEVER, SPAN, EVENT, ...
    names: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()  # DEBUG, DEFAULT, WARNING, ERROR
    with_tool_calls: bool = False  # a GENERATION counts only when its output calls tools (checked by the worker)


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def as_mapping(doc: RubricDoc, keys: tuple[str, ...], value: object) -> dict[object, object]:
    """``value`` when it is a mapping; else an error at ``keys`` and an empty mapping."""
    if not isinstance(value, dict):
        doc.error(keys, f"{'.'.join(keys)} must be a mapping")
        return {}
    return value


def warn_unknown_keys(doc: RubricDoc) -> None:
    for keys, allowed in _KNOWN.items():
        section = doc.data
        for k in keys:
            section = section.get(k) if isinstance(section, dict) else None
        if isinstance(section, dict):
            for key in section:
                if key not in allowed:
                    where = ".".join(map(str, keys + (key,)))
                    doc.warn(keys + (key,), f"unknown key '{where}' is ignored (known here: {', '.join(sorted(allowed))})")


def parse_owner(doc: RubricDoc, raw: object) -> Owner:
    if raw is None:
        doc.warn(("owner",), "no owner: drift alerts for this rubric go to 'unowned' with no alert route")
        return {}
    section = as_mapping(doc, ("owner",), raw)
    owner: Owner = {}
    team, route = section.get("team"), section.get("alert_route")
    if isinstance(team, str):
        owner["team"] = team
    elif "team" in section:
        doc.error(("owner", "team"), "owner.team must be a string")
    if isinstance(route, str):
        owner["alert_route"] = route
    elif "alert_route" in section:
        doc.error(("owner", "alert_route"), "owner.alert_route must be a string")
    threshold = section.get("drift_threshold_points")
    if threshold is not None and (not is_number(threshold) or not 0 < threshold <= 100):
        doc.error(("owner", "drift_threshold_points"),
                  "owner.drift_threshold_points must be a number in (0, 100]: the smallest drop worth an alert, on 0-100")
    elif threshold is not None:
        owner["drift_threshold_points"] = threshold
    return owner


def parse_scale(doc: RubricDoc, raw: object) -> Scale | None:
    where = str(doc.path)
    if not isinstance(raw, dict):
        doc.error(("score",), "'score' must be a mapping")
        return None
    labels = raw.get("labels")
    for label in labels if isinstance(labels, dict) else ():
        if not isinstance(label, str):
            # YAML 1.1 reads yes/no/on/off/true/false and bare numbers as non-strings.
            doc.error(("score", "labels"), f"label {label!r} is not a string: quote it in the YAML")
            return None
    try:
        scale = Scale.from_dict(raw, where)
    except ConfigError as exc:
        message = str(exc).removeprefix(f"{where}: ")
        doc.error(_scale_key_named(doc, message), message)
        return None
    kind = scale.kind
    for key in raw:
        if key not in _SCALE_KEYS[kind]:
            doc.warn(("score", key), f"score.{key} means nothing on a {kind} scale and is ignored")
    if "direction" not in raw:
        doc.warn(("score", "type"), "score.direction not set: assuming higher_is_better (drift alerts on drops)")
    if kind == "numeric":
        for key in ("min", "max"):
            if not is_number(raw[key]):
                doc.error(("score", key), f"score.{key} must be a finite number")
        if scale.integer and not all(float(bound).is_integer() for bound in scale.bounds):
            doc.error(("score", "integer"), "an integer scale needs whole-number min and max")
        if "integer" in raw and not isinstance(raw["integer"], bool):
            doc.error(("score", "integer"), "score.integer must be true or false")
    if kind == "categorical":
        _check_labels(doc, raw["labels"])
    return scale


def _scale_key_named(doc: RubricDoc, message: str) -> Keys:
    """Scale.from_dict names the key it rejects in its message; point at that key's line."""
    for token in re.findall(r"score\.(\w+)|'([^']+)'|label (\S+) ", message):
        name = next(t for t in token if t).strip("'\"")
        for keys in (("score", name), ("score", "labels", name)):
            if keys in doc.lines:
                return keys
    return ("score",)


def _check_labels(doc: RubricDoc, labels: dict[str, object]) -> None:
    seen_values: dict[float, str] = {}
    seen_names: dict[str, str] = {}
    for label, value in labels.items():
        keys = ("score", "labels", label)
        if isinstance(value, bool):
            doc.error(keys, f"label {label!r} needs a number as its value, not {str(value).lower()}")
            continue
        if not is_number(value):
            doc.error(keys, f"label {label!r} needs a finite number as its value")
            continue
        if label != label.strip() or not label.strip():
            doc.error(keys, f"label {label!r} has surrounding spaces or is empty")
        folded = label.strip().casefold()
        if folded in seen_names:
            doc.error(keys, f"labels {seen_names[folded]!r} and {label!r} differ only in case or spaces: "
                      "a judge cannot tell them apart")
        seen_names.setdefault(folded, label)
        if float(value) in seen_values:
            doc.error(keys, f"labels {seen_values[float(value)]!r} and {label!r} have the same value {value}: "
                      "drift and agreement could not tell them apart")
        seen_values.setdefault(float(value), label)


def parse_applies_to(doc: RubricDoc, raw: object) -> AppliesTo:
    section = as_mapping(doc, ("applies_to",), raw)

    def names(key: str) -> tuple[str, ...]:
        value = section.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            doc.error(("applies_to", key), f"applies_to.{key} must be a list of strings")
            return ()
        return tuple(value)

    metadata = section.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, (str, int, float, bool)) for v in metadata.values()):
        doc.error(("applies_to", "metadata"), "applies_to.metadata must map metadata keys to plain values")
        metadata = {}
    with_tool_calls = section.get("with_tool_calls", False)
    if not isinstance(with_tool_calls, bool):
        doc.error(("applies_to", "with_tool_calls"), "applies_to.with_tool_calls must be true or false")
        with_tool_calls = False
    return AppliesTo(names("environments"), names("trace_names"), names("tags"),
                     tuple((str(k), metadata_text(v)) for k, v in metadata.items()), names("observations"),
                     tuple(t.upper() for t in names("types")), names("names"), names("models"),
                     tuple(lv.upper() for lv in names("levels")), with_tool_calls)


def parse_sampling(doc: RubricDoc, raw: object) -> Sampling:
    section = as_mapping(doc, ("sampling",), raw)
    rate = section.get("rate", 0.01)
    if not is_number(rate) or not 0 <= rate <= 1:
        doc.error(("sampling", "rate"), "sampling.rate must be a number within 0..1")
        rate = 0.0
    quota = section.get("min_per_segment") or {}
    if not isinstance(quota, dict) or (quota and not (isinstance(quota.get("key"), str) and quota["key"]
                                                      and is_int(quota.get("per_day")) and quota["per_day"] > 0)):
        doc.error(("sampling", "min_per_segment"),
                  "sampling.min_per_segment needs 'key' (a trace metadata key) and 'per_day' (a positive integer)")
        return Sampling(float(rate))
    return Sampling(float(rate), quota.get("key"), int(quota.get("per_day", 0)))


def parse_variables(doc: RubricDoc, raw: object) -> tuple[Variable, ...]:
    if not isinstance(raw, dict) or not raw:
        doc.error(("variables",), "'variables' must map variable names to trace fields")
        return ()
    out = []
    for name, spec in raw.items():
        keys = ("variables", name)
        if not isinstance(name, str) or not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            doc.error(keys, f"variable name {name!r} must be snake_case")
            continue
        if name in RESERVED_NAMES:
            doc.error(keys, f"variable name {name!r} would hide the template's own '{name}' (pick another name)")
        if isinstance(spec, str):
            spec = {"from": spec}
        if not isinstance(spec, dict):
            doc.error(keys, f"variables.{name} must be a source name or a mapping with 'from'")
            continue
        for key in spec:
            if key not in _VARIABLE_KEYS:
                doc.warn(keys + (key,), f"unknown key 'variables.{name}.{key}' is ignored "
                         f"(known: {', '.join(sorted(_VARIABLE_KEYS))})")
        source = spec.get("from")
        if source not in _SOURCES:
            doc.error(keys + ("from",), f"variables.{name}.from must be one of {', '.join(_SOURCES)}")
            continue
        field = spec.get("field", "output")
        if source in ("observation", "root", "parent"):
            # without a name, an observation rubric's variable reads the judged observation itself
            target = doc.data.get("target") if isinstance(doc.data, dict) else None
            if source == "observation" and (not isinstance(spec.get("name"), str) or not spec["name"]) \
                    and target != "observation":
                doc.error(keys, f"variables.{name} reads an observation: give its 'name'")
            if field not in _OBSERVATION_FIELDS:
                doc.error(keys + ("field",), f"variables.{name}.field must be one of {', '.join(_OBSERVATION_FIELDS)}")
        elif "name" in spec or "field" in spec:
            doc.warn(keys, f"variables.{name}: 'name' and 'field' only apply to from: observation")
        paths = spec.get("path", "$")
        paths = tuple(paths) if isinstance(paths, list) else (paths,)
        if not paths or not all(isinstance(p, str) and p.startswith("$") for p in paths):
            doc.error(keys + ("path",), f"variables.{name}.path must be a JSONPath starting with $ (or a list of them)")
        required = spec.get("required", True)
        if not isinstance(required, bool):
            doc.error(keys + ("required",), f"variables.{name}.required must be true or false")
        out.append(Variable(name, source, paths, spec.get("name"), str(field), bool(required)))
    return tuple(out)


def metadata_text(value: object) -> str:
    """A metadata value as text, the same whichever way it travelled: the real Langfuse returns
    strings that look like JSON as JSON (``"true"`` as true, ``"1"`` as 1), so a rubric's
    ``applies_to.metadata``, the segment of a drift cell and a quota's segment compare this form
    (``true``, ``1``, ``1.5``, ``{"a": 1}``), not Python's ``str`` (``True``, ``1.0``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    if value is None:
        return "None"
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
