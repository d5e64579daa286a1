"""Reading observations: v2 pages walked by cursor, and the fallback to the legacy API.

Shared by the sampler's trace source (samplers/source.py) and the trace reader (traces.py), so
both page, retry and fall back the same way. A server without v2 observations answers 404 on
it; from then on this process uses the legacy ``/api/public/traces`` endpoints.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError

from worker.langfuse_io.client import NO_SDK_RETRIES
from worker.retrying import call_with_retries

T = TypeVar("T")


def walk_v2(api: LangfuseAPI, *, fields: str, limit: int, on_request: Callable[[], None] = lambda: None,
            **filters: Any) -> Iterator[Any]:
    """Every observation v2 returns for ``filters``, page by page (each page retried)."""
    cursor = None
    while True:
        on_request()
        page = call_with_retries(lambda: api.observations.get_many(
            fields=fields, limit=limit, cursor=cursor, request_options=NO_SDK_RETRIES, **filters))
        yield from page.data
        cursor = page.meta.cursor
        if not cursor or not page.data:
            return


class V2OrLegacy:
    """Which observation API this server has, learnt from the first 404 of v2."""

    def __init__(self) -> None:
        self.v2_missing = False

    def call(self, v2: Callable[[], T], legacy: Callable[[], T]) -> T:
        if not self.v2_missing:
            try:
                return v2()
            except ApiError as exc:
                self._learn(exc)
        return legacy()

    def iterate(self, v2: Callable[[], Iterator[T]], legacy: Callable[[], Iterator[T]]) -> Iterator[T]:
        if not self.v2_missing:
            try:
                yield from v2()
                return
            except ApiError as exc:
                self._learn(exc)
        yield from legacy()

    def _learn(self, exc: ApiError) -> None:
        if exc.status_code != 404:
            raise exc
        self.v2_missing = True  # an older self-hosted server
