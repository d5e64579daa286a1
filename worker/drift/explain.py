"""One cause, one page: a parent cell's drop that a narrower cell's incident explains.

The sequential detector (worker/drift/detection.py) watches every cell: all traffic, each
feature, each tenant, each feature × tenant. One bad prompt in acme's summaries also drops
acme, summarize and all traffic. A cell's new incident is *explained* by another cell's open
incident when the other is narrower (more segment parts; a feature beside a tenant, as the
weekly check has it) and the parent's traffic outside their shared cell, since the parent's
estimated start, is less than half the threshold below the parent's reference, or within two
standard errors of it (a small remainder cannot show a drop of its own): then the
parent keeps its incident (``explained_by``) and only the narrow cell pages. The narrowest
cells are decided first, so an explained cell never explains another.

A parent can cross first: it holds more traffic, and the narrow cell's CUSUM may still be a few
scores short of its limit. Then a narrower cell whose traffic would explain the parent's drop
(the same remainder test) *and* whose own scores since the parent's start are clearly down
(half the threshold below its reference, two standard errors deep) holds the parent's page
(``held_for``): when that cell's incident opens, the parent is explained by it; if it has not
opened ``HOLD_SECONDS`` (12 h) later, the parent pages itself.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from worker.drift.aggregates import DEFAULT_SEGMENT_KEYS
from worker.drift.records import CellDetection

Z_LEFT = 2.0  # the rest of the parent's traffic keeps the drop only if it is this many standard errors deep
HOLD_SECONDS = 12 * 3600  # the longest a parent's page waits for the narrower cell that explains it
Since = Callable[[str, float], tuple[int, float]]  # cell, trace time -> (n, sum) of its scores since


def explain(results: Mapping[str, CellDetection], since: Since, now: float) -> dict[str, str]:
    """Settle the unsent incidents of ``results`` (cell -> CellDetection): explained by a
    narrower cell's open incident (``incident["explained_by"]``), held for a narrower cell about
    to cross (``held_for``, since ``held_since``), or released to page. Returns the cells whose
    incident changed, with their new status ("explained" | "held" | "alarm")."""
    open_cells: list[str] = []
    changed: dict[str, str] = {}
    for cell in sorted(results, key=specificity, reverse=True):
        result = results[cell]
        incident = result.incident
        if incident is None or incident.get("explained_by"):
            continue
        if result.new_incident or incident.get("held_for"):
            by = [c for c in open_cells if _explains(c, cell, result, since)]
            if by:
                incident.pop("held_for", None)
                incident["explained_by"] = [segment(c) for c in by]
                changed[cell] = "explained"
                continue
            waiting = [c for c in results if c not in open_cells and _about_to_explain(c, cell, results, since)]
            held_since = incident.get("held_since", now)
            if waiting and now - held_since < HOLD_SECONDS:
                incident["held_for"] = [segment(c) for c in waiting]
                incident["held_since"] = held_since
                changed[cell] = "held"
                continue
            if incident.pop("held_for", None) is not None:
                changed[cell] = "alarm"  # waited long enough: it pages itself
        open_cells.append(cell)
    return changed


def segment(cell: str) -> str:
    return cell.split("|", 3)[3]


def _parts(cell: str) -> dict[str, str]:
    seg = segment(cell)
    return {} if seg == "all" else dict(part.split("=", 1) for part in seg.split("|"))


def specificity(cell: str) -> tuple[int, bool]:
    """More segment parts first; among one-part cells, features before tenants (a feature explains
    a tenant's drop, never the other way round)."""
    parts = _parts(cell)
    return len(parts), "feature" in parts


def intersection(a: str, b: str) -> str | None:
    """The cell holding the traffic of both (same rubric version and judge), as aggregates name it."""
    head_a, head_b = a.split("|", 3)[:3], b.split("|", 3)[:3]
    parts_a, parts_b = _parts(a), _parts(b)
    if head_a != head_b or any(parts_a[k] != parts_b[k] for k in parts_a.keys() & parts_b.keys()):
        return None
    merged = {**parts_a, **parts_b}
    order = {k: i for i, k in enumerate(DEFAULT_SEGMENT_KEYS)}
    keys = sorted(merged, key=lambda k: order.get(k, len(order)))
    return "|".join([*head_a, "|".join(f"{k}={merged[k]}" for k in keys) or "all"])


def _about_to_explain(child: str, parent: str, results: Mapping[str, CellDetection], since: Since) -> bool:
    """A narrower cell with no incident yet whose traffic explains the parent's drop and whose
    own scores since the parent's start are clearly down against its own reference."""
    mine = results[child]
    if mine.incident is not None or mine.reference is None or not mine.reference.sufficient:
        return False
    parent_incident = results[parent].incident
    if parent_incident is None or not _explains(child, parent, results[parent], since):
        return False
    n, total = since(child, parent_incident["started_epoch"])
    if n <= 0:
        return False
    drop = mine.reference.mean - total / n
    threshold = float(parent_incident.get("drop_threshold", 5.0))
    return drop >= threshold / 2 and drop >= Z_LEFT * mine.reference.sd / math.sqrt(n)


def _explains(child: str, parent: str, result: CellDetection, since: Since) -> bool:
    incident, reference = result.incident, result.reference
    if incident is None or reference is None or specificity(child) <= specificity(parent):
        return False
    shared = intersection(child, parent)
    if shared is None or shared == parent:
        return False
    start = incident["started_epoch"]
    n, total = since(parent, start)
    n_shared, total_shared = since(shared, start)
    n_rest, total_rest = n - n_shared, total - total_shared
    if n_rest <= 0:
        return True  # all of the parent's traffic since the start is the child's
    drop = reference.mean - total_rest / n_rest
    # What is left must show a drop of its own: half the threshold at least, and clear of its noise.
    return drop < float(incident.get("drop_threshold", 5.0)) / 2 or drop < Z_LEFT * reference.sd / math.sqrt(n_rest)
