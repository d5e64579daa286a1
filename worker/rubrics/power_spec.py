"""The ``sampling`` section's power-aware fields (issue 27, item 4): a detection target, a daily
budget, cell priorities and the boost after a change. A rubric without ``detection_target``
samples exactly as before (one rate, the per-segment quota); samplers/planner.py turns a
``PowerSpec`` into per-cell rates.

    sampling:
      rate: 0.01                       # the floor of every cell's rate
      detection_target: {drop_points: 5, within_hours: 72}
      daily_budget_judged: 2000        # judged traces a day; and/or budget.daily_usd
      priority: {"tenant=acme": 3, "feature=*": 2}   # segment patterns, first match wins (default 1)
      boost: {factor: 10, hours: 48}   # after a new prompt version, release, version or model
"""
from __future__ import annotations

import dataclasses
import fnmatch

from worker.rubrics.doc import RubricDoc, is_number

POWER_KEYS = {"detection_target", "daily_budget_judged", "priority", "boost"}
POWER_SUBKEYS: dict[tuple[str, ...], set[str]] = {
    ("sampling", "detection_target"): {"drop_points", "within_hours"},
    ("sampling", "boost"): {"factor", "hours"},
}
DEFAULT_BOOST_FACTOR = 10.0
DEFAULT_BOOST_HOURS = 48.0
MAX_TARGET_HOURS = 28 * 24  # past the detector's 28-day reference a target means nothing


@dataclasses.dataclass(frozen=True)
class PowerSpec:
    """A rubric's power-aware sampling: detect ``drop_points`` within ``within_hours`` in every
    cell the traffic and the budget allow, highest priority first."""

    drop_points: float
    within_hours: float
    daily_budget_judged: float | None = None  # None: only budget.daily_usd caps it
    priorities: tuple[tuple[str, float], ...] = ()  # (segment pattern, priority), first match wins
    boost_factor: float = DEFAULT_BOOST_FACTOR
    boost_hours: float = DEFAULT_BOOST_HOURS

    def priority(self, segment: str) -> float:
        """The priority of a cell's segment ("all", "tenant=acme", "feature=x|tenant=y"): the
        first pattern (fnmatch: ``feature=*``) that matches, else 1."""
        for pattern, value in self.priorities:
            if fnmatch.fnmatchcase(segment, pattern):
                return value
        return 1.0

    @property
    def label(self) -> str:
        return f"{self.drop_points:g} points within {self.within_hours:g} h"


def parse_power(doc: RubricDoc, raw: object, target: str, usd_budget: bool) -> PowerSpec | None:
    """The power-aware fields of ``sampling`` (None without ``detection_target``); every bad
    value is an error at its line. ``usd_budget``: the rubric has ``budget.daily_usd``."""
    section = raw if isinstance(raw, dict) else {}
    if "detection_target" not in section:
        for key in sorted(POWER_KEYS & set(section)):
            doc.warn(("sampling", key), f"sampling.{key} means nothing without sampling.detection_target "
                     "and is ignored")
        return None
    ok = True
    where = ("sampling", "detection_target")
    goal = section["detection_target"]
    drop: object = None
    hours: object = None
    if not isinstance(goal, dict):
        doc.error(where, "sampling.detection_target must be a mapping: {drop_points: 5, within_hours: 72}")
        ok = False
    else:
        drop, hours = goal.get("drop_points"), goal.get("within_hours")
        if not is_number(drop) or not 0 < drop <= 100:
            doc.error(where + ("drop_points",) if "drop_points" in goal else where,
                      "sampling.detection_target.drop_points must be a number in (0, 100]: the drop to "
                      "detect, in quality points on 0-100")
            ok = False
        if not is_number(hours) or not 0 < hours <= MAX_TARGET_HOURS:
            doc.error(where + ("within_hours",) if "within_hours" in goal else where,
                      f"sampling.detection_target.within_hours must be a number of hours in (0, {MAX_TARGET_HOURS}]")
            ok = False
    if target != "trace":
        doc.error(where, f"sampling.detection_target applies to target: trace only (this rubric judges {target}s)")
        ok = False
    judged = section.get("daily_budget_judged")
    if judged is not None and (not is_number(judged) or judged <= 0):
        doc.error(("sampling", "daily_budget_judged"),
                  "sampling.daily_budget_judged must be a positive number (judged traces a day)")
        ok, judged = False, None
    if judged is None and not usd_budget and "daily_budget_judged" not in section:
        doc.error(where, "a detection target needs a daily budget: sampling.daily_budget_judged "
                  "(judged traces a day) or budget.daily_usd")
        ok = False
    priorities = _priorities(doc, section.get("priority"))
    factor, boost_hours = _boost(doc, section.get("boost"))
    if not ok or priorities is None or factor is None or boost_hours is None:
        return None
    assert is_number(drop) and is_number(hours)  # checked above (ok)
    return PowerSpec(float(drop), float(hours), None if judged is None else float(judged), priorities,
                     factor, boost_hours)


def _priorities(doc: RubricDoc, raw: object) -> tuple[tuple[str, float], ...] | None:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        doc.error(("sampling", "priority"), "sampling.priority must map segment patterns (\"all\", "
                  "\"tenant=acme\", \"feature=*\") to numbers (higher is served first)")
        return None
    out = []
    for pattern, value in raw.items():
        if not isinstance(pattern, str) or not pattern:
            doc.error(("sampling", "priority"), f"sampling.priority: {pattern!r} is not a segment pattern (a string)")
            return None
        if not is_number(value):
            doc.error(("sampling", "priority", pattern), f"sampling.priority.{pattern} must be a number")
            return None
        out.append((pattern, float(value)))
    return tuple(out)


def _boost(doc: RubricDoc, raw: object) -> tuple[float | None, float | None]:
    if raw is None:
        return DEFAULT_BOOST_FACTOR, DEFAULT_BOOST_HOURS
    if not isinstance(raw, dict):
        doc.error(("sampling", "boost"), "sampling.boost must be a mapping: {factor: 10, hours: 48}")
        return None, None
    factor, hours = raw.get("factor", DEFAULT_BOOST_FACTOR), raw.get("hours", DEFAULT_BOOST_HOURS)
    ok = True
    if not is_number(factor) or factor < 1:
        doc.error(("sampling", "boost", "factor") if "factor" in raw else ("sampling", "boost"),
                  "sampling.boost.factor must be a number ≥ 1 (1: no boost)")
        ok = False
    if not is_number(hours) or hours < 0:
        doc.error(("sampling", "boost", "hours") if "hours" in raw else ("sampling", "boost"),
                  "sampling.boost.hours must be a number of hours ≥ 0 (0: no boost)")
        ok = False
    if not ok or not is_number(factor) or not is_number(hours):
        return None, None
    return float(factor), float(hours)
