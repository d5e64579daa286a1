"""A Langfuse score config per rubric scale, so the trace UI shows the range or categories.

What Langfuse does (openapi.yml ScoreConfigs and CreateScoreRequest; the server's
``validateAndInflateScore``): a score that names a ``configId`` is checked against that config
(data type, numeric range, categorical labels; archived configs refuse new scores), and its name
must equal the config's name (the current server silently renames the score to the config's
name instead). Several configs may share one name: the API does not make names unique.

So the config is named after the rubric, because the score name is the rubric name and stays
fixed. Versions whose scale is unchanged share one config; a version with a new scale (which
needs a new version: see rubric lint) gets a config of its own under the same name, and the
scores of each version carry their version's configId. Configs are immutable here: we never
edit or archive one, so scores already written keep a config that describes them. A server
that refuses a second config with the same name is a ConfigError naming the way out.

Config ids are cached in Redis per rubric sha256, for a day, then re-checked (someone may
have archived the config in the UI).

Since names are not unique, "once" is ours to keep, and Redis is only a cache of it: before
creating, the project's configs are listed and an active one with the rubric's name and scale
(``matches``) is reused, so a cold Redis finds what Langfuse has. A create whose answer is lost
(stored, then a 500 or a timeout) is looked for again before the POST is retried. When several
configs match (two processes raced past a lost lock), everyone takes the oldest.
"""
from __future__ import annotations

import datetime as dt
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import NotRequired, TypedDict

import redis
from langfuse.api import LangfuseAPI
from langfuse.api.commons.types.config_category import ConfigCategory
from langfuse.api.commons.types.score_config import ScoreConfig
from langfuse.api.commons.types.score_config_data_type import ScoreConfigDataType
from langfuse.api.core.api_error import ApiError
from langfuse.api.score_configs.client import ScoreConfigsClient
from langfuse.api.score_configs.types.score_configs import ScoreConfigs as ScoreConfigPage

from worker.errors import ConfigError
from worker.langfuse_io.client import NO_SDK_RETRIES
from worker.redis_client import as_text
from worker.retrying import call_once, call_with_retries
from worker.rubrics.rubric import Rubric

CACHE_PREFIX = "tracejudge:score-config:"
CACHE_TTL_S = 24 * 3600
_LOCK_TTL_MS = 30_000
_NAME = re.compile(r"^[A-Za-z0-9_ .()\-]{1,35}$")  # CreateScoreConfigRequest.name


def config_name_problem(name: str) -> str | None:
    """Why Langfuse would refuse ``name`` as a score config name, or None."""
    if _NAME.match(name):
        return None
    return (f"rubric name {name!r} cannot name a Langfuse score config: at most 35 letters, digits, "
            "underscores, spaces, periods, parentheses and hyphens")


class ConfigRequest(TypedDict):
    """The SDK's ``score_configs.create`` arguments (``config_request``)."""

    name: str
    data_type: ScoreConfigDataType
    description: str
    min_value: NotRequired[float | None]  # numeric scales
    max_value: NotRequired[float | None]
    categories: NotRequired[list[ConfigCategory]]  # categorical scales


def config_request(rubric: Rubric) -> ConfigRequest:
    """The SDK's ``score_configs.create`` arguments for a rubric version's scale."""
    scale = rubric.scale
    direction = "higher is better" if scale.higher_is_better else "lower is better"
    description = (f"{rubric.description.strip()} — tracejudge rubric {rubric.name}, scored by an LLM judge: "
                   f"{scale.describe()}, {direction}.")
    kwargs: ConfigRequest = {"name": rubric.name, "data_type": ScoreConfigDataType(scale.data_type),
                             "description": description[:1000]}
    if scale.kind == "numeric":
        kwargs["min_value"], kwargs["max_value"] = scale.minimum, scale.maximum
    elif scale.kind == "categorical":
        kwargs["categories"] = [ConfigCategory(label=label, value=value) for label, value in scale.labels]
    # BOOLEAN: Langfuse generates the True/False categories itself and refuses given ones.
    return kwargs


def matches(config: ScoreConfig, rubric: Rubric) -> bool:
    """An active config that describes exactly this rubric's scale, under the rubric's name."""
    scale = rubric.scale
    if config.is_archived or config.name != rubric.name:
        return False
    data_type = getattr(config.data_type, "value", config.data_type)
    if data_type != scale.data_type:
        return False
    if scale.kind == "numeric":
        return config.min_value == scale.minimum and config.max_value == scale.maximum
    if scale.kind == "categorical":
        have = sorted((c.label, float(c.value)) for c in config.categories or [])
        return have == sorted(scale.labels)
    return True


class ScoreConfigs:
    def __init__(self, api: LangfuseAPI, client: redis.Redis):
        self.api = api
        self.client = client
        self._ids: dict[str, tuple[str, float]] = {}  # sha256 -> (config id, when it was looked up)
        self._lock = threading.Lock()

    @property
    def _sdk(self) -> ScoreConfigsClient:
        client: ScoreConfigsClient = self.api.score_configs  # the SDK leaves its sub-client properties untyped
        return client

    def ensure(self, rubrics: Iterable[Rubric]) -> dict[str, str]:
        """Find or create the config of every active version at start-up: rubric key → config id."""
        return {rubric.key: self.config_id(rubric) for rubric in rubrics}

    def config_id(self, rubric: Rubric) -> str:
        with self._lock:
            known = self._ids.get(rubric.sha256)
            if known is not None and time.monotonic() - known[1] < CACHE_TTL_S:
                return known[0]  # like the Redis entry, re-checked after CACHE_TTL_S
        cached = self.client.get(CACHE_PREFIX + rubric.sha256)
        config_id = as_text(cached) if cached else self._find_or_create(rubric)
        with self._lock:
            self._ids[rubric.sha256] = (config_id, time.monotonic())
        return config_id

    def forget(self, rubric: Rubric) -> None:
        """Drop the cached id (e.g. after Langfuse refused a score because its config was archived)."""
        with self._lock:
            self._ids.pop(rubric.sha256, None)
        self.client.delete(CACHE_PREFIX + rubric.sha256)

    def _find_or_create(self, rubric: Rubric) -> str:
        problem = config_name_problem(rubric.name)
        if problem:
            raise ConfigError(f"{rubric.key}: {problem}")
        lock = f"{CACHE_PREFIX}lock:{rubric.name}"
        token = uuid.uuid4().hex
        # One creator fleet-wide; the others wait and then find its config.
        while not self.client.set(lock, token, nx=True, px=_LOCK_TTL_MS):
            threading.Event().wait(0.2)
        try:
            cached = self.client.get(CACHE_PREFIX + rubric.sha256)  # the holder we waited for found it
            if cached:
                return as_text(cached)
            found = self._find(rubric)
            if found is None:
                created = self._create(rubric)
                # Two creators that raced (a lock lost with a Redis restart) made two: both take the oldest.
                found = self._find(rubric) or created
            self.client.set(CACHE_PREFIX + rubric.sha256, found, ex=CACHE_TTL_S)
            return found
        finally:
            self._release(lock, token)

    def _release(self, lock: str, token: str) -> None:
        """Delete the lock only if it is still ours: a slow creation may have outlived it."""
        self.client.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
                         "return 0", 1, lock, token)

    def _find(self, rubric: Rubric,
              call: Callable[[Callable[[], ScoreConfigPage]], ScoreConfigPage] = call_with_retries) -> str | None:
        """The oldest active config with the rubric's name and scale, or None (page after page)."""
        found: list[ScoreConfig] = []
        page = 1
        while True:
            result = call(lambda: self._sdk.get(page=page, limit=100, request_options=NO_SDK_RETRIES))
            found += [config for config in result.data if matches(config, rubric)]
            if page >= (result.meta.total_pages or 0) or not result.data:
                break
            page += 1
        if not found:
            return None
        oldest = min(found, key=lambda c: (_timestamp(c.created_at), c.id))
        return oldest.id

    def _create(self, rubric: Rubric) -> str:
        kwargs = config_request(rubric)
        sent: list[bool] = []  # one entry per POST made

        def attempt() -> str:
            # After a POST that failed (a 500, a timeout: Langfuse may have stored the config and
            # lost the answer), look again before posting again: names are not unique there.
            if sent:
                found = self._find(rubric, call=call_once)
                if found is not None:
                    return found
            sent.append(True)
            return self._sdk.create(**kwargs, request_options=NO_SDK_RETRIES).id

        try:
            return call_with_retries(attempt)
        except ApiError as exc:
            if exc.status_code not in (400, 409, 422):
                raise
            raise ConfigError(
                f"{rubric.key}: Langfuse refused a score config named {rubric.name!r} for the scale "
                f"{rubric.scale.describe()} (HTTP {exc.status_code}: {str(exc.body)[:200]}). Older servers "
                "allow one config per name and data type: upgrade Langfuse, or give the changed scale "
                "a new rubric name, or archive the old config once no version with the old scale runs."
            ) from None


def _timestamp(when: dt.datetime | None) -> float:
    """A sortable time (a missing one sorts last), naive read as UTC."""
    if when is None:
        return float("inf")
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()
