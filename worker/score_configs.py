"""A Langfuse score config per rubric scale, so the trace UI shows the range or categories.

Langfuse requires a score's name to equal its config's name, so the config is named after the
rubric and matched on the scale: versions with the same scale share one config; a version
with a new scale needs a config of its own, which Langfuse may refuse while the old one is
active (then start-up says so). Config ids are cached in Redis by rubric sha256.
"""
from __future__ import annotations

import threading

import redis
from langfuse.api import LangfuseAPI
from langfuse.api.commons.types.config_category import ConfigCategory

from worker.langfuse_client import NO_SDK_RETRIES
from worker.retrying import call_with_retries
from worker.rubrics import Rubric

CACHE_KEY = "tracejudge:score-configs"
_LOCK_TTL_MS = 30_000


def _matches(config, rubric: Rubric) -> bool:
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
        self._ids: dict[str, str] = {}
        self._lock = threading.Lock()

    def config_id(self, rubric: Rubric) -> str:
        with self._lock:
            if rubric.sha256 in self._ids:
                return self._ids[rubric.sha256]
        cached = self.client.hget(CACHE_KEY, rubric.sha256)
        config_id = cached.decode() if cached else self._find_or_create(rubric)
        with self._lock:
            self._ids[rubric.sha256] = config_id
        return config_id

    def _find_or_create(self, rubric: Rubric) -> str:
        lock = f"{CACHE_KEY}:lock:{rubric.name}"
        # One creator fleet-wide; the others wait and then find its config.
        while not self.client.set(lock, "1", nx=True, px=_LOCK_TTL_MS):
            threading.Event().wait(0.2)
        try:
            found = self._find(rubric)
            if found is None:
                found = self._create(rubric)
            self.client.hset(CACHE_KEY, rubric.sha256, found)
            return found
        finally:
            self.client.delete(lock)

    def _find(self, rubric: Rubric) -> str | None:
        page = 1
        while True:
            result = call_with_retries(lambda: self.api.score_configs.get(
                page=page, limit=100, request_options=NO_SDK_RETRIES))
            for config in result.data:
                if _matches(config, rubric):
                    return config.id
            if page >= (result.meta.total_pages or 0):
                return None
            page += 1

    def _create(self, rubric: Rubric) -> str:
        scale = rubric.scale
        kwargs = {"name": rubric.name, "data_type": scale.data_type,
                  "description": f"{rubric.description} (tracejudge rubric {rubric.key}: {scale.describe()})"[:1000]}
        if scale.kind == "numeric":
            kwargs.update(min_value=scale.minimum, max_value=scale.maximum)
        elif scale.kind == "categorical":
            kwargs["categories"] = [ConfigCategory(label=label, value=value) for label, value in scale.labels]
        config = call_with_retries(lambda: self.api.score_configs.create(**kwargs, request_options=NO_SDK_RETRIES))
        return config.id
