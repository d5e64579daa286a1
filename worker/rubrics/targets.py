"""What a rubric judges (``target``) and the fields only some targets have.

- ``trace`` (the default: every rubric written before targets keeps its meaning and hash);
- ``observation``: one observation (a step: GENERATION, TOOL, AGENT, RETRIEVER, …), listed by
  ``applies_to.types | names | models | levels`` through the v2 observation filters;
- ``session``: one conversation, the session's traces in time order, judged once it has been
  idle for ``session.idle_minutes``.
"""
from __future__ import annotations

import dataclasses

from worker.jobs import TARGETS
from worker.rubrics.doc import RubricDoc

# applies_to keys that select observations; they mean nothing for the other targets
OBSERVATION_FILTERS = ("types", "names", "models", "levels", "with_tool_calls")
SESSION_KEYS = {"idle_minutes", "max_turns", "max_judgements"}
# Variable sources per target: what a variable of the rubric may read (fields.py checks them).
SOURCES = {
    "trace": ("input", "output", "metadata", "observation", "trace", "root"),
    "observation": ("input", "output", "metadata", "observation", "trace", "root", "parent"),
    "session": ("input", "output", "metadata", "trace", "conversation", "session"),
}
ALL_SOURCES = tuple(dict.fromkeys(s for sources in SOURCES.values() for s in sources))


@dataclasses.dataclass(frozen=True)
class SessionSpec:
    """When a session is judged, and how much of it the judge sees."""

    idle_minutes: float = 30.0  # judged only once its newest trace is this old, never before
    max_turns: int = 20  # the turn budget: the first half and the last turns, a marker between
    max_judgements: int = 3  # the first verdict plus at most two re-judges after resumes


def parse_target(doc: RubricDoc, raw: object) -> str:
    target = raw.get("target", "trace") if isinstance(raw, dict) else "trace"
    if not isinstance(target, str) or target not in TARGETS:
        doc.error(("target",), f"target must be one of {', '.join(TARGETS)} (default trace)")
        return "trace"
    return target


def parse_session(doc: RubricDoc, raw: object, target: str) -> SessionSpec | None:
    if raw is None:
        return SessionSpec() if target == "session" else None
    if target != "session":
        doc.warn(("session",), "session: only applies to target: session and is ignored here")
        return None
    if not isinstance(raw, dict):
        doc.error(("session",), "session must be a mapping (idle_minutes, max_turns, max_judgements)")
        return SessionSpec()
    for key in raw:
        if key not in SESSION_KEYS:
            doc.warn(("session", key), f"unknown key 'session.{key}' is ignored (known: {', '.join(sorted(SESSION_KEYS))})")
    spec = SessionSpec()
    idle = raw.get("idle_minutes", spec.idle_minutes)
    if isinstance(idle, bool) or not isinstance(idle, (int, float)) or not 0 < idle <= 7 * 24 * 60:
        doc.error(("session", "idle_minutes"), "session.idle_minutes must be a number of minutes in (0, 10080]")
        idle = spec.idle_minutes
    turns = raw.get("max_turns", spec.max_turns)
    if isinstance(turns, bool) or not isinstance(turns, int) or turns < 2:
        doc.error(("session", "max_turns"), "session.max_turns must be an integer of at least 2")
        turns = spec.max_turns
    judgements = raw.get("max_judgements", spec.max_judgements)
    if isinstance(judgements, bool) or not isinstance(judgements, int) or not 1 <= judgements <= 10:
        doc.error(("session", "max_judgements"), "session.max_judgements must be an integer in 1..10")
        judgements = spec.max_judgements
    return SessionSpec(float(idle), turns, judgements)


def check_target_fields(doc: RubricDoc, raw: dict[str, object], target: str) -> None:
    """Fields that contradict the target: errors, each at its line."""
    applies = _section(raw, "applies_to")
    if target != "observation":
        for key in OBSERVATION_FILTERS:
            if key in applies:
                doc.error(("applies_to", key), f"applies_to.{key} selects observations: it needs target: observation")
    elif applies.get("observations"):
        doc.error(("applies_to", "observations"), "applies_to.observations (named steps a trace must have) is for "
                  "trace rubrics; an observation rubric selects with types, names, models and levels")
    sampling = _section(raw, "sampling")
    if target != "trace" and sampling.get("min_per_segment"):
        doc.error(("sampling", "min_per_segment"), "sampling.min_per_segment is for trace rubrics only")
    variables = _section(raw, "variables")
    for name, spec in variables.items():
        source = spec if isinstance(spec, str) else spec.get("from") if isinstance(spec, dict) else None
        if source in ALL_SOURCES and source not in SOURCES[target]:
            doc.error(("variables", name, "from") if isinstance(spec, dict) else ("variables", name),
                      f"variables.{name}: from {source} is not available to a {target} rubric "
                      f"(available: {', '.join(SOURCES[target])})")
        if target == "trace" and isinstance(spec, dict) and spec.get("from") == "observation" and "name" not in spec:
            pass  # fields.py reports the missing name


def _section(raw: dict[str, object], key: str) -> dict[object, object]:
    """The mapping under ``key``, or an empty one when it is absent or not a mapping."""
    value = raw.get(key)
    return value if isinstance(value, dict) else {}
