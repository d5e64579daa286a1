"""Reading the previous release's pending records: their drift contribution is an opcode list.

That release kept, in each pending-confirmation record, the writes its confirmation would
replay as ``[op, key, a, b]`` lists (``sadd``, ``zadd``, ``hincrby``, ``hincrbyfloat``,
``keep_lowest``) for a generic Lua interpreter. Records written by it may still be pending
when this release starts (a rolling deploy: they settle within minutes of their write), so
``from_legacy_ops`` turns such a list into the ``DriftContribution`` it describes.

Delete this module (and its use in worker/judging/confirm.py) once no process of that
release runs and its last records are settled.
"""
from __future__ import annotations

from worker.drift.contribution import (CELLS, PENDING, ContributionFormatError, DriftContribution, bottom_key,
                                       day_epoch, day_key, days_key)


def from_legacy_ops(ops: object) -> DriftContribution | None:
    """The contribution an opcode list (as JSON kept it) describes; None for an empty list (a
    score that counted in no cell).

    The list is read into a ``DriftContribution`` and checked by writing out the list that
    release wrote for it: anything but an exact match raises ContributionFormatError, so a
    record is never applied other than as it was meant."""
    if ops == []:
        return None
    try:
        found = _parse(ops)
    except (AttributeError, IndexError, KeyError, StopIteration, TypeError, ValueError):
        found = None
    if found is None or legacy_ops(found) != ops:
        raise ContributionFormatError(f"not a drift opcode list this release reads: {str(ops)[:200]}")
    return found


def legacy_ops(c: DriftContribution) -> list[list[object]]:
    """The opcode list the previous release wrote for ``c``, as JSON gives it back."""
    ops: list[list[object]] = []
    for cell in c.cells:
        stats = day_key(cell, c.day)
        ops += [["sadd", CELLS, cell, ""], ["zadd", days_key(cell), c.day, day_epoch(c.day)],
                ["hincrby", stats, "n", 1], ["hincrbyfloat", stats, "sum", repr(c.points)],
                ["hincrbyfloat", stats, "sumsq", repr(c.points * c.points)],
                ["hincrby", stats, "cost_microusd", c.cost_microusd],
                ["keep_lowest", bottom_key(cell, c.day), c.member, repr(c.points)],
                ["zadd", PENDING + cell, c.pending_member, c.trace_epoch]]
        if c.label is not None:
            ops += [["hincrby", stats, "passes", 1 if c.passed else 0], ["hincrby", stats, f"label:{c.label}", 1]]
    return ops


def _parse(ops: object) -> DriftContribution | None:
    """The contribution read off the first cell's ops (``legacy_ops`` then checks all of them)."""
    if not isinstance(ops, list) or not all(isinstance(op, list) and len(op) == 4 for op in ops):
        return None

    def find(name: str, key: str, field: str | None = None) -> list[object]:
        op: list[object] = next(op for op in ops if op[0] == name and op[1] == key
                                and (field is None or op[2] == field))
        return op

    cells = [str(op[2]) for op in ops if op[0] == "sadd" and op[1] == CELLS]
    day = str(find("zadd", days_key(cells[0]))[2])
    stats = day_key(cells[0], day)
    points = float(str(find("hincrbyfloat", stats, "sum")[3]))
    member = str(find("keep_lowest", bottom_key(cells[0], day))[2])
    _, _, pending_member, stamp = find("zadd", PENDING + cells[0])
    observation = str(pending_member)[len(member) + 1:-len(f"|{points!r}")]  # "<member>|<obs>|<points>"
    cost = find("hincrby", stats, "cost_microusd")[3]
    labels = [str(op[2])[len("label:"):] for op in ops
              if op[0] == "hincrby" and op[1] == stats and str(op[2]).startswith("label:")]
    passes = [op[3] for op in ops if op[0] == "hincrby" and op[1] == stats and op[2] == "passes"]
    if not isinstance(stamp, (int, float)) or not isinstance(cost, int):
        return None
    return DriftContribution(cells=tuple(cells), day=day, points=points, trace_epoch=float(stamp),
                             cost_microusd=cost, member=member, observation_id=observation,
                             label=labels[0] if labels else None, passed=bool(passes[0]) if passes else None)
