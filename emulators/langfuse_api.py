"""Langfuse public API emulator: the endpoints tracejudge uses, from the official spec.

Basic auth; v2 observations with cursor and field groups; legacy traces (switchable off, like
a v4 server); scores as one object (the spec) or an array (newer servers); v3 scores; score
configs. Every /api/public request is checked against the official OpenAPI spec: a violation
is answered 400 and recorded. Faults: 500/429 rates, latency, down, and scripted failures.

    python -m emulators.langfuse_api --port 8787 [--seed-file traces.jsonl]
"""
from __future__ import annotations

import argparse
import base64
import json
import random
import threading
import time
from collections import Counter

from emulators import langfuse_routes as routes
from emulators.http_base import Emulator, Reply, is_invalid, serve_until_signalled
from emulators.langfuse_store import PROJECT_ID, Invalid, Store
from emulators.openapi_check import validate_request

DEPRECATION = {"message": "This endpoint is deprecated on Langfuse Cloud; use GET /api/public/v2/observations.",
               "replacement": "/api/public/v2/observations", "sunsetAt": "2026-11-16T00:00:00Z"}
FAULT_KEYS = {"fault_rate_500": 0.0, "fault_rate_429": 0.0, "retry_after": 1, "latency_ms": 0, "down": False,
              "fail_next": []}


class LangfuseEmulator(Emulator):
    def __init__(self, public_key="pk-lf-local", secret_key="sk-lf-local", host="127.0.0.1", port=0, *,
                 legacy_traces=True, v2_observations=True, scores_body="both", seed=0):
        super().__init__(host, port)
        if scores_body not in ("object", "array", "both"):
            raise ValueError("scores_body must be object, array or both")
        self.auth = "Basic " + base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
        self.legacy_traces, self.v2_observations, self.scores_body = legacy_traces, v2_observations, scores_body
        self.seed = seed
        self._lock = threading.Lock()
        self.reset()

    # -- admin / inspection -----------------------------------------------------------------
    def reset(self) -> None:
        self.store = Store()
        self.faults = {k: (list(v) if isinstance(v, list) else v) for k, v in FAULT_KEYS.items()}
        self.rng = random.Random(self.seed)
        self._requests: list[dict] = []
        self._violations: list[dict] = []
        self.counts: Counter = Counter()

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

    # -- HTTP ----------------------------------------------------------------------------------
    def handle(self, method, path, query, headers, body):
        if path.startswith("/_emulator/"):
            return self._admin(method, path, body)
        if not path.startswith("/api/public/"):
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
        self._count(method, path, status, query, body)
        return status, payload, {}

    def _count(self, method, path, status, query, body):
        with self._lock:
            self.counts[f"{method} {path.split('/api/public/')[-1].split('/')[0]} {status}"] += 1
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
        route = (method, path)
        if route == ("POST", "/_emulator/observations"):
            try:
                return 200, {"loaded": self.store.load(body if isinstance(body, list) else [])}, {}
            except Invalid as exc:
                raise Reply(400, {"message": str(exc)}) from None
        if route == ("POST", "/_emulator/config"):
            try:
                self.configure(**(body or {}))
            except ValueError as exc:
                raise Reply(400, {"message": str(exc)}) from None
            return 200, self.faults, {}
        if route == ("POST", "/_emulator/reset"):
            self.reset()
            return 200, {"ok": True}, {}
        views = {"/_emulator/scores": self.scores, "/_emulator/score-writes": self.score_writes,
                 "/_emulator/requests": self.requests, "/_emulator/violations": self.violations,
                 "/_emulator/stats": self.stats}
        if method == "GET" and path in views:
            return 200, views[path](), {}
        raise Reply(404, {"message": "no such admin route"})

    def _public(self, method, path, query, headers, body):
        if headers.get("Authorization") != self.auth:
            raise Reply(401, {"message": "Invalid credentials"})
        if is_invalid(body):
            raise Invalid("request body is not valid JSON")
        problems = validate_request(method, path, query, body)
        if problems:
            with self._lock:
                self._violations.append({"method": method, "path": path, "query": query, "problems": problems})
            raise Reply(400, {"message": "Invalid request data", "error": problems})
        q = {k: v[-1] for k, v in query.items()}
        if path == "/api/public/health":
            return 200, {"status": "OK", "version": "4.16.0"}
        if path == "/api/public/projects":
            return 200, {"data": [{"id": PROJECT_ID, "name": "emulator", "metadata": {}, "organization": {
                "id": "emulator-org", "name": "emulator"}}]}
        if path == "/api/public/v2/observations":
            if not self.v2_observations:
                raise Reply(404, {"message": "not found"})
            return 200, routes.observations_v2(self.store, q, query)
        if path.startswith("/api/public/traces"):
            if not self.legacy_traces:
                raise Reply(404, {"message": "not found"})
            if path == "/api/public/traces":
                return 200, routes.traces_list(self.store, q, query) | {"_deprecation": DEPRECATION}
            return 200, routes.trace_get(self.store, path.rsplit("/", 1)[-1]) | {"_deprecation": DEPRECATION}
        if path == "/api/public/scores" and method == "POST":
            return self._post_scores(body)
        if path == "/api/public/v3/scores":
            return 200, routes.scores_v3(self.store, q)
        if path.startswith("/api/public/score-configs"):
            return routes.score_configs(self.store, method, path, q, body)
        raise Reply(404, {"message": f"{method} {path} is not emulated"})

    def _post_scores(self, body):
        if isinstance(body, list):
            if self.scores_body == "object":
                raise Invalid("Expected object, received array")
            errors = []
            for item in body:
                try:
                    self.store.upsert_score(item)
                except Invalid as exc:
                    errors.append({"message": str(exc)})
            if errors:
                return 207, {"accepted": len(body) - len(errors), "rejected": len(errors), "errors": errors}
            return 202, {"message": "Accepted"}
        if self.scores_body == "array":
            raise Invalid("Expected array, received object")
        return 200, {"id": self.store.upsert_score(body)}


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
    args = parser.parse_args(argv)
    emulator = LangfuseEmulator(args.public_key, args.secret_key, args.host, args.port,
                                legacy_traces=not args.no_legacy_traces, v2_observations=not args.no_v2_observations,
                                scores_body=args.scores_body)
    if args.seed_file:
        with open(args.seed_file) as fh:
            emulator.load_observations([json.loads(line) for line in fh if line.strip()])
    serve_until_signalled(emulator)


if __name__ == "__main__":
    main()
