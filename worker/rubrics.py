"""The rubric format: one folder per rubric, one immutable folder per version.

    rubrics/<name>/v<N>/rubric.yaml   metadata: scale, applicability, variables, judge
    rubrics/<name>/v<N>/user.j2       the judge's user message (Jinja2, sandboxed)
    rubrics/<name>/v<N>/system.j2     optional static system prompt (cacheable prefix)
    rubrics/repair.j2                 the one repair request sent after an invalid verdict

A version's sha256 covers every file in its folder, so an edit is visible in every score.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import yaml

from worker.errors import ConfigError
from worker.scales import Scale

_VERSION_DIR = re.compile(r"^v(\d+)$")
_SOURCES = ("input", "output", "metadata", "observation", "trace")


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


def load_rubrics(root: Path) -> dict[str, Rubric]:
    """Every rubric version under ``root``, by key ``name@vN``; ConfigError names the file."""
    root = Path(root)
    repair = root / "repair.j2"
    repair_text = repair.read_text() if repair.is_file() else None
    rubrics: dict[str, Rubric] = {}
    for rubric_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        versions = [d for d in rubric_dir.iterdir() if d.is_dir() and _VERSION_DIR.match(d.name)]
        if not versions:
            raise ConfigError(f"{rubric_dir}: no version folder (expected v1/, v2/, ...)")
        for version_dir in versions:
            rubric = load_version(version_dir, repair_text)
            if rubric.name != rubric_dir.name:
                raise ConfigError(f"{version_dir}/rubric.yaml: name {rubric.name!r} differs from folder {rubric_dir.name!r}")
            rubrics[rubric.key] = rubric
    if not rubrics:
        raise ConfigError(f"{root}: no rubrics found")
    return rubrics


def version_sha256(version_dir: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in version_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(file.relative_to(version_dir).as_posix().encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def load_version(version_dir: Path, repair_text: str | None = None) -> Rubric:
    meta_path = version_dir / "rubric.yaml"
    where = str(meta_path)
    try:
        raw = yaml.safe_load(meta_path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: missing") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}{line}: invalid YAML: {exc.problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")

    def need(key, kind):
        value = raw.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise ConfigError(f"{where}: '{key}' is required ({kind.__name__})")
        return value

    name = need("name", str)
    version = need("version", int)
    if version_dir.name != f"v{version}":
        raise ConfigError(f"{where}: version {version} does not match folder {version_dir.name!r}")
    scale = Scale.from_dict(raw.get("score"), where)
    sampling = raw.get("sampling") or {}
    rate = sampling.get("rate", 0.01)
    if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ConfigError(f"{where}: sampling.rate must be within 0..1")
    judge_raw = raw.get("judge") or {}
    provider = judge_raw.get("provider")
    if provider not in ("anthropic", "openai"):
        raise ConfigError(f"{where}: judge.provider must be anthropic or openai")
    if not isinstance(judge_raw.get("model"), str):
        raise ConfigError(f"{where}: judge.model is required (a pinned snapshot id)")
    mode = judge_raw.get("mode", "online")
    if mode not in ("online", "batch"):
        raise ConfigError(f"{where}: judge.mode must be online or batch")
    judge = JudgeSpec(provider, judge_raw["model"], int(judge_raw.get("max_tokens", 1024)), mode)
    quota = sampling.get("min_per_segment") or {}
    if not isinstance(quota, dict) or (quota and not (isinstance(quota.get("key"), str)
                                                      and isinstance(quota.get("per_day"), int))):
        raise ConfigError(f"{where}: sampling.min_per_segment needs 'key' (a metadata key) and 'per_day' (an integer)")
    budget = (raw.get("budget") or {}).get("daily_usd")
    if budget is not None and (not isinstance(budget, (int, float)) or isinstance(budget, bool) or budget < 0):
        raise ConfigError(f"{where}: budget.daily_usd must be a non-negative number")
    user_file = version_dir / str(raw.get("template", "user.j2"))
    if not user_file.is_file():
        raise ConfigError(f"{where}: template {user_file.name} not found")
    system_file = version_dir / "system.j2"
    local_repair = version_dir / "repair.j2"
    return Rubric(
        name=name,
        version=version,
        description=need("description", str).strip(),
        owner=raw.get("owner") or {},
        scale=scale,
        applies_to=_applies_to(raw.get("applies_to") or {}, where),
        sampling_rate=float(rate),
        variables=_variables(raw.get("variables"), where),
        judge=judge,
        user_template=user_file.read_text(),
        system_template=system_file.read_text() if system_file.is_file() else None,
        repair_template=local_repair.read_text() if local_repair.is_file() else repair_text,
        sha256=version_sha256(version_dir),
        path=version_dir,
        segment_key=quota.get("key"),
        min_per_segment_day=int(quota.get("per_day", 0)),
        daily_budget_usd=None if budget is None else float(budget),
    )


def _applies_to(raw: dict, where: str) -> AppliesTo:
    def names(key):
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: applies_to.{key} must be a list of strings")
        return tuple(value)

    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ConfigError(f"{where}: applies_to.metadata must be a mapping")
    return AppliesTo(names("environments"), names("trace_names"), names("tags"),
                     tuple((str(k), str(v)) for k, v in metadata.items()), names("observations"))


def _variables(raw, where: str) -> tuple[Variable, ...]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: 'variables' must map variable names to trace fields")
    out = []
    for name, spec in raw.items():
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ConfigError(f"{where}: variable name {name!r} must be snake_case")
        if isinstance(spec, str):
            spec = {"from": spec}
        source = spec.get("from")
        if source not in _SOURCES:
            raise ConfigError(f"{where}: variables.{name}.from must be one of {', '.join(_SOURCES)}")
        if source == "observation" and not spec.get("name"):
            raise ConfigError(f"{where}: variables.{name} reads an observation: give its 'name'")
        paths = spec.get("path", "$")
        paths = tuple(paths) if isinstance(paths, list) else (paths,)
        if not all(isinstance(p, str) and p.startswith("$") for p in paths):
            raise ConfigError(f"{where}: variables.{name}.path must be a JSONPath starting with $ (or a list of them)")
        out.append(Variable(name, source, paths, spec.get("name"),
                            str(spec.get("field", "output")), bool(spec.get("required", True))))
    return tuple(out)
