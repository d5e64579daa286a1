"""Server-faithful modes of the Langfuse emulator: which server generation answers, whether
score config checks run before or after the 200, and the real server's orderings.

Every fact here was read in langfuse/langfuse @6275144 (server 4.16.0) and v3.225.4; the
file named next to each constant is where.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from emulators.http_base import Reply
from emulators.langfuse_release import RELEASES

GENERATIONS = ("spec", "v3", "v4-dual", "v4-events")
SCORE_CHECKS = ("sync", "async")
ORDERS = ("spec", "server")
LEGACY_FIELDS = ("spec", "server")

# web/src/pages/api/public/v2/observations/index.ts: thrown as LangfuseNotFoundError when
# LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN != "true", which is the default on v3 (v3.225.4).
V2_OBSERVATIONS_UNAVAILABLE = {
    "message": "The observations v2 API is only available in a Langfuse v4 write mode. "
               "Learn more at: https://langfuse.com/docs/v4",
    "error": "LangfuseNotFoundError"}
# web/src/features/public-api/server/createAuthedProjectAPIRoute.ts: routes flagged
# rejectInEventsOnlyMode answer this before auth when LANGFUSE_MIGRATION_V4_WRITE_MODE is
# events_only, the v4 default (web/src/env.mjs).
EVENTS_ONLY_UNAVAILABLE = {
    "message": "This endpoint is not available on deployments running in Langfuse v4 events_only mode. "
               "Learn more about Langfuse v4 at: https://langfuse.com/docs/v4"}
# web/src/pages/api/public/{scores/index,ingestion,otel/v1/traces/index}.ts: ForbiddenError,
# which withMiddlewares answers as {message, error: name}.
INGESTION_SUSPENDED = {"message": "Ingestion suspended: Usage threshold exceeded. Please upgrade your plan.",
                       "error": "ForbiddenError"}
WRITE_PATHS = ("/api/public/scores", "/api/public/ingestion", "/api/public/otel/v1/traces")

# The routes of web/src/pages/api/public/ that set rejectInEventsOnlyMode: they read (or write)
# the legacy tables that events_only mode no longer fills.
_EVENTS_ONLY_REJECTED = [(methods, re.compile(p)) for methods, p in (
    ({"GET", "POST"}, r"^/api/public/traces$"), ({"GET"}, r"^/api/public/traces/[^/]+$"),
    ({"GET"}, r"^/api/public/observations(/[^/]+)?$"), ({"GET"}, r"^/api/public/scores(/[^/]+)?$"),
    ({"GET"}, r"^/api/public/v2/scores(/[^/]+)?$"), ({"GET"}, r"^/api/public/sessions(/[^/]+)?$"),
    ({"GET"}, r"^/api/public/metrics(/daily)?$"), ({"POST"}, r"^/api/public/events$"),
    ({"POST", "PATCH"}, r"^/api/public/(generations|spans)$"), ({"GET"}, r"^/api/public/dataset-run-items$"),
    ({"GET"}, r"^/api/public/datasets/[^/]+/runs(/[^/]+)?$"))]

# GET /api/public/scores (v1 list) is served by the real server (web/src/pages/api/public/scores/index.ts,
# query schema GetScoresQuery in packages/shared/src/features/scores/interfaces/api/shared.ts) but is not
# in the published spec. The schema is not strict, so unknown parameters are ignored, not refused.
SERVER_ONLY_GETS = {"/api/public/scores"}


@dataclass
class Modes:
    generation: str = "spec"
    score_checks: str = "sync"
    observation_order: str | None = None  # None: follow the generation
    legacy_fields: str | None = None
    release: str | None = None  # "4.16": the real server's harsher answers (emulators/langfuse_release.py)

    def __post_init__(self):
        if self.release is not None:
            _check("release", self.release, RELEASES)
        _check("generation", self.generation, GENERATIONS)
        _check("score_checks", self.score_checks, SCORE_CHECKS)
        if self.observation_order is not None:
            _check("observation_order", self.observation_order, ORDERS)
        if self.legacy_fields is not None:
            _check("legacy_fields", self.legacy_fields, LEGACY_FIELDS)

    @property
    def server_faithful(self) -> bool:
        return self.generation != "spec"

    @property
    def order(self) -> str:
        """Any real server generation orders like the server unless a test overrides it."""
        return self.observation_order or ("server" if self.server_faithful else "spec")

    @property
    def fields(self) -> str:
        return self.legacy_fields or ("server" if self.server_faithful else "spec")

    @property
    def has_v2_observations(self) -> bool:
        return self.generation != "v3"

    @property
    def events_only(self) -> bool:
        return self.generation == "v4-events"

    @property
    def real_4_16(self) -> bool:
        return self.release == "4.16"

    def view(self) -> dict:
        view = {"generation": self.generation, "score_checks": self.score_checks,
                "observation_order": self.order, "legacy_fields": self.fields}
        return view | ({"release": self.release} if self.release else {})


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def reject_if_events_only(modes: Modes, method: str, path: str, deprecation: dict) -> None:
    """Before auth, as the server does: a 404 here says which generation answered, not that data is gone."""
    if not modes.events_only:
        return
    if any(method in methods and pattern.match(path) for methods, pattern in _EVENTS_ONLY_REJECTED):
        raise Reply(404, EVENTS_ONLY_UNAVAILABLE | {"_deprecation": deprecation})


def reject_if_no_v2(modes: Modes) -> None:
    if not modes.has_v2_observations:
        raise Reply(404, dict(V2_OBSERVATIONS_UNAVAILABLE))


def is_server_only(modes: Modes, method: str, path: str) -> bool:
    """A route the real server answers but the spec lacks; spec generation keeps refusing it (400)."""
    return modes.server_faithful and method == "GET" and path in SERVER_ONLY_GETS
