"""One cause, one page, when the parent crosses first: a parent's drop that a narrower cell
about to cross explains is held for it, then explained by it; held too long, it pages itself."""
from __future__ import annotations

from worker.drift.records import CellDetection
from worker.drift.explain import HOLD_SECONDS, explain
from worker.drift.sequential import Reference

PARENT = "r|v1|m|all"
CHILD = "r|v1|m|feature=summarize|tenant=acme"
OTHER = "r|v1|m|feature=chat|tenant=globex"
START = 1_000.0


def cell(name: str, incident: dict | None = None, new: bool = False) -> CellDetection:
    ref = Reference(80.0, 20.0, 2_000, 28, "2026-11-01", "2026-11-28", "ok")
    return CellDetection(name, "alarm" if incident else "watching", ref, None, False, 0.0, 30.0, 0,
                         incident, new)


def parent_incident() -> dict:
    return {"incident_id": "p", "started_epoch": START, "drop_threshold": 5.0, "sent": False}


def since_factory(child_mean: float):
    """The parent: 100 scores since the start, mean 70; the child 60 of them at ``child_mean``,
    the other 40 (the rest of the parent) at whatever keeps the parent's sum."""
    sums = {PARENT: (100, 7_000.0), CHILD: (60, 60 * child_mean), OTHER: (40, 7_000.0 - 60 * child_mean)}
    return lambda c, since: sums.get(c, (0, 0.0))


def test_a_parent_that_crosses_first_is_held_for_the_child_then_explained_by_it():
    results = {PARENT: cell(PARENT, parent_incident(), new=True), CHILD: cell(CHILD), OTHER: cell(OTHER)}
    since = since_factory(child_mean=63.3)  # the rest of the parent stays at 80: the child holds the drop
    assert explain(results, since, now=5_000.0) == {PARENT: "held"}
    assert results[PARENT].incident["held_for"] == ["feature=summarize|tenant=acme"]
    assert results[PARENT].incident["held_since"] == 5_000.0

    # The next check: the child crossed (a new incident); the held parent is explained by it.
    results = {PARENT: cell(PARENT, results[PARENT].incident),
               CHILD: cell(CHILD, {"incident_id": "c", "started_epoch": START, "drop_threshold": 5.0}, new=True),
               OTHER: cell(OTHER)}
    changed = explain(results, since, now=5_300.0)
    assert changed == {PARENT: "explained"}
    assert results[PARENT].incident["explained_by"] == ["feature=summarize|tenant=acme"]
    assert "held_for" not in results[PARENT].incident


def test_a_held_parent_pages_itself_when_the_child_does_not_cross_in_time():
    incident = {**parent_incident(), "held_for": ["feature=summarize|tenant=acme"], "held_since": 5_000.0}
    results = {PARENT: cell(PARENT, incident), CHILD: cell(CHILD), OTHER: cell(OTHER)}
    since = since_factory(child_mean=63.3)
    assert explain(results, since, now=5_000.0 + HOLD_SECONDS - 1) == {PARENT: "held"}
    assert explain(results, since, now=5_000.0 + HOLD_SECONDS) == {PARENT: "alarm"}
    assert "held_for" not in results[PARENT].incident


def test_a_drop_spread_over_the_parent_is_not_held():
    """The child is no lower than the rest: nothing narrower explains it, the parent pages now."""
    results = {PARENT: cell(PARENT, parent_incident(), new=True), CHILD: cell(CHILD), OTHER: cell(OTHER)}
    assert explain(results, since_factory(child_mean=70.0), now=5_000.0) == {}
    assert "held_for" not in results[PARENT].incident and "explained_by" not in results[PARENT].incident


def test_a_child_too_noisy_to_show_its_own_drop_holds_nothing():
    """Few child scores: its drop is inside its noise, so the parent does not wait for it."""
    results = {PARENT: cell(PARENT, parent_incident(), new=True), CHILD: cell(CHILD)}
    sums = {PARENT: (10, 700.0), CHILD: (2, 2 * 65.0)}  # the rest (8 at 71.3) is inside its noise too
    assert explain(results, lambda c, s: sums.get(c, (0, 0.0)), now=5_000.0) == {}
