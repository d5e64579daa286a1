"""The emulators as the benchmarks run them: the Langfuse emulator indexed.

(Every emulator now runs with TCP_NODELAY, emulators/http_base.py: with Nagle's algorithm on, a
keep-alive reply's body waited ~40 ms for the client's delayed ACK, a trace read 45 ms instead
of 1.5 ms, which capped a 500 ms judge's efficiency near 0.8 by itself.)

Indexes. The emulator answers a v2 observations request by scanning every stored observation (tens of
milliseconds at 40,000), so at benchmark scale the emulator, not tracejudge, would set the
pace and eat the shared cores. This runs the same emulator (same routes, checks, faults and
counters) and only narrows the rows each v2 observations request scans to a superset of what
it can match: a ``traceId`` request scans that trace's observations, a root listing with a
start-time window scans the roots in that window, a v3 scores read by ``id`` scans those ids. The route still applies every filter
itself, so every answer is the one the plain emulator gives.

    python -m benchmarks.fast_emulators langfuse --port 8787 --public-key pk --secret-key sk
    python -m benchmarks.fast_emulators judge --port 8788 --latency-ms 500     (emulators.judge_api)
    python -m benchmarks.fast_emulators judge_limits --port 8789               (emulators.judge_limits)
"""
from __future__ import annotations

import bisect
import datetime as dt
import sys
from collections import defaultdict

import emulators.langfuse_api as langfuse_api
from emulators import langfuse_routes as routes
from emulators.langfuse_store import Invalid, Store, is_root, parse_time

_plain_observations_v2 = routes.observations_v2
_plain_scores_v3 = routes.scores_v3


class IndexedStore(Store):
    def __init__(self):
        super().__init__()
        self.by_trace: dict[str, dict[str, dict]] = defaultdict(dict)
        self.root_keys: list[tuple[dt.datetime, str]] = []  # (start, observation id), sorted

    def load(self, observations: list[dict]) -> int:
        with self.lock:
            n = super().load(observations)
            for obs in observations:
                row = self.observations[obs["id"]]
                self.by_trace[row["traceId"]][row["id"]] = row
                if is_root(row):
                    bisect.insort(self.root_keys, (row["_start"], row["id"]))
            return n


class _Rows:
    """What observations_v2 reads of a store: its lock and the observations to scan."""

    def __init__(self, lock, observations: dict):
        self.lock, self.observations = lock, observations


def _narrowed(store: IndexedStore, q: dict) -> _Rows | None:
    if q.get("traceId"):
        with store.lock:
            return _Rows(store.lock, dict(store.by_trace.get(q["traceId"], {})))
    if q.get("isRootObservation") == "true" and (q.get("fromStartTime") or q.get("toStartTime")):
        try:
            since = parse_time(q["fromStartTime"]) if q.get("fromStartTime") else None
            until = parse_time(q["toStartTime"]) if q.get("toStartTime") else None
        except Invalid:
            return None  # the route answers the 400
        with store.lock:
            keys = store.root_keys
            lo = bisect.bisect_left(keys, (since,)) if since else 0
            hi = bisect.bisect_left(keys, (until,)) if until else len(keys)
            # ids may have been re-loaded with another start: keep only rows that are still roots
            rows = {obs_id: store.observations[obs_id] for _, obs_id in keys[max(0, lo - 1):hi + 1]
                    if obs_id in store.observations}
        return _Rows(store.lock, rows)
    return None


def observations_v2(store, q: dict, query: dict, order: str = "spec", **modes) -> dict:
    rows = _narrowed(store, q) if isinstance(store, IndexedStore) else None
    return _plain_observations_v2(rows if rows is not None else store, q, query, order, **modes)


class _Scores:
    """What scores_v3 reads of a store: its lock and the scores to scan."""

    def __init__(self, lock, scores: dict):
        self.lock, self.scores = lock, scores


def scores_v3(store, q: dict) -> dict:
    """An ``id`` read (tracejudge's read-back) scans only those ids' scores, not every stored one."""
    ids = {v.strip() for v in (q.get("id") or "").split(",") if v.strip()}
    if ids:
        with store.lock:
            store = _Scores(store.lock, {i: store.scores[i] for i in ids if i in store.scores})
    return _plain_scores_v3(store, q)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    which = argv.pop(0) if argv else ""
    if which == "langfuse":
        routes.observations_v2 = observations_v2
        routes.scores_v3 = scores_v3
        langfuse_api.Store = IndexedStore
        langfuse_api.main(argv)
    elif which == "judge":
        from emulators import judge_api
        judge_api.main(argv)
    elif which == "judge_limits":
        from emulators import judge_limits
        judge_limits.main(argv)
    else:
        raise SystemExit("usage: python -m benchmarks.fast_emulators langfuse|judge|judge_limits [emulator args]")


if __name__ == "__main__":
    main()
