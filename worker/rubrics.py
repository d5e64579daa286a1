"""The rubric format: one folder per rubric, one immutable folder per version.

    rubrics/<name>/v<N>/rubric.yaml   metadata: scale, applicability, variables, judge
    rubrics/<name>/v<N>/user.j2       the judge's user message (Jinja2, sandboxed)
    rubrics/<name>/v<N>/system.j2     optional static system prompt (cacheable prefix)
    rubrics/<name>/examples.jsonl     labelled examples (outside v<N>/: adding one never changes a version)
    rubrics/repair.j2                 the one repair request sent after an invalid verdict
    rubrics/rubrics.lock              sha256 of every released version (see README.md)

A version's sha256 covers every file in its folder, so an edit is visible in every score.

This module is the one parser of rubric.yaml. Every problem it finds is a ``Problem`` with the
file and the line of the offending key; ``load_rubrics`` raises the first as a ConfigError
(start-up), ``tracejudge rubrics lint`` passes a ``Problems`` list and reports them all.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

import yaml

from worker.errors import ConfigError
from worker.scales import Scale

_VERSION_DIR = re.compile(r"^v(\d+)$")
_SOURCES = ("input", "output", "metadata", "observation", "trace")
_OBSERVATION_FIELDS = ("input", "output", "metadata", "model", "type", "level", "statusMessage")
# Names the templates' render context already uses (worker/prompt.py): a variable may not hide them.
RESERVED_NAMES = ("rubric", "scale")
LOCK_FILE = "rubrics.lock"
_LOCK_KEY = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.-]*)@v(\d+)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Keys the format knows; anything else is a warning (most likely a typo that silently does nothing).
_KNOWN = {
    (): {"name", "version", "description", "owner", "score", "applies_to", "sampling", "variables",
         "judge", "budget", "template"},
    ("owner",): {"team", "alert_route", "drift_threshold_points"},
    ("applies_to",): {"environments", "trace_names", "tags", "metadata", "observations"},
    ("sampling",): {"rate", "min_per_segment"},
    ("sampling", "min_per_segment"): {"key", "per_day"},
    ("judge",): {"provider", "model", "max_tokens", "mode"},
    ("budget",): {"daily_usd"},
}
_SCALE_KEYS = {"numeric": {"type", "min", "max", "integer", "direction"},
               "categorical": {"type", "labels", "direction"},
               "boolean": {"type", "direction"}}
_VARIABLE_KEYS = {"from", "path", "name", "field", "required"}


@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    line: int | None
    message: str
    severity: str = "error"  # error | warning | note

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


class Problems(list):
    """Collects problems instead of stopping at the first, so an author fixes them in one go."""

    def add(self, path, line: int | None, message: str, severity: str = "error") -> None:
        self.append(Problem(str(path), line, message, severity))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self if p.severity == "error"]

    def raise_errors(self) -> None:
        errors = self.errors
        if errors:
            more = f" (and {len(errors) - 1} more: run `tracejudge rubrics lint`)" if len(errors) > 1 else ""
            raise ConfigError(f"{errors[0]}{more}")


@dataclasses.dataclass(frozen=True)
class Variable:
    name: str
    source: str  # input | output | metadata | observation | trace
    paths: tuple[str, ...] = ("$",)  # JSONPath selections, first that resolves wins
    observation: str | None = None  # observation name, for source=observation
    field: str = "output"  # observation field, for source=observation
    required: bool = True


@dataclasses.dataclass(frozen=True)
class JudgeSpec:
    provider: str  # anthropic | openai
    model: str
    max_tokens: int = 1024
    mode: str = "online"  # online | batch (Anthropic Message Batches / OpenAI Batch API, for work that can wait)


@dataclasses.dataclass(frozen=True)
class AppliesTo:
    environments: tuple[str, ...] = ()
    trace_names: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    observations: tuple[str, ...] = ()  # named observations the trace must have (checked by the worker)


@dataclasses.dataclass(frozen=True)
class Rubric:
    name: str
    version: int
    description: str
    owner: dict
    scale: Scale
    applies_to: AppliesTo
    sampling_rate: float
    variables: tuple[Variable, ...]
    judge: JudgeSpec
    user_template: str
    system_template: str | None
    repair_template: str | None
    sha256: str
    path: Path
    # Per-segment quota: a segment (trace metadata key = value) with little traffic gets its rate
    # raised so it still yields this many judged traces a day. It never lowers the rate.
    segment_key: str | None = None
    min_per_segment_day: int = 0
    daily_budget_usd: float | None = None  # this rubric's own daily judge spend cap

    @property
    def key(self) -> str:
        return f"{self.name}@v{self.version}"


class RubricDoc:
    """A parsed rubric.yaml: its data and the line of every key, so messages point at the key."""

    def __init__(self, path: Path, problems: Problems):
        self.path = path
        self.problems = problems
        self.lines: dict[tuple, int] = {(): 1}
        self.data = None

    def line(self, *keys) -> int:
        keys = tuple(keys)
        while keys not in self.lines:
            keys = keys[:-1]
        return self.lines[keys]

    def error(self, keys: tuple, message: str) -> None:
        self.problems.add(self.path, self.line(*keys), message)

    def warn(self, keys: tuple, message: str) -> None:
        self.problems.add(self.path, self.line(*keys), message, "warning")

    def parse(self, text: str) -> None:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                self._index(node, ())
                self.data = loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            detail = exc.problem or exc.context or "cannot parse"
            if exc.context and exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
                # The parser notices late: name where the unclosed construct began, too.
                detail += f" ({exc.context.removeprefix('while ')} that starts on line {exc.context_mark.line + 1})"
            self.problems.add(self.path, mark.line + 1 if mark else 1, f"invalid YAML: {detail}")
        except yaml.YAMLError as exc:
            self.problems.add(self.path, 1, f"invalid YAML: {exc}")
        finally:
            loader.dispose()

    def _index(self, node, keys: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = key_node.value
                line = key_node.start_mark.line + 1
                if keys + (key,) in self.lines:
                    # PyYAML silently keeps the last value of a repeated key: say so instead.
                    self.problems.add(self.path, line, f"duplicate key '{'.'.join(map(str, keys + (key,)))}' "
                                      f"(first on line {self.lines[keys + (key,)]}): YAML keeps only the last")
                self.lines[keys + (key,)] = line
                self._index(value_node, keys + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[keys + (i,)] = item.start_mark.line + 1
                self._index(item, keys + (i,))


def version_dirs(root: Path, problems: Problems) -> list[Path]:
    """Every ``<name>/v<N>/`` folder under ``root``, in name and version order."""
    root = Path(root)
    if not root.is_dir():
        problems.add(root, None, "rubrics folder not found")
        return []
    found = []
    for rubric_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        versions = sorted((d for d in rubric_dir.iterdir() if d.is_dir() and _VERSION_DIR.match(d.name)),
                          key=lambda d: int(d.name[1:]))
        if not versions:
            problems.add(rubric_dir, None, "no version folder (expected v1/, v2/, ...)")
        found += versions
    if not found and not problems.errors:
        problems.add(root, None, "no rubrics found")
    return found


def load_rubrics(root: Path, problems: Problems | None = None) -> dict[str, Rubric]:
    """Every rubric version under ``root``, by key ``name@vN``.

    Without ``problems`` the first error is raised as a ConfigError naming file and line;
    with it, every problem is collected and only the versions without errors are returned.
    """
    own = problems is None
    problems = Problems() if own else problems
    repair = Path(root) / "repair.j2"
    repair_text = repair.read_text() if repair.is_file() else None
    rubrics: dict[str, Rubric] = {}
    for version_dir in version_dirs(root, problems):
        rubric, _ = read_version(version_dir, repair_text, problems)
        if rubric is not None:
            rubrics[rubric.key] = rubric
    if own:
        problems.raise_errors()
    return rubrics


def version_sha256(version_dir: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in version_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(file.relative_to(version_dir).as_posix().encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def load_version(version_dir: Path, repair_text: str | None = None) -> Rubric:
    problems = Problems()
    rubric, _ = read_version(version_dir, repair_text, problems)
    problems.raise_errors()
    return rubric


def read_version(version_dir: Path, repair_text: str | None,
                 problems: Problems) -> tuple[Rubric | None, RubricDoc]:
    """One version folder; the Rubric is None when it has errors (all of them are in ``problems``)."""
    meta_path = Path(version_dir) / "rubric.yaml"
    doc = RubricDoc(meta_path, problems)
    errors_before = len(problems.errors)
    try:
        doc.parse(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.add(meta_path, None, "missing")
        return None, doc
    except UnicodeDecodeError as exc:
        problems.add(meta_path, None, f"not UTF-8 ({exc.reason})")
        return None, doc
    if doc.data is None and len(problems.errors) > errors_before:
        return None, doc  # not YAML at all; a duplicate key still leaves data worth checking
    if not isinstance(doc.data, dict):
        doc.error((), "must be a mapping of the rubric's fields (see rubrics/README.md)")
        return None, doc
    rubric = _build(doc, Path(version_dir), repair_text)
    return (rubric if len(problems.errors) == errors_before else None), doc


def _build(doc: RubricDoc, version_dir: Path, repair_text: str | None) -> Rubric | None:
    raw = doc.data
    errors_before = len(doc.problems.errors)
    _warn_unknown_keys(doc)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        doc.error(("name",), "'name' is required (a string: the score name in Langfuse)")
    elif name != version_dir.parent.name:
        doc.error(("name",), f"name {name!r} differs from its folder {version_dir.parent.name!r}")
    version = raw.get("version")
    if not _is_int(version):
        doc.error(("version",), "'version' is required (an integer)")
    elif version_dir.name != f"v{version}":
        doc.error(("version",), f"version {version} does not match its folder {version_dir.name!r}")
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        doc.error(("description",), "'description' is required (a string; the judge and the score config show it)")
    owner = _owner(doc, raw.get("owner"))
    scale = _scale(doc, raw.get("score"))
    applies = _applies_to(doc, raw.get("applies_to") or {})
    rate, segment_key, per_day = _sampling(doc, raw.get("sampling") or {})
    variables = _variables(doc, raw.get("variables"))
    judge = _judge(doc, raw.get("judge"))
    budget = _mapping(doc, ("budget",), raw.get("budget") or {}).get("daily_usd")
    if budget is not None and (not _is_number(budget) or budget < 0):
        doc.error(("budget", "daily_usd"), "budget.daily_usd must be a non-negative number (USD a day)")
        budget = None
    template = raw.get("template", "user.j2")
    user_file = version_dir / str(template)
    if not isinstance(template, str) or Path(template).name != template:
        doc.error(("template",), "template must be a file name inside the version folder")
    elif not user_file.is_file():
        doc.error(("template",), f"template {template} not found in {version_dir}")
    if len(doc.problems.errors) > errors_before:
        return None
    system_file = version_dir / "system.j2"
    local_repair = version_dir / "repair.j2"
    return Rubric(
        name=name, version=version, description=description.strip(), owner=owner, scale=scale,
        applies_to=applies, sampling_rate=rate, variables=variables, judge=judge,
        user_template=user_file.read_text(),
        system_template=system_file.read_text() if system_file.is_file() else None,
        repair_template=local_repair.read_text() if local_repair.is_file() else repair_text,
        sha256=version_sha256(version_dir), path=version_dir,
        segment_key=segment_key, min_per_segment_day=per_day,
        daily_budget_usd=None if budget is None else float(budget),
    )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and value not in (float("inf"), float("-inf"))


def _mapping(doc: RubricDoc, keys: tuple, value) -> dict:
    if not isinstance(value, dict):
        doc.error(keys, f"{'.'.join(keys)} must be a mapping")
        return {}
    return value


def _warn_unknown_keys(doc: RubricDoc) -> None:
    for keys, allowed in _KNOWN.items():
        section = doc.data
        for k in keys:
            section = section.get(k) if isinstance(section, dict) else None
        if isinstance(section, dict):
            for key in section:
                if key not in allowed:
                    where = ".".join(map(str, keys + (key,)))
                    doc.warn(keys + (key,), f"unknown key '{where}' is ignored (known here: {', '.join(sorted(allowed))})")


def _owner(doc: RubricDoc, raw) -> dict:
    if raw is None:
        doc.warn(("owner",), "no owner: drift alerts for this rubric go to 'unowned' with no alert route")
        return {}
    owner = _mapping(doc, ("owner",), raw)
    for key in ("team", "alert_route"):
        if key in owner and not isinstance(owner[key], str):
            doc.error(("owner", key), f"owner.{key} must be a string")
    threshold = owner.get("drift_threshold_points")
    if threshold is not None and (not _is_number(threshold) or not 0 < threshold <= 100):
        doc.error(("owner", "drift_threshold_points"),
                  "owner.drift_threshold_points must be a number in (0, 100]: the smallest drop worth an alert, on 0-100")
    return owner


def _scale(doc: RubricDoc, raw) -> Scale | None:
    where = str(doc.path)
    labels = raw.get("labels") if isinstance(raw, dict) else None
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
            if not _is_number(raw[key]):
                doc.error(("score", key), f"score.{key} must be a finite number")
        if scale.integer and not (float(scale.minimum).is_integer() and float(scale.maximum).is_integer()):
            doc.error(("score", "integer"), "an integer scale needs whole-number min and max")
        if "integer" in raw and not isinstance(raw["integer"], bool):
            doc.error(("score", "integer"), "score.integer must be true or false")
    if kind == "categorical":
        _check_labels(doc, raw["labels"])
    return scale


def _scale_key_named(doc: RubricDoc, message: str) -> tuple:
    """Scale.from_dict names the key it rejects in its message; point at that key's line."""
    for token in re.findall(r"score\.(\w+)|'([^']+)'|label (\S+) ", message):
        name = next(t for t in token if t).strip("'\"")
        for keys in (("score", name), ("score", "labels", name)):
            if keys in doc.lines:
                return keys
    return ("score",)


def _check_labels(doc: RubricDoc, labels: dict) -> None:
    seen_values: dict[float, str] = {}
    seen_names: dict[str, str] = {}
    for label, value in labels.items():
        keys = ("score", "labels", label)
        if isinstance(value, bool):
            doc.error(keys, f"label {label!r} needs a number as its value, not {str(value).lower()}")
            continue
        if not _is_number(value):
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


def _applies_to(doc: RubricDoc, raw) -> AppliesTo:
    raw = _mapping(doc, ("applies_to",), raw)

    def names(key):
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            doc.error(("applies_to", key), f"applies_to.{key} must be a list of strings")
            return ()
        return tuple(value)

    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, (str, int, float, bool)) for v in metadata.values()):
        doc.error(("applies_to", "metadata"), "applies_to.metadata must map metadata keys to plain values")
        metadata = {}
    return AppliesTo(names("environments"), names("trace_names"), names("tags"),
                     tuple((str(k), str(v)) for k, v in metadata.items()), names("observations"))


def _sampling(doc: RubricDoc, raw) -> tuple[float, str | None, int]:
    raw = _mapping(doc, ("sampling",), raw)
    rate = raw.get("rate", 0.01)
    if not _is_number(rate) or not 0 <= rate <= 1:
        doc.error(("sampling", "rate"), "sampling.rate must be a number within 0..1")
        rate = 0.0
    quota = raw.get("min_per_segment") or {}
    if not isinstance(quota, dict) or (quota and not (isinstance(quota.get("key"), str) and quota["key"]
                                                      and _is_int(quota.get("per_day")) and quota["per_day"] > 0)):
        doc.error(("sampling", "min_per_segment"),
                  "sampling.min_per_segment needs 'key' (a trace metadata key) and 'per_day' (a positive integer)")
        return float(rate), None, 0
    return float(rate), quota.get("key"), int(quota.get("per_day", 0))


def _judge(doc: RubricDoc, raw) -> JudgeSpec | None:
    raw = _mapping(doc, ("judge",), raw)
    ok = True
    provider = raw.get("provider")
    if provider not in ("anthropic", "openai"):
        doc.error(("judge", "provider"), "judge.provider must be anthropic or openai")
        ok = False
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        doc.error(("judge", "model"), "judge.model is required (a pinned snapshot id)")
        ok = False
    max_tokens = raw.get("max_tokens", 1024)
    if not _is_int(max_tokens) or max_tokens < 64:
        doc.error(("judge", "max_tokens"), "judge.max_tokens must be an integer of at least 64 (reasoning comes first)")
        ok = False
    mode = raw.get("mode", "online")
    if mode not in ("online", "batch"):
        doc.error(("judge", "mode"), "judge.mode must be online or batch")
        ok = False
    return JudgeSpec(provider, model, max_tokens, mode) if ok else None


def _variables(doc: RubricDoc, raw) -> tuple[Variable, ...]:
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
        if source == "observation":
            if not isinstance(spec.get("name"), str) or not spec["name"]:
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


# -- released versions: rubrics/rubrics.lock -------------------------------------------------

def read_lock(root: Path, problems: Problems | None = None) -> tuple[dict[str, str], dict[str, int]]:
    """The released versions (``name@vN`` -> sha256) and each entry's line in the lock file."""
    own = problems is None
    problems = Problems() if own else problems
    path = Path(root) / LOCK_FILE
    if not path.is_file():
        return {}, {}
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.add(path, exc.lineno, f"invalid JSON: {exc.msg}")
        raw = None
    if raw is not None and not isinstance(raw, dict):
        problems.add(path, 1, 'must be a JSON object of "name@vN": "sha256"')
    entries, lines = {}, {}
    for key, sha in (raw or {}).items() if isinstance(raw, dict) else ():
        line = next((i for i, l in enumerate(text.splitlines(), 1) if json.dumps(key) in l), 1)
        if not _LOCK_KEY.match(key) or not isinstance(sha, str) or not _SHA256.match(sha):
            problems.add(path, line, f'entry {key!r} must be "name@vN": "<64 hex digits>"')
            continue
        entries[key], lines[key] = sha, line
    if own:
        problems.raise_errors()
    return entries, lines


def release(root: Path, key: str) -> tuple[str, bool]:
    """Record ``name@vN``'s sha256 in the lock; (sha256, newly released). Never overwrites a sha."""
    match = _LOCK_KEY.match(key)
    if not match:
        raise ConfigError(f"{key!r}: give a version as name@vN, e.g. helpfulness@v2")
    version_dir = Path(root) / match[1] / f"v{match[2]}"
    if not version_dir.is_dir():
        raise ConfigError(f"{version_dir}: no such version folder")
    sha = version_sha256(version_dir)
    entries, _ = read_lock(root)
    if key in entries:
        if entries[key] != sha:
            raise ConfigError(f"{key} was released with sha256 {entries[key]} but {version_dir} now hashes to "
                              f"{sha}: a released version is immutable, restore it and add "
                              f"v{int(match[2]) + 1} instead")
        return sha, False
    entries[key] = sha
    write_lock(root, entries)
    return sha, True


def write_lock(root: Path, entries: dict[str, str]) -> None:
    path = Path(root) / LOCK_FILE
    tmp = path.with_name(f".{LOCK_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(sorted(entries.items())), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: a crash leaves the old lock, never half a file
