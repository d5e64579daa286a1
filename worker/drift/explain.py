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
"""
from __future__ import annotations

import math
from collections.abc import Callable

from worker.drift.aggregates import DEFAULT_SEGMENT_KEYS

Z_LEFT = 2.0  # the rest of the parent's traffic keeps the drop only if it is this many standard errors deep
Since = Callable[[str, float], tuple[int, float]]  # cell, trace time -> (n, sum) of its scores since


def explain(results: dict, since: Since) -> list[str]:
    """Mark the new incidents of ``results`` (cell -> CellDetection) that an open incident of a
    narrower cell explains (``incident["explained_by"]``); returns those cells."""
    open_cells: list[str] = []
    explained = []
    for cell in sorted(results, key=specificity, reverse=True):
        result = results[cell]
        if result.incident is None or result.incident.get("explained_by"):
            continue
        if result.new_incident:
            by = [c for c in open_cells if _explains(c, cell, result, since)]
            if by:
                result.incident["explained_by"] = [segment(c) for c in by]
                explained.append(cell)
                continue
        open_cells.append(cell)
    return explained


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


def _explains(child: str, parent: str, result, since: Since) -> bool:
    if specificity(child) <= specificity(parent):
        return False
    shared = intersection(child, parent)
    if shared is None or shared == parent:
        return False
    start = result.incident["started_epoch"]
    n, total = since(parent, start)
    n_shared, total_shared = since(shared, start)
    n_rest, total_rest = n - n_shared, total - total_shared
    if n_rest <= 0:
        return True  # all of the parent's traffic since the start is the child's
    drop = result.reference.mean - total_rest / n_rest
    # What is left must show a drop of its own: half the threshold at least, and clear of its noise.
    return drop < float(result.incident.get("drop_threshold", 5.0)) / 2 or \
        drop < Z_LEFT * result.reference.sd / math.sqrt(n_rest)
