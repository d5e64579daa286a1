"""The rubric format: one folder per rubric, one immutable folder per version.

    rubrics/<name>/v<N>/rubric.yaml   metadata: scale, applicability, variables, judge
    rubrics/<name>/v<N>/user.j2       the judge's user message (Jinja2, sandboxed)
    rubrics/<name>/v<N>/system.j2     optional static system prompt (cacheable prefix)
    rubrics/<name>/examples.jsonl     labelled examples (outside v<N>/: adding one never changes a version)
    rubrics/repair.j2                 the one repair request sent after an invalid verdict
    rubrics/json_answer.j2            the answer format for judges on a JSON-text fallback (no schema support)
    rubrics/rubrics.lock              sha256 of every released version (see README.md)

A version's sha256 covers every file in its folder *and* the shared prompt files it uses (those
of ``SHARED_PROMPTS`` it has no copy of in its own folder, hashed as ``../<name>``), so a score's
``rubric_sha256`` names every text the judge could see, and an edit is visible in every score.

This module (with doc.py, fields.py and the section modules judge_spec.py, review_spec.py and
targets.py) is the one parser of rubric.yaml; every problem it finds names the file and line (see
doc.py). Released versions: worker/authoring/lock.py.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

from worker.errors import ConfigError
from worker.jobs import format_rubric_key
from worker.rubrics.doc import Problems, RubricDoc, is_number
from worker.rubrics.fields import (
    AppliesTo,
    Owner,
    Variable,
    as_mapping,
    is_int,
    parse_applies_to,
    parse_owner,
    parse_sampling,
    parse_scale,
    parse_variables,
    warn_unknown_keys,
)
from worker.rubrics.judge_spec import JudgeSpec, parse_judge
from worker.rubrics.power_spec import PowerSpec, parse_power
from worker.rubrics.review_spec import CalibrationSpec, ReviewSpec, parse_calibration, parse_review
from worker.rubrics.scales import Scale
from worker.rubrics.targets import SessionSpec, check_target_fields, parse_session, parse_target

# AppliesTo, JudgeSpec and Variable are part of a Rubric, so they are importable from here too.
__all__ = ["SHARED_PROMPTS", "AppliesTo", "JudgeSpec", "Rubric", "Variable", "file_sha256", "load_rubrics",
           "load_version", "read_version", "version_dirs", "version_files", "version_sha256"]

_VERSION_DIR = re.compile(r"^v(\d+)$")
# Prompt files in the rubrics folder every version uses unless it has its own copy.
SHARED_PROMPTS = ("repair.j2", "json_answer.j2")


@dataclasses.dataclass(frozen=True)
class Rubric:
    name: str
    version: int
    description: str
    owner: Owner
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
    # The answer format for a judge on the JSON-text fallback (json_answer.j2): part of the hash too.
    json_template: str | None = None
    # Optional: human review routing and failure datasets (review:), production agreement (calibration:).
    review: ReviewSpec | None = None
    calibration: CalibrationSpec | None = None
    # What it judges (worker/rubrics/targets.py): trace (default), observation or session.
    target: str = "trace"
    session: SessionSpec | None = None  # target: session only: idle time, turn budget, re-judges
    # sampling.detection_target (worker/rubrics/power_spec.py): per-cell rates from a target and a
    # budget (samplers/planner.py); None: one rate for all traffic, as before.
    power: PowerSpec | None = None

    @property
    def key(self) -> str:
        return format_rubric_key(self.name, self.version)


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
    found = Problems() if problems is None else problems
    repair = Path(root) / "repair.j2"
    repair_text = repair.read_text() if repair.is_file() else None
    rubrics: dict[str, Rubric] = {}
    for version_dir in version_dirs(root, found):
        rubric, _ = read_version(version_dir, repair_text, found)
        if rubric is not None:
            rubrics[rubric.key] = rubric
    if problems is None:
        found.raise_errors()
    return rubrics


def version_files(version_dir: Path) -> dict[str, Path]:
    """Every file a version's judge prompts come from, by the name it is hashed under: the
    version folder's own files, and ``../<name>`` for each shared prompt it has no copy of."""
    version_dir = Path(version_dir)
    files = {p.relative_to(version_dir).as_posix(): p for p in version_dir.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    for name in SHARED_PROMPTS:
        shared = version_dir.parent.parent / name
        if name not in files and shared.is_file():
            files[f"../{name}"] = shared
    return dict(sorted(files.items()))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def version_sha256(version_dir: Path) -> str:
    digest = hashlib.sha256()
    for name, file in version_files(version_dir).items():
        digest.update(name.encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def load_version(version_dir: Path, repair_text: str | None = None) -> Rubric:
    problems = Problems()
    rubric, _ = read_version(version_dir, repair_text, problems)
    problems.raise_errors()
    if rubric is None:  # only with an error, raised above
        raise ConfigError(f"{version_dir}: not a loadable rubric version")
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
    rubric = _build(doc, doc.data, Path(version_dir), repair_text)
    return (rubric if len(problems.errors) == errors_before else None), doc


def _build(doc: RubricDoc, raw: dict[str, object], version_dir: Path, repair_text: str | None) -> Rubric | None:
    """The Rubric of ``doc`` (whose data is ``raw``), or None when a section has an error."""
    errors_before = len(doc.problems.errors)
    warn_unknown_keys(doc)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        doc.error(("name",), "'name' is required (a string: the score name in Langfuse)")
    elif name != version_dir.parent.name:
        doc.error(("name",), f"name {name!r} differs from its folder {version_dir.parent.name!r}")
    version = raw.get("version")
    if not is_int(version):
        doc.error(("version",), "'version' is required (an integer)")
    elif version_dir.name != f"v{version}":
        doc.error(("version",), f"version {version} does not match its folder {version_dir.name!r}")
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        doc.error(("description",), "'description' is required (a string; the judge and the score config show it)")
    target = parse_target(doc, raw)
    session = parse_session(doc, raw.get("session"), target)
    check_target_fields(doc, raw, target)
    owner = parse_owner(doc, raw.get("owner"))
    scale = parse_scale(doc, raw.get("score"))
    applies = parse_applies_to(doc, raw.get("applies_to") or {})
    sampling = parse_sampling(doc, raw.get("sampling") or {})
    variables = parse_variables(doc, raw.get("variables"))
    judge = parse_judge(doc, raw.get("judge"))
    review = parse_review(doc, raw.get("review"), scale)
    calibration = parse_calibration(doc, raw.get("calibration"))
    budget = as_mapping(doc, ("budget",), raw.get("budget") or {}).get("daily_usd")
    if budget is not None and (not is_number(budget) or budget < 0):
        doc.error(("budget", "daily_usd"), "budget.daily_usd must be a non-negative number (USD a day)")
        budget = None
    power = parse_power(doc, raw.get("sampling"), target, budget is not None)
    template = raw.get("template", "user.j2")
    user_file = version_dir / str(template)
    if not isinstance(template, str) or Path(template).name != template:
        doc.error(("template",), "template must be a file name inside the version folder")
    elif not user_file.is_file():
        doc.error(("template",), f"template {template} not found in {version_dir}")
    if len(doc.problems.errors) > errors_before or not isinstance(name, str) or not is_int(version) \
            or not isinstance(description, str) or scale is None or judge is None:  # (all hold without an error)
        return None
    system_file = version_dir / "system.j2"
    local_repair = version_dir / "repair.j2"
    json_file = next((f for f in (version_dir / "json_answer.j2", version_dir.parent.parent / "json_answer.j2")
                      if f.is_file()), None)
    return Rubric(
        name=name, version=version, description=description.strip(), owner=owner, scale=scale,
        applies_to=applies, sampling_rate=sampling.rate, variables=variables, judge=judge,
        user_template=user_file.read_text(),
        system_template=system_file.read_text() if system_file.is_file() else None,
        repair_template=local_repair.read_text() if local_repair.is_file() else repair_text,
        sha256=version_sha256(version_dir), path=version_dir,
        segment_key=sampling.segment_key, min_per_segment_day=sampling.min_per_segment_day,
        daily_budget_usd=None if budget is None else float(budget),
        json_template=json_file.read_text() if json_file else None,
        review=review, calibration=calibration, target=target, session=session, power=power,
    )
