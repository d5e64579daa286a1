"""A judgeable view of one trace, read through v2 observations (legacy /traces as fallback)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError

from worker.errors import ConfigError, Unscored
from worker.langfuse_io.client import raw_request
from worker.langfuse_io.observations import V2OrLegacy, walk_v2
from worker.retrying import call_with_retries

TRACE_FIELDS = "core,basic,io,metadata,model,trace_context"


@dataclasses.dataclass
class Trace:
    id: str
    name: str | None
    environment: str | None
    timestamp: dt.datetime | None
    input: Any
    output: Any
    metadata: dict
    tags: list[str]
    observations: list[dict]  # every observation: name, type, input, output, metadata, model

    def observation(self, name: str) -> dict | None:
        for obs in self.observations:
            if obs.get("name") == name:
                return obs
        return None

    @classmethod
    def from_dict(cls, raw, default_id: str = "local") -> "Trace":
        """A trace written by hand (``rubrics render --file``, labelled examples):
        {id, name, environment, input, output, metadata, tags, observations: [{name, output, ...}]}."""
        if not isinstance(raw, dict):
            raise ConfigError("a trace must be a JSON object with input, output, metadata and observations")
        observations, metadata = raw.get("observations") or [], raw.get("metadata") or {}
        if not isinstance(observations, list) or not all(isinstance(o, dict) for o in observations):
            raise ConfigError("trace 'observations' must be a list of objects")
        if not isinstance(metadata, dict):
            raise ConfigError("trace 'metadata' must be an object")
        return cls(str(raw.get("id") or default_id), raw.get("name"), raw.get("environment"), None,
                   raw.get("input"), raw.get("output"), metadata, list(raw.get("tags") or []),
                   [_observation_dict(o) for o in observations])

    @property
    def producer_models(self) -> list[str]:
        return sorted({o["model"] for o in self.observations if o.get("model")})


def parse_io(value: Any) -> Any:
    """v2 returns input/output as raw strings: JSON when it parses, the text otherwise."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class TraceReader:
    """Fetches traces; remembers per process whether the server lacks v2 observations."""

    def __init__(self, api: LangfuseAPI):
        self.api = api
        self.generation = V2OrLegacy()

    def fetch(self, trace_id: str) -> Trace:
        return self.generation.call(lambda: self._fetch_v2(trace_id), lambda: self._fetch_legacy(trace_id))

    def _fetch_v2(self, trace_id: str) -> Trace:
        observations = [_observation_dict(o.dict(by_alias=True))
                        for o in walk_v2(self.api, fields=TRACE_FIELDS, limit=1000, trace_id=trace_id)]
        if not observations:
            raise Unscored("trace_not_found", f"no observations for trace {trace_id}")
        roots = [o for o in observations if o.get("isRootObservation") or not o.get("parentObservationId")]
        root = min(roots or observations, key=lambda o: o.get("startTime") or "")
        return Trace(
            id=trace_id,
            name=root.get("traceName") or root.get("name"),
            environment=root.get("environment"),
            timestamp=_as_datetime(root.get("startTime")),
            input=root.get("input"),
            output=root.get("output"),
            metadata=root.get("metadata") or {},
            tags=list(root.get("tags") or []),
            observations=observations,
        )

    def _fetch_legacy(self, trace_id: str) -> Trace:
        try:
            body = call_with_retries(lambda: raw_request(self.api, "GET", f"api/public/traces/{trace_id}"))
        except ApiError as exc:
            if exc.status_code == 404:
                raise Unscored("trace_not_found", f"trace {trace_id} not found") from None
            raise
        return Trace(
            id=trace_id,
            name=body.get("name"),
            environment=body.get("environment"),
            timestamp=_as_datetime(body.get("timestamp")),
            input=parse_io(body.get("input")),
            output=parse_io(body.get("output")),
            metadata=body.get("metadata") or {},
            tags=list(body.get("tags") or []),
            observations=[_observation_dict(o) for o in body.get("observations") or []],
        )


def _observation_dict(raw: dict) -> dict:
    obs = dict(raw)
    obs["input"] = parse_io(obs.get("input"))
    obs["output"] = parse_io(obs.get("output"))
    obs["model"] = obs.get("model") or obs.get("providedModelName")
    if isinstance(obs.get("metadata"), str):
        obs["metadata"] = parse_io(obs["metadata"])
    if not isinstance(obs.get("metadata"), dict):
        obs["metadata"] = {}
    for key in ("startTime", "endTime"):
        if isinstance(obs.get(key), dt.datetime):
            obs[key] = obs[key].isoformat()
    return obs


def _as_datetime(value) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    return None
