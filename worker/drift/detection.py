"""Sequential detection per cell, kept in Redis: the quality signal in hours, with when it began.

The statistics are pure (worker/drift/sequential.py: reference and design; cusum.py: the
state and its update; incident.py: history, start, effect); this module feeds them. Per cell:

    tracejudge:seq:pending:<cell>  zset  "<trace>|<observation>|<points>" -> trace epoch: confirmed
                                         scores the detector has not read (a few minutes' worth)
    tracejudge:seq:state:<cell>    JSON  the frozen reference, the CUSUM state, the bounded
                                         history (5-minute and hourly buckets) and the open incident
    tracejudge:seq:flagged:<cell>  set   trace-days inside an incident: left out of references

A confirmed score adds itself to ``pending`` in the confirmation's own Redis transaction (its
``DriftContribution``, worker/drift/contribution.py), so once per score id. Each check (the
scheduler every few minutes, and ``drift --once``) takes the cell's pending scores older than
the reorder lag, applies them in trace-time order and deletes them in one optimistic
transaction (WATCH on the pending set and the state), so a crash loses or repeats nothing. A
score confirmed after its trace time was passed is applied by the late rule of cusum.py:
counted once, never raising S above its in-place value.

A cell seen for the first time is watched from ``LOOKBACK_DAYS`` back (so a backfill of
history is detected as it happened) against the 28 trace-days before that; the reference is
refrozen weekly while the CUSUM rests at 0 and after an incident recovers (its days flagged).
An alarm opens one incident (one alert, ``incident_id`` stable); it stays open until the
mirror CUSUM says the cell recovered. A parent cell (all traffic, a tenant, a feature)
whose drop a narrower cell's open incident explains is not paged (worker/drift/explain.py): its
incident carries ``explained_by`` and stays in the state, not the outbox.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Mapping

import redis

from worker.drift import aggregates as agg
from worker.drift import cusum
from worker.drift import incident as incidents
from worker.drift import sequential as seq
from worker.drift.explain import explain
from worker.drift.records import CellDetection, IncidentRecord, PinnedFields
from worker.json_types import JSONDict
from worker.langfuse_io.ordering import iso_of
from worker.redis_client import as_text

log = logging.getLogger("tracejudge.drift")
PENDING = agg.PENDING
STATE = "tracejudge:seq:state:"
FLAGGED = "tracejudge:seq:flagged:"
LOOKBACK_DAYS = 7
REFRESH_DAYS = 7
REORDER_LAG_SECONDS = 300  # beyond the settle time: a score this late is applied in place
MAX_TRIES = 20


def budget_cell_years(false_alarms: tuple[float, str], cells: int) -> float:
    """Cell-years per false alarm from the setting: N per cell-year, or N pages a week in all."""
    count, unit = false_alarms
    if unit == "week":
        return seq.cell_years_for_weekly_pages(cells, count)
    return 1.0 / count


def check_cells(client: redis.Redis, cells: Mapping[str, tuple[object, float]], now: float, settle_seconds: int,
                cell_years: float) -> list[CellDetection]:
    """Run the detector over ``cells`` (cell -> (rubric, threshold drop)), then explain parents
    (worker/drift/explain.py): a new incident whose drop vanishes without a narrower cell's open
    incident is kept, not paged."""
    ready_before = now - settle_seconds - REORDER_LAG_SECONDS
    results = {cell: _check_cell(client, cell, drop, now, ready_before, cell_years)
               for cell, (_rubric, drop) in sorted(cells.items())}
    for cell, status in explain(results, lambda c, since: _since(client, c, since), now).items():
        results[cell].status = status
        _save_incident(client, cell, results[cell].incident)
    return list(results.values())


def _since(client: redis.Redis, cell: str, since: float) -> tuple[int, float]:
    """The cell's scores (n, sum) from ``since`` on, from its detector's bounded history."""
    blob = _load(client.get(STATE + cell))
    if not blob or not blob.get("history"):
        return 0, 0.0
    _starts, ends, n, totals, _ = _history(blob["history"]).arrays()
    after = ends > since
    return int(n[after].sum()), float(totals[after].sum())


def _check_cell(client: redis.Redis, cell: str, drop: float, now: float, ready_before: float,
                cell_years: float) -> CellDetection:
    state_key, pending_key = STATE + cell, PENDING + cell
    for _ in range(MAX_TRIES):
        with client.pipeline() as pipe:
            try:
                pipe.watch(state_key, pending_key)  # type: ignore[no-untyped-call]  # (redis-py leaves it untyped)
                blob = _load(pipe.get(state_key))
                if blob is None:
                    blob = _fresh(pipe, cell, now)
                blob = _maybe_refreeze(pipe, cell, blob, now)
                # redis-py types the reply as one union for every decode_responses and withscores:
                # ours is (bytes, float) pairs.
                ready: list[tuple[bytes, float]] = pipe.zrangebyscore(  # type: ignore[assignment]
                    pending_key, "-inf", ready_before, withscores=True)
                result, blob, flag = _apply(cell, blob, ready, drop, cell_years, now)
                pipe.multi()
                if ready:
                    pipe.zrem(pending_key, *[member for member, _ in ready])
                pipe.set(state_key, json.dumps(blob))
                if flag:
                    pipe.sadd(FLAGGED + cell, *flag)
                pipe.execute()
                return result
            except redis.WatchError:
                continue
    raise RuntimeError(f"the detector's state of {cell} kept changing under it ({MAX_TRIES} tries)")


def _apply(cell: str, blob: JSONDict, ready: list[tuple[bytes, float]], drop: float, cell_years: float,
           now: float) -> tuple[CellDetection, JSONDict, list[str]]:
    """Apply the ready scores; returns what the check found, the new state and the trace-days
    to flag as changed (an incident's, from its start: left out of later references)."""
    reference = seq.Reference(**blob["reference"]) if blob.get("reference") else None
    d = seq.design(reference, drop=drop, cell_years=cell_years) if reference else None
    state = cusum.State(**{**blob["state"], "arms": tuple(tuple(a) for a in blob["state"].get("arms", ()))})
    history = _history(blob.get("history"))
    scores = sorted(((t, float(m.decode().rsplit("|", 1)[1])) for m, t in ready), key=lambda p: p[0])
    scores = [(t, x) for t, x in scores if t >= blob["start"]]  # before monitoring: in the reference already
    for t, x in scores:
        history.add(x, t)
        if d is not None:
            state = cusum.update(state, x, t, d)
    new_incident, flag = False, []
    incident: IncidentRecord | None = blob.get("incident")
    # pin is None until the CUSUM has crossed (state.detected_at); d is None exactly when reference is.
    pinned = incidents.pin(state, d, history) if d is not None and incident is None else None
    if d is not None and reference is not None and pinned is not None:
        incident = _incident(cell, pinned, d, reference, now)
        new_incident, flag = True, incidents.flagged_days(pinned.started_at, max(pinned.detected_at, pinned.started_at))
    elif incident is not None and d is not None and not incident.get("explained_by"):
        incident = _refreshed(incident, incidents.pin(state, d, history), d)
    recovered_at = state.recovered_at  # not None: cusum.recovered(state)
    if d is not None and recovered_at is not None:
        if incident is not None:
            flag = incidents.flagged_days(incident["started_epoch"], recovered_at)
        blob["recovered"] = {"at": recovered_at,
                             "incident": incident.get("incident_id") if incident is not None else None}
        blob["reference"], state, incident = None, cusum.new_state(state.recovered_at), None  # re-baselined next check
        blob["refreeze"] = True
    blob.update(state=_state_json(state), history=_history_json(history), incident=incident, drop=drop,
                cell_years=cell_years)  # what the detector was designed with, for describe()
    status = ("insufficient_reference" if d is None else "alarm" if incident is not None else "watching")
    return CellDetection(
        cell=cell, status=status, reference=reference, note=seq.power_note(d) if d else None,
        under_powered=bool(d and seq.under_powered(d)), s=state.s, h=d.h if d else None,
        applied=len(scores), incident=incident, new_incident=new_incident), blob, flag


def _incident(cell: str, pinned: incidents.Incident, d: seq.Design, reference: seq.Reference,
              now: float) -> IncidentRecord:
    incident_id = hashlib.sha256(f"{cell}|{pinned.detected_at}".encode()).hexdigest()[:20]
    f = _pinned_fields(pinned, d)
    return {"incident_id": incident_id, "alerted_at": iso_of(now), "sent": False,
            "started_epoch": f["started_epoch"], "started_at": f["started_at"],
            "started_between": f["started_between"], "detected_at": f["detected_at"],
            "effect_points": f["effect_points"], "effect_interval": f["effect_interval"], "n_after": f["n_after"],
            "drop_threshold": f["drop_threshold"],
            "reference": {"mean": round(reference.mean, 2), "n": reference.n,
                          "since": reference.since, "until": reference.until}}


def _pinned_fields(pinned: incidents.Incident, d: seq.Design) -> PinnedFields:
    return {"started_epoch": pinned.started_at, "started_at": iso_of(pinned.started_at),
            "started_between": [iso_of(pinned.started_between[0]), iso_of(pinned.started_between[1])],
            "detected_at": iso_of(pinned.detected_at),
            "effect_points": round(pinned.effect_points, 2),
            "effect_interval": [round(pinned.effect_interval[0], 2), round(pinned.effect_interval[1], 2)],
            "n_after": pinned.n_after, "drop_threshold": d.drop}


def _refreshed(incident: IncidentRecord, pinned: incidents.Incident | None, d: seq.Design) -> IncidentRecord:
    """An open incident's effect, as more scores arrive (its start and detection stay)."""
    if pinned is None:
        return incident
    fields = _pinned_fields(pinned, d)
    refreshed = incident.copy()  # its keys in their order, these three values replaced
    refreshed["effect_points"] = fields["effect_points"]
    refreshed["effect_interval"] = fields["effect_interval"]
    refreshed["n_after"] = fields["n_after"]
    return refreshed


def _save_incident(client: redis.Redis, cell: str, incident: IncidentRecord | None) -> None:
    raw = client.get(STATE + cell)
    if raw is None:
        return
    blob = json.loads(raw)
    blob["incident"] = incident
    client.set(STATE + cell, json.dumps(blob))


def open_incident(client: redis.Redis, cell: str) -> IncidentRecord | None:
    """The cell's open incident, read-only (None: none open, or never checked)."""
    blob = _load(client.get(STATE + cell))
    return blob.get("incident") if blob else None


def update_incident(client: redis.Redis, cell: str, **fields: object) -> None:
    """Set ``fields`` on the cell's open incident (the scheduler's lease, or ``drift --once``,
    makes this the only writer of the state between checks)."""
    blob = _load(client.get(STATE + cell))
    if blob and blob.get("incident"):
        blob["incident"].update(fields)
        client.set(STATE + cell, json.dumps(blob))


def _fresh(client: redis.Redis, cell: str, now: float) -> JSONDict:
    """A cell seen for the first time: watched from LOOKBACK_DAYS back."""
    start_day = dt.datetime.fromtimestamp(now, dt.timezone.utc).date() - dt.timedelta(days=LOOKBACK_DAYS)
    start = dt.datetime.combine(start_day, dt.time(), dt.timezone.utc).timestamp()
    return {"start": start, "reference": None, "frozen_on": None, "refreeze": True,
            "state": _state_json(cusum.new_state(start)), "history": None, "incident": None}


def _maybe_refreeze(client: redis.Redis, cell: str, blob: JSONDict, now: float) -> JSONDict:
    """Freeze the reference from the 28 trace-days before the watch start (first time, after a
    recovery) or before today (weekly, while the CUSUM rests at 0 and no incident is open)."""
    today = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
    frozen_on = dt.date.fromisoformat(blob["frozen_on"]) if blob.get("frozen_on") else None
    at_rest = blob["state"].get("s", 0.0) == 0.0 and blob.get("incident") is None
    insufficient = blob.get("reference") is not None and blob["reference"]["status"] != "ok"
    due = (blob.get("refreeze") or frozen_on is None
           or (at_rest and (today - frozen_on).days >= REFRESH_DAYS)
           or (insufficient and frozen_on < today))
    if not due:
        return blob
    if blob.get("refreeze") and blob.get("reference") is None and frozen_on is None:
        until = dt.datetime.fromtimestamp(blob["start"], dt.timezone.utc).date()  # first time: before the watch
    else:
        until = today
    flagged = {as_text(m) for m in client.smembers(FLAGGED + cell)}
    days = seq.reference_days(until)
    rows = agg.read_days(client, cell, days)
    ref = seq.reference([seq.DayAggregate(day, int(r.get("n", 0)), r.get("sum", 0.0), r.get("sumsq", 0.0),
                                          changed=day in flagged) for day, r in rows.items()])
    return {**blob, "reference": dataclasses.asdict(ref), "frozen_on": today.isoformat(), "refreeze": False}


def _load(raw: bytes | str | None) -> JSONDict | None:
    blob: JSONDict | None = json.loads(raw) if raw else None
    return blob


def _state_json(state: cusum.State) -> JSONDict:
    return dataclasses.asdict(state)


def _history(raw: JSONDict | None) -> incidents.History:
    history = incidents.History()
    if raw:
        history.fine = {int(k): v for k, v in raw["fine"].items()}
        history.coarse = {int(k): v for k, v in raw["coarse"].items()}
        history.newest = raw["newest"]
    return history


def _history_json(history: incidents.History) -> JSONDict:
    return {"fine": history.fine, "coarse": history.coarse, "newest": history.newest}




def describe(client: redis.Redis, cell: str) -> tuple[str | None, str]:
    """Read-only, for the report and ``status``: (when the open incident was alerted, or None;
    one line on what the detector watches, can see or found, with the design its last check used)."""
    blob = _load(client.get(STATE + cell))
    if blob is None:
        return None, "not checked by the detector yet"
    inc: IncidentRecord | None = blob.get("incident")
    if inc:
        lo, hi = inc["effect_interval"]
        line = (f"−{inc['effect_points']:.1f} points [−{hi:.1f}, −{lo:.1f}] since {inc['started_at']} "
                f"({inc['started_between'][0]} – {inc['started_between'][1]}), detected {inc['detected_at']}")
        if inc.get("explained_by"):
            return None, line + f"; explained by {', '.join(inc['explained_by'])}"
        if inc.get("held_for"):
            return None, line + f"; held for {', '.join(inc['held_for'])}, about to cross"
        if inc.get("cause"):
            line += f"; {inc['cause']['reason']}"
        return (inc["alerted_at"][:16].replace("T", " ") if inc.get("sent") else None), line
    ref = seq.Reference(**blob["reference"]) if blob.get("reference") else None
    # design() is None exactly when the reference is insufficient
    d = (seq.design(ref, drop=blob.get("drop", 5.0), cell_years=blob.get("cell_years", 1.0))
         if ref is not None else None)
    if ref is None or d is None:
        n = 0 if ref is None else ref.n
        return None, f"insufficient reference: {n} scores in the 28 days before (needs {seq.MIN_REFERENCE_N})"
    return None, seq.power_note(d) + (" (under-powered: never paged by a fixed threshold)" if seq.under_powered(d) else "")
