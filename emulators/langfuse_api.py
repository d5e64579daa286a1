"""Langfuse public API emulator: the endpoints tracejudge uses, from the official spec, with
modes that answer as the real server does (harsher than the spec).

Basic auth; v2 observations with cursor and field groups; legacy traces; scores as one object
(the spec) or an array (newer servers); v3 scores; score configs (PATCH archives). Every
/api/public request is checked against the official OpenAPI spec: a violation is answered
400 and recorded. Faults (configure / POST /_emulator/config): 500/429 rates, latency, down,
scripted failures, lost answers (lost_answer_next: a write is stored, then answered 500), and
ingestion_suspended (Cloud over quota: writes answer 403).

Modes (constructor keywords; set_modes()/set_generation() or POST /_emulator/modes at run time):
- generation="spec" (default, the spec's kinder behaviour), "v3" (v2 observations answer 404
  "only available in a Langfuse v4 write mode"), "v4-dual" (both read families), "v4-events"
  (v4's default write mode events_only: legacy GET /traces, /traces/{id} and /scores answer 404
  "not available ... in events_only mode", before auth). Any generation but "spec" also serves
  the off-spec GET /api/public/scores (v1 list) and defaults the next two modes to "server".
- legacy_fields="spec"|"server": "server" applies the legacy `fields` groups as the server's
  coreSelect does: metadata, input and output only with `io` (emulators/langfuse_legacy.py).
- observation_order="spec"|"server": "server" orders v2 observations start_time DESC with the
  server's tie-breaks and the legacy trace's observations latest-ingested first.
- score_checks="sync" (default: a config violation is a 400) or "async": POST /scores answers
  200 {id} once the body's shape is valid; the config checks run on a background thread
  `score_check_delay_s` later and a failing score is silently not stored
  (emulators/langfuse_async_scores.py). drain_scores() waits for them; dropped_scores() lists
  what was dropped and why.
- release="4.16": the real server 4.16.0 where it is harsher than the spec (arrays refused on
  POST /scores, input/output as the raw stored string, metadata strings that are JSON read back
  as JSON, HTML 404s for unknown routes; emulators/langfuse_release.py). It implies
  generation="v4-events" and score_checks="async" unless those are named too (in the
  constructor, or in the same set_modes() call).
See emulators/langfuse_modes.py for where in the server source each behaviour was read.

    python -m emulators.langfuse_api --port 8787 [--seed-file traces.jsonl] [--generation v4-events]
"""
from __future__ import annotations

import argparse
import base64
import json
import random
import threading
import time
from collections import Counter

from emulators import langfuse_legacy as legacy
from emulators.langfuse_admin import admin_route
from emulators import langfuse_review as review
from emulators import langfuse_release as releases
from emulators import langfuse_routes as routes
from emulators.http_base import Emulator, Reply, is_invalid, serve_until_signalled
from emulators.langfuse_async_scores import DeferredScoreChecks
from emulators.langfuse_modes import (GENERATIONS, INGESTION_SUSPENDED, WRITE_PATHS, Modes, is_server_only,
                                      reject_if_events_only, reject_if_no_v2)
from emulators.langfuse_store import PROJECT_ID, Invalid, Store
from emulators.openapi_check import find_operation, is_known_path, validate_request

DEPRECATION = {"message": "This endpoint is deprecated on Langfuse Cloud; use GET /api/public/v2/observations.",
               "replacement": "/api/public/v2/observations", "sunsetAt": "2026-11-16T00:00:00Z"}
SCORES_DEPRECATION = {"message": "On Langfuse Cloud, Langfuse v3 is deprecated and this endpoint will be removed "
                                 "on November 16, 2026. Use GET /api/public/v3/scores instead.",
                      "replacement": "GET /api/public/v3/scores", "sunsetAt": "2026-11-16"}
FAULT_KEYS = {"fault_rate_500": 0.0, "fault_rate_429": 0.0, "retry_after": 1, "latency_ms": 0, "down": False,
              "fail_next": [], "ingestion_suspended": False,
              # writes whose answer is lost: each entry (langfuse_review.lost_answer_label, e.g.
              # "POST annotation-queues/items") makes the next such write be stored, then answered 500
              "lost_answer_next": []}


class LangfuseEmulator(Emulator):
    def __init__(self, public_key="pk-lf-local", secret_key="sk-lf-local", host="127.0.0.1", port=0, *,
                 legacy_traces=True, v2_observations=True, scores_body="both", seed=0, generation=None,
                 score_checks=None, observation_order=None, legacy_fields=None, score_check_delay_s=0.0,
                 trace_size_limit_bytes=legacy.TRACE_SIZE_LIMIT_BYTES, release=None):
        super().__init__(host, port)
        if scores_body not in ("object", "array", "both"):
            raise ValueError("scores_body must be object, array or both")
        self.auth = "Basic " + base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
        self.legacy_traces, self.v2_observations, self.scores_body = legacy_traces, v2_observations, scores_body
        implied = releases.release_modes(release, {"generation": generation, "score_checks": score_checks})
        self.modes = Modes(implied.get("generation") or generation or "spec",
                           implied.get("score_checks") or score_checks or "sync",
                           observation_order, legacy_fields, release)
        self.score_check_delay_s, self.trace_size_limit_bytes = score_check_delay_s, trace_size_limit_bytes
        self.seed = seed
        self._lock = threading.Lock()
        self.deferred: DeferredScoreChecks | None = None
        self.reset()

    # -- modes -------------------------------------------------------------------------------
    def set_modes(self, **changes) -> dict:
        """Switch modes while clients run (a server upgraded under them); None re-derives a mode."""
        unknown = set(changes) - {"generation", "score_checks", "observation_order", "legacy_fields", "release"}
        if unknown:
            raise ValueError(f"unknown modes {sorted(unknown)}")
        current = self.modes
        merged = {"generation": current.generation, "score_checks": current.score_checks,
                  "observation_order": current.observation_order, "legacy_fields": current.legacy_fields,
                  "release": current.release} | changes
        if changes.get("release"):  # a release brings its server's defaults for the modes not named here
            merged |= releases.release_modes(changes["release"], changes)
        self.modes = Modes(**merged)  # one assignment: a request sees the old modes or the new ones
        return self.modes.view()

    def set_generation(self, generation: str) -> dict:
        return self.set_modes(generation=generation)

    def archive_config(self, config_id: str, archived: bool = True) -> dict:
        """What PATCH /api/public/score-configs/{id} {"isArchived": true} does, from Python."""
        return routes.score_configs(self.store, "PATCH", f"/api/public/score-configs/{config_id}", {},
                                    {"isArchived": archived})[1]

    def drain_scores(self, timeout: float = 10.0) -> bool:
        return self.deferred.drain(timeout)

    def dropped_scores(self) -> list[dict]:
        return self.deferred.dropped()

    def dropped_score_counts(self) -> dict[str, int]:
        return self.deferred.dropped_counts()

    def stop(self) -> None:
        self.deferred.close()
        super().stop()

    # -- admin / inspection -----------------------------------------------------------------
    def reset(self) -> None:
        if self.deferred is not None:
            self.deferred.close()
        self.deferred = DeferredScoreChecks(self.score_check_delay_s)
        self.store = Store()
        self.faults = {k: (list(v) if isinstance(v, list) else v) for k, v in FAULT_KEYS.items()}
        self.rng = random.Random(self.seed)
        self._requests: list[dict] = []
        self._violations: list[dict] = []
        self.counts: Counter = Counter()
        # Per endpoint (the v2 observations listing apart from trace reads), every status; and
        # how many listing replies each trace's root appeared in (benchmarks/continuous.py).
        self.endpoints: Counter = Counter()
        self.listed: Counter = Counter()

    def configure(self, **faults) -> None:
        unknown = set(faults) - set(FAULT_KEYS)
        if unknown:
            raise ValueError(f"unknown fault settings {sorted(unknown)}")
        with self._lock:
            self.faults.update(faults)

    def load_observations(self, observations: list[dict]) -> int:
        return self.store.load(observations)

    def scores(self) -> list[dict]:
        with self.store.lock:
            return [dict(s) for s in self.store.scores.values()]

    def score_writes(self) -> dict[str, int]:
        return dict(self.store.writes)

    def requests(self) -> list[dict]:
        return list(self._requests)

    def violations(self) -> list[dict]:
        return list(self._violations)

    def stats(self) -> dict:
        return dict(self.counts)

    def endpoint_counts(self) -> dict:
        return dict(self.endpoints)

    def listing_appearances(self) -> dict:
        """trace id -> how many listing replies (v2 root listing, legacy /traces list) carried it."""
        return dict(self.listed)

    # -- HTTP ----------------------------------------------------------------------------------
    def handle(self, method, path, query, headers, body):
        if path.startswith("/_emulator/"):
            return self._admin(method, path, body)
        if not path.startswith("/api/public/"):
            if self.modes.real_4_16:
                raise releases.not_found()
            raise Reply(404, {"message": "not found"})
        self._inject_faults()
        try:
            status, payload = self._public(method, path, query, headers, body)
        except Reply as reply:
            self._count(method, path, reply.status, query, body)
            raise
        except Invalid as exc:
            self._count(method, path, 400, query, body)
            raise Reply(400, {"message": str(exc)}) from None
        if status < 300 and self._lose_answer(method, path):
            self._count(method, path, 500, query, body)
            raise Reply(500, {"message": "emulated 500 after the write was stored (a lost answer)"})
        self._count(method, path, status, query, body, payload)
        return status, payload, {}

    def _lose_answer(self, method, path) -> bool:
        """Whether this stored write's answer is lost (``lost_answer_next``); consumes its entry."""
        label = review.lost_answer_label(method, path)
        with self._lock:
            pending = list(self.faults["lost_answer_next"])
            if label not in pending:
                return False
            pending.remove(label)
            self.faults["lost_answer_next"] = pending
            self.counts["fault lost answer"] += 1
            return True

    def _count(self, method, path, status, query, body, payload=None):
        with self._lock:
            self.counts[f"{method} {path.split('/api/public/')[-1].split('/')[0]} {status}"] += 1
            self.endpoints[routes.endpoint_label(method, path, query)] += 1
            if status == 200 and routes.is_listing(method, path, query):
                self.listed.update(routes.listed_trace_ids(path, payload))
            self._requests.append({"method": method, "path": path, "query": query, "status": status,
                                   "body": body if not is_invalid(body) else "<invalid json>"})

    def _inject_faults(self):
        with self._lock:
            f = self.faults
            if f["latency_ms"]:
                time.sleep(f["latency_ms"] / 1000)
            if f["down"]:
                self.counts["fault 503"] += 1
                raise Reply(503, {"message": "service unavailable (emulated)"})
            status = f["fail_next"].pop(0) if f["fail_next"] else None
            if status is None:
                roll = self.rng.random()
                if roll < f["fault_rate_500"]:
                    status = 500
                elif roll < f["fault_rate_500"] + f["fault_rate_429"]:
                    status = 429
            if status is None:
                return
            self.counts[f"fault {status}"] += 1
        if status == 429:
            raise Reply(429, {"message": "rate limit exceeded"}, {
                "Retry-After": f["retry_after"], "X-RateLimit-Limit": 1000, "X-RateLimit-Remaining": 0,
                "X-RateLimit-Reset": int(time.time()) + int(f["retry_after"])})
        raise Reply(status, {"message": f"emulated {status}"})

    def _admin(self, method, path, body):
        return admin_route(self, method, path, body)

    def _public(self, method, path, query, headers, body):
        modes = self.modes  # one snapshot per request, so a switch mid-request cannot mix generations
        if modes.real_4_16:
            self._no_such_route(modes, method, path, query)
        reject_if_events_only(modes, method, path, DEPRECATION)
        if headers.get("Authorization") != self.auth:
            raise Reply(401, {"message": "Invalid credentials"})
        if is_invalid(body):
            raise Invalid("request body is not valid JSON")
        if modes.real_4_16 and method == "POST" and path == "/api/public/scores" and isinstance(body, list):
            raise Reply(400, releases.array_refused())  # zod: one object; nothing of the array lands
        # An off-spec route the server answers has no spec to check; its server schema ignores
        # unknown parameters.
        problems = [] if is_server_only(modes, method, path) else validate_request(method, path, query, body)
        if problems:
            with self._lock:
                self._violations.append({"method": method, "path": path, "query": query, "problems": problems})
            raise Reply(400, {"message": "Invalid request data", "error": problems})
        if method == "POST" and path in WRITE_PATHS and self.faults["ingestion_suspended"]:
            raise Reply(403, dict(INGESTION_SUSPENDED))
        q = {k: v[-1] for k, v in query.items()}
        if path == "/api/public/health":
            return 200, {"status": "OK", "version": "4.16.0"}
        if path == "/api/public/projects":
            return 200, {"data": [{"id": PROJECT_ID, "name": "emulator", "metadata": {}, "organization": {
                "id": "emulator-org", "name": "emulator"}}]}
        if path == "/api/public/v2/observations":
            if not self.v2_observations:
                raise Reply(404, {"message": "not found"})
            reject_if_no_v2(modes)
            return 200, routes.observations_v2(self.store, q, query, modes.order, real_4_16=modes.real_4_16)
        if path.startswith("/api/public/traces"):
            if not self.legacy_traces:
                raise Reply(404, {"message": "not found"})
            return 200, self._legacy_trace_read(modes, path, q, query) | {"_deprecation": DEPRECATION}
        if path == "/api/public/scores" and method == "POST":
            return self._post_scores(body, modes)
        if path == "/api/public/scores" and method == "GET":  # only reached in a server generation
            return 200, legacy.scores_v1(self.store, q, query) | {"_deprecation": SCORES_DEPRECATION}
        if path == "/api/public/v3/scores":
            return 200, review.with_annotation_fields(self.store, q, routes.scores_v3(self.store, q))
        if path == "/api/public/v2/scores" and method == "GET":  # deprecated; what servers before 3.179 have
            return 200, legacy.scores_v1(self.store, q, query) | {"_deprecation": SCORES_DEPRECATION}
        if path.startswith("/api/public/score-configs"):
            return routes.score_configs(self.store, method, path, q, body)
        if review.handles(path):  # annotation queues, datasets, dataset items
            return review.route(self.store, method, path, q, body)
        raise Reply(404, {"message": f"{method} {path} is not emulated"})

    def _legacy_trace_read(self, modes: Modes, path: str, q: dict, query: dict) -> dict:
        server = modes.fields == "server"
        if path == "/api/public/traces":
            return (legacy.traces_list if server else routes.traces_list)(self.store, q, query)
        trace_id = path.rsplit("/", 1)[-1]
        if server:
            return legacy.trace_get(self.store, trace_id, q, order=modes.order, size_limit=self.trace_size_limit_bytes)
        return routes.trace_get(self.store, trace_id, modes.order)

    def _no_such_route(self, modes: Modes, method: str, path: str, query: dict) -> None:
        """The real server's answer to a route it does not have: Next.js's HTML 404 page (before
        auth), or 405 for a known route with another method. Recorded as a spec violation too."""
        if is_server_only(modes, method, path) or find_operation(method, path) is not None:
            return
        with self._lock:
            self._violations.append({"method": method, "path": path, "query": query,
                                     "problems": [f"{method} {path} is not an operation of the Langfuse public API"]})
        if is_known_path(path):
            raise Reply(405, dict(releases.METHOD_NOT_ALLOWED))
        raise releases.not_found()

    def _write_score(self, body, modes: Modes) -> str:
        if modes.real_4_16 and isinstance(body, dict) and isinstance(body.get("metadata"), dict):
            body = {**body, "metadata": releases.parse_metadata(body["metadata"])}  # stored as text, read back parsed
        if modes.score_checks == "async":
            item = self.store.accept_score(body)
            self.deferred.submit(self.store, body, item)
            return item["id"]
        return self.store.upsert_score(body)

    def _post_scores(self, body, modes: Modes):
        if isinstance(body, list):
            if self.scores_body == "object":
                raise Invalid("Expected object, received array")
            errors = []
            for item in body:
                try:
                    self._write_score(item, modes)
                except Invalid as exc:
                    errors.append({"message": str(exc)})
            if errors:
                return 207, {"accepted": len(body) - len(errors), "rejected": len(errors), "errors": errors}
            return 202, {"message": "Accepted"}
        if self.scores_body == "array":
            raise Invalid("Expected array, received object")
        return 200, {"id": self._write_score(body, modes)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Langfuse public API emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--public-key", default="pk-lf-local")
    parser.add_argument("--secret-key", default="sk-lf-local")
    parser.add_argument("--seed-file", help="observations to load, one JSON object per line")
    parser.add_argument("--no-legacy-traces", action="store_true")
    parser.add_argument("--no-v2-observations", action="store_true")
    parser.add_argument("--scores-body", choices=("object", "array", "both"), default="both")
    parser.add_argument("--generation", choices=GENERATIONS, default=None)
    parser.add_argument("--score-checks", choices=("sync", "async"), default=None)
    parser.add_argument("--release", choices=releases.RELEASES, default=None,
                        help="answer as this real server release does (implies its generation and score checks)")
    args = parser.parse_args(argv)
    emulator = LangfuseEmulator(args.public_key, args.secret_key, args.host, args.port,
                                legacy_traces=not args.no_legacy_traces, v2_observations=not args.no_v2_observations,
                                scores_body=args.scores_body, generation=args.generation,
                                score_checks=args.score_checks, release=args.release)
    if args.seed_file:
        with open(args.seed_file) as fh:
            emulator.load_observations([json.loads(line) for line in fh if line.strip()])
    serve_until_signalled(emulator)


if __name__ == "__main__":
    main()
