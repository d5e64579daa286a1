"""The Langfuse emulator's data: observations, scores and score configs, with the server's
validation rules for scores. Thread-safe; no HTTP here."""
from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
import uuid
from collections import Counter

PROJECT_ID = "emulator-project"
_ENV = re.compile(r"^(?!langfuse)[a-z0-9_-]+$")
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9_ .()-]{1,35}$")

GROUPS = {
    "core": ("id", "traceId", "startTime", "endTime", "projectId", "parentObservationId", "type"),
    "basic": ("name", "level", "statusMessage", "version", "environment", "bookmarked", "public", "userId",
              "sessionId", "isRootObservation"),
    "time": ("completionStartTime", "createdAt", "updatedAt"),
    "io": ("input", "output"),
    "metadata": ("metadata",),
    "model": ("providedModelName", "internalModelId", "modelParameters"),
    "usage": ("usageDetails", "costDetails", "totalCost", "usagePricingTierName"),
    "prompt": ("promptId", "promptName", "promptVersion"),
    "metrics": ("latency", "timeToFirstToken"),
    "trace_context": ("tags", "release", "traceName"),
}


class Invalid(Exception):
    """A request the real server answers 400."""


class Dropped(Invalid):
    """A score the ingestion worker drops silently after the 200 (validateAndInflateScore)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise Invalid(f"invalid date-time {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def encode_cursor(payload: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def decode_cursor(cursor: str) -> dict:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        raise Invalid("invalid cursor") from None


def is_root(obs: dict) -> bool:
    return bool(obs.get("isRootObservation")) or not obs.get("parentObservationId")


class Store:
    def __init__(self):
        self.lock = threading.RLock()
        self.observations: dict[str, dict] = {}
        self.scores: dict[str, dict] = {}
        self.writes: Counter = Counter()
        self.configs: dict[str, dict] = {}
        # The order observations were ingested in: the legacy trace read sorts by it (event_ts).
        self._ingested = 0
        # Current servers allow several configs per name; one older release refused a second
        # config with the same name and data type. Tests switch this on to play that server.
        self.unique_config_names = False

    # -- observations ------------------------------------------------------------------------
    def load(self, observations: list[dict]) -> int:
        with self.lock:
            for obs in observations:
                if not isinstance(obs, dict) or not obs.get("id") or not obs.get("traceId") or not obs.get("startTime"):
                    raise Invalid("each observation needs id, traceId and startTime")
                row = dict(obs)
                row.setdefault("projectId", PROJECT_ID)
                row.setdefault("type", "SPAN")
                row.setdefault("isRootObservation", not row.get("parentObservationId"))
                row["_start"] = parse_time(row["startTime"])
                self._ingested += 1
                row["_ingested"] = self._ingested
                row["updatedAt"] = now_iso()
                row.setdefault("createdAt", row["updatedAt"])
                self.observations[row["id"]] = row
            return len(observations)

    def roots_by_trace(self) -> dict[str, dict]:
        with self.lock:
            roots = {}
            for obs in self.observations.values():
                if is_root(obs):
                    current = roots.get(obs["traceId"])
                    if current is None or obs["_start"] < current["_start"]:
                        roots[obs["traceId"]] = obs
            return roots

    def trace_observations(self, trace_id: str, order: str = "spec") -> list[dict]:
        """"spec": by start time. "server": the legacy read's ORDER BY event_ts DESC, i.e. the
        latest ingested first (getObservationsForTrace, repositories/observations.ts)."""
        with self.lock:
            rows = [o for o in self.observations.values() if o["traceId"] == trace_id]
        if order == "server":
            return sorted(rows, key=lambda o: o["_ingested"], reverse=True)
        return sorted(rows, key=lambda o: (o["_start"], o["id"]))

    # -- scores --------------------------------------------------------------------------------
    def upsert_score(self, body: dict) -> str:
        return self._store_score(self._validated_score(body))

    def accept_score(self, body: dict) -> dict:
        """What POST /scores checks before its 200: the body's shape, not the config."""
        return self._validated_score(body, defer_config=True)

    def settle_score(self, body: dict, item: dict) -> str:
        """The ingestion worker's validateAndInflateScore, then the insert; raises Dropped."""
        if item["configId"]:
            item = self._inflated_from_config(body, item)
        return self._store_score(item)

    def _store_score(self, item: dict) -> str:
        with self.lock:
            existing = self.scores.get(item["id"])
            if existing is not None:
                item["createdAt"] = existing["createdAt"]
            self.scores[item["id"]] = item
            self.writes[item["id"]] += 1
        return item["id"]

    def _validated_score(self, body: dict, *, defer_config: bool = False) -> dict:
        if not isinstance(body, dict):
            raise Invalid("a score must be a JSON object")
        if body.get("source") == "EVAL":
            raise Invalid("source EVAL is reserved for Langfuse evaluators")
        subjects = [k for k in ("traceId", "sessionId", "datasetRunId") if body.get(k)]
        if len(subjects) != 1:  # a score belongs to one trace, one session or one dataset run
            raise Invalid("a score needs exactly one of traceId, sessionId or datasetRunId")
        if body.get("observationId") and not body.get("traceId"):
            raise Invalid("observationId needs the observation's traceId")
        env = body.get("environment") or "default"
        if not _ENV.match(env):
            raise Invalid(f"invalid environment {env!r}")
        data_type, value = body.get("dataType"), body.get("value")
        config_id = body.get("configId")
        if body.get("source") == "ANNOTATION" and not config_id and data_type != "CORRECTION":
            raise Invalid("ANNOTATION scores need a configId")
        if config_id and defer_config:
            if data_type == "CORRECTION":
                raise Invalid("CORRECTION scores cannot reference a config")
        elif config_id:
            data_type = self._checked_against_config(body, config_id)
        if not (config_id and defer_config):
            data_type = data_type or ("CATEGORICAL" if isinstance(value, str) else "NUMERIC")
        if data_type == "NUMERIC" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise Invalid("NUMERIC scores need a number")
        if data_type == "BOOLEAN" and (isinstance(value, bool) or value not in (0, 1)):
            raise Invalid("BOOLEAN scores need the number 0 or 1")
        if data_type in ("CATEGORICAL", "TEXT", "CORRECTION") and not isinstance(value, str):
            raise Invalid(f"{data_type} scores need a string")
        if data_type == "TEXT" and not 1 <= len(value) <= 500:
            raise Invalid("TEXT scores need 1 to 500 characters")
        if data_type is None and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
            raise Invalid("value must be a number or a string")
        stamp = now_iso()
        return {"id": body.get("id") or str(uuid.uuid4()), "projectId": PROJECT_ID, "name": body["name"],
                "value": value, "dataType": data_type, "source": body.get("source") or "API",
                "traceId": body.get("traceId"), "observationId": body.get("observationId"),
                "sessionId": body.get("sessionId"), "datasetRunId": body.get("datasetRunId"),
                "comment": body.get("comment"),
                "metadata": body.get("metadata"), "configId": config_id, "environment": env,
                "timestamp": body.get("timestamp") or stamp, "createdAt": stamp, "updatedAt": stamp}

    def _checked_against_config(self, body: dict, config_id: str) -> str:
        """The server's validateConfigAgainstBody: the config's data type, returned, rules the score."""
        config = self.configs.get(config_id)
        if config is None:
            raise Invalid(f"score config {config_id} not found in this project")
        if body.get("dataType") == "CORRECTION":
            raise Invalid("CORRECTION scores cannot reference a config")
        if body.get("dataType") and body["dataType"] != config["dataType"]:
            raise Invalid(f"Data type mismatch based on config: expected {config['dataType']}, got {body['dataType']}")
        if config["isArchived"]:
            raise Invalid("Config is archived and cannot be used to create new scores")
        # The spec: "config and score name must be equal". (The current server renames the score
        # to the config's name instead; either way a score under another name is a client bug.)
        if config["name"] != body.get("name"):
            raise Invalid(f"Name mismatch based on config: expected {config['name']}, got {body.get('name')}")
        value, data_type = body.get("value"), config["dataType"]
        if data_type == "NUMERIC" and isinstance(value, (int, float)) and not isinstance(value, bool):
            if (config.get("minValue") is not None and value < config["minValue"]) or \
                    (config.get("maxValue") is not None and value > config["maxValue"]):
                raise Invalid(f"value {value} outside the config's range [{config.get('minValue')}, {config.get('maxValue')}]")
        if data_type == "CATEGORICAL" and value not in [c["label"] for c in config.get("categories") or []]:
            raise Invalid(f"value {value!r} is not a category of the config")
        return data_type

    def _inflated_from_config(self, body: dict, item: dict) -> dict:
        """packages/shared/src/server/ingestion/validateAndInflateScore.ts, in its order."""
        with self.lock:
            config = self.configs.get(item["configId"])
            config = dict(config) if config else None
        if config is None:
            raise Dropped("config_not_found",
                          "The configId you provided does not match a valid config in this project")
        declared = body.get("dataType")
        if declared and declared != config["dataType"]:
            raise Dropped("data_type_mismatch",
                          f"Data type mismatch based on config: expected {config['dataType']}, got {declared}")
        if config["isArchived"]:
            raise Dropped("config_archived", "Config is archived and cannot be used to create new scores. "
                                             "Please restore the config first.")
        # The worker overrides the body's name with the config's before checking, so a name
        # mismatch is not dropped: the score is stored under the config's name.
        value, data_type = item["value"], config["dataType"]
        problem = _against_config(value, data_type, config)
        if problem:
            raise Dropped("value_invalid", f"Ingested score body not valid against provided config: {problem}")
        return {**item, "name": config["name"], "dataType": data_type}

    # -- score configs -------------------------------------------------------------------------
    def create_config(self, body: dict) -> dict:
        """PostScoreConfigBody: per data type, only the fields that type has; categories unique."""
        name = body.get("name") or ""
        if not _CONFIG_NAME.match(name):
            raise Invalid("config name must be 1-35 letters, digits, _ space . ( ) -")
        data_type = body.get("dataType")
        if data_type not in ("NUMERIC", "BOOLEAN", "CATEGORICAL", "TEXT"):
            raise Invalid("invalid dataType")
        lo, hi, categories = body.get("minValue"), body.get("maxValue"), body.get("categories")
        if data_type != "NUMERIC" and (lo is not None or hi is not None):
            raise Invalid(f"{data_type} configs take no minValue or maxValue")
        if data_type != "CATEGORICAL" and categories is not None:
            raise Invalid("Custom categories are only allowed for categorical data types")
        if lo is not None and hi is not None and hi <= lo:
            raise Invalid("Maximum value must be greater than Minimum value")
        if data_type == "CATEGORICAL":
            if not categories or not all(isinstance(c, dict) and isinstance(c.get("label"), str) and c["label"]
                                         and isinstance(c.get("value"), (int, float)) for c in categories):
                raise Invalid("CATEGORICAL configs need categories: [{label, value}]")
            if len({c["label"] for c in categories}) < len(categories) or \
                    len({c["value"] for c in categories}) < len(categories):
                raise Invalid("Category labels and values must be unique")
        if data_type == "BOOLEAN":
            categories = [{"label": "True", "value": 1}, {"label": "False", "value": 0}]
        with self.lock:
            if self.unique_config_names and any(
                    c["name"] == name and c["dataType"] == data_type for c in self.configs.values()):
                raise Invalid("Score config with this name and data type already exists for this project")
            stamp = now_iso()
            config = {"id": str(uuid.uuid4()), "name": name, "dataType": data_type, "isArchived": False,
                      "minValue": lo, "maxValue": hi, "categories": categories,
                      "description": body.get("description"), "projectId": PROJECT_ID,
                      "createdAt": stamp, "updatedAt": stamp}
            self.configs[config["id"]] = config
        return config


def _against_config(value, data_type: str, config: dict) -> str | None:
    """ScorePropsAgainstConfig (packages/shared/src/features/scores/interfaces/ingestion/validation.ts)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if data_type == "NUMERIC":
        if not number:
            return "value - expected number"
        if config.get("maxValue") is not None and value > config["maxValue"]:
            return f"Value exceeds maximum value of {config['maxValue']} defined in config"
        if config.get("minValue") is not None and value < config["minValue"]:
            return f"Value is below minimum value of {config['minValue']} defined in config"
    elif data_type == "CATEGORICAL":
        if not isinstance(value, str):
            return "value - expected string"
        if value not in [c["label"] for c in config.get("categories") or []]:
            return f"Value {value} does not map to a valid category. Pass a valid category value."
    elif data_type == "BOOLEAN":
        if not number or value not in (0, 1):
            return "Value must be either 0 or 1"
    elif data_type == "TEXT" and not (isinstance(value, str) and 1 <= len(value) <= 500):
        return "value - expected a string of 1 to 500 characters"
    return None
