"""Reading observations: v2 pages walked by cursor, and which read family the server answers.

Shared by the sampler's trace source (samplers/source.py) and the trace reader (traces.py), so
both page, retry and fall back the same way.

A 404 says which server generation answered, not that data is gone (API-NOTES section 11): a
v3 server answers 404 on v2 observations, a v4 server in ``events_only`` mode (the v4 default)
answers 404 on the legacy ``/api/public/traces`` reads, and servers are upgraded while workers
run. So ``ServerGeneration`` never decides for good: after a v2 404 it reads through the legacy
API and re-probes v2 every ``REPROBE_SECONDS``; a legacy 404 re-probes v2 at once (the server
may have moved to events_only), and when v2 is still missing it is a ``TransientError`` (the job
retries), never a permanent "not found".
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Literal, TypedDict, TypeVar

from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError

from worker.errors import TransientError
from worker.json_types import JSONDict
from worker.langfuse_io.client import get_object
from worker.retrying import call_with_retries

T = TypeVar("T")
# How long a v2 404 sends this process to the legacy API before v2 is asked again: short enough
# that an upgrade (v3 -> v4) is noticed within minutes, long enough to cost one request in hundreds.
REPROBE_SECONDS = 300.0


def walk_v2_plain(api: LangfuseAPI, params: Mapping[str, str], *, fields: str, limit: int,
                  on_request: Callable[[], None] = lambda: None) -> Iterator[JSONDict]:
    """Every observation v2 returns for ``params`` (camelCase), page by page (each page retried),
    as the JSON the server sent: through the SDK's HTTP layer but without its models. Building
    and dumping an SDK model costs milliseconds per observation (seconds for the outline of an
    agent trace, a whole window's roots for the sampler), where a few plain fields are read."""
    cursor: str | None = None
    while True:
        on_request()
        query: dict[str, str | int] = {"fields": fields, "limit": limit, **params,
                                       **({"cursor": cursor} if cursor else {})}
        page = call_with_retries(lambda: get_object(api, "api/public/v2/observations", params=query))
        data = page.get("data") or []
        yield from data
        cursor = (page.get("meta") or {}).get("cursor")
        if not cursor or not data:
            return


class OptionsFilter(TypedDict):
    """One condition of v2's JSON ``filter`` parameter: ``column`` is any of ``value``."""

    type: Literal["stringOptions"]
    column: str
    operator: Literal["any of"]
    value: list[str]


def any_of(column: str, values: Iterable[str]) -> OptionsFilter:
    return {"type": "stringOptions", "column": column, "operator": "any of", "value": list(values)}


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status_code == 404


class ServerGeneration:
    """Which observation API this server answers now, re-learnt as the server changes.

    Thread-safe enough for a worker's threads: the only state is one timestamp, replaced whole.
    """

    def __init__(self, *, reprobe_seconds: float = REPROBE_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.reprobe_seconds = reprobe_seconds
        self.clock = clock
        self._v2_missing_until: float | None = None
        self._lock = threading.Lock()

    @property
    def v2_missing(self) -> bool:
        until = self._v2_missing_until
        return until is not None and self.clock() < until

    @property
    def uses_legacy(self) -> bool:
        """True while this process reads through the legacy API (until the next re-probe)."""
        return self.v2_missing

    def call(self, v2: Callable[[], T], legacy: Callable[[], T]) -> T:
        tried_v2 = False
        if not self.v2_missing:
            tried_v2 = True
            try:
                return self._v2_answered(v2())
            except ApiError as exc:
                self._learn(exc)
        try:
            return legacy()
        except ApiError as exc:
            if not is_not_found(exc):
                raise
            if tried_v2:
                raise self._both_missing() from None
        # legacy answered 404 while v2 was believed missing: maybe an upgrade to events_only
        try:
            return self._v2_answered(v2())
        except ApiError as exc:
            self._learn(exc)
        raise self._both_missing()

    def iterate(self, v2: Callable[[], Iterator[T]], legacy: Callable[[], Iterator[T]]) -> Iterator[T]:
        tried_v2 = False
        if not self.v2_missing:
            tried_v2 = True
            try:
                yield from v2()
                self._v2_answered(None)
                return
            except ApiError as exc:
                self._learn(exc)
        try:
            yield from legacy()
            return
        except ApiError as exc:
            if not is_not_found(exc):
                raise
            if tried_v2:
                raise self._both_missing() from None
        try:  # as in call(): re-probe v2 at once
            yield from v2()
            self._v2_answered(None)
            return
        except ApiError as exc:
            self._learn(exc)
        raise self._both_missing()

    def _v2_answered(self, result: T) -> T:
        if self._v2_missing_until is not None:
            with self._lock:
                self._v2_missing_until = None  # healed: the server has v2 (again)
        return result

    def mark_v2_missing(self) -> None:
        """As after a v2 404: read through the legacy API until the next re-probe is due."""
        with self._lock:
            self._v2_missing_until = self.clock() + self.reprobe_seconds

    def _learn(self, exc: ApiError) -> None:
        if not is_not_found(exc):
            raise exc
        self.mark_v2_missing()  # a v3 server, a stray proxy 404, or a server mid-upgrade: ask again later

    @staticmethod
    def _both_missing() -> TransientError:
        return TransientError("Langfuse answered 404 on both v2 observations and the legacy traces API "
                              "(a server mid-upgrade, or a proxy): retrying later")
