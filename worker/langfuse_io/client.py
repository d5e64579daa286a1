"""The official langfuse SDK's REST client, built once from settings.

Langfuse SDK 5 dropped the legacy trace endpoints and sends score batches as arrays; for
older servers we go through the same SDK client's HTTP layer (its auth, base URL and
timeouts), never a hand-rolled HTTP client.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import httpx
from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError
from langfuse.api.core.request_options import RequestOptions

from worker.errors import ConfigError
from worker.json_types import JSONDict, JSONValue
from worker.langfuse_io import text
from worker.rate_limits import LANGFUSE_KEY, Limit, RateLimitedTransport, RateLimiter, RedisBackend
from worker.redis_client import connect
from worker.settings import Settings

# Our retries are tenacity's and dramatiq's; the SDK's own would multiply them.
NO_SDK_RETRIES: RequestOptions = {"max_retries": 0}
# A request's query string: our parameters are text and numbers (camelCase names, as the API has them).
QueryParams: TypeAlias = Mapping[str, str | int]


def build_langfuse_api(settings: Settings, *, rate_limiter: RateLimiter | None = None,
                       limited: bool = True) -> LangfuseAPI:
    """Every request of the client (the SDK's retries too) waits for the fleet-wide Langfuse
    limit (``TRACEJUDGE_LANGFUSE_RPM``, adapted on 429s) shared through Redis. ``limited=False``
    is for one-off author tools that may run without Redis."""
    transport: httpx.BaseTransport = httpx.HTTPTransport()
    if limited:
        if rate_limiter is None:
            rate_limiter = RateLimiter(RedisBackend(connect(settings.redis_url)))
        transport = RateLimitedTransport(transport, rate_limiter, LANGFUSE_KEY,
                                         Limit(settings.langfuse_requests_per_minute))
    return LangfuseAPI(
        base_url=settings.langfuse_base_url,
        username=settings.langfuse_public_key,
        password=settings.langfuse_secret_key,
        x_langfuse_public_key=settings.langfuse_public_key,
        x_langfuse_sdk_name="tracejudge",
        timeout=settings.langfuse_timeout_seconds,
        httpx_client=httpx.Client(timeout=settings.langfuse_timeout_seconds, follow_redirects=False,
                                  transport=transport, event_hooks={"response": [refuse_redirects]}),
    )


def refuse_redirects(response: httpx.Response) -> None:
    """A redirect is a configuration error, never followed: httpx re-sends a redirected POST as
    a GET, and ``GET /api/public/scores`` answers 200 with a list, so a followed redirect writes
    nothing and looks like success (and the Basic-auth secret already crossed the first hop)."""
    if response.is_redirect:
        target = response.headers.get("location", "?")
        raise ConfigError(f"Langfuse at {response.request.url.scheme}://{response.request.url.host} answered "
                          f"HTTP {response.status_code} redirecting to {target}: set LANGFUSE_BASE_URL to the "
                          "address it redirects to (https, no proxy hop)")


def raw_request(api: LangfuseAPI, method: str, path: str, *, params: QueryParams | None = None,
                json: JSONValue = None) -> JSONValue:
    """A request with the SDK client's own httpx client, base URL, auth headers and timeout, as
    plain JSON: the SDK's request wrapper re-encodes every body and query value through its
    ``jsonable_encoder`` (a walk of the whole score batch), which the worker's bodies, already
    plain JSON, do not need. Non-2xx raises the SDK's ApiError."""
    wrapper = api._client_wrapper
    response = wrapper.httpx_client.httpx_client.request(
        method, f"{wrapper.get_base_url().rstrip('/')}/{path.lstrip('/')}", params=params, json=json,
        headers=wrapper.get_headers(), timeout=wrapper.get_timeout())
    try:  # the one decoding of a reply: lone surrogates, NUL and bad bytes made U+FFFD (text.py)
        body: JSONValue = text.loads(response.content)
    except ValueError:
        body = response.text
    if not 200 <= response.status_code < 300:
        raise ApiError(status_code=response.status_code, headers=dict(response.headers), body=body)
    return body


def get_object(api: LangfuseAPI, path: str, *, params: QueryParams | None = None) -> JSONDict:
    """``GET path`` for a read the API answers with a JSON object (a page, a trace), as that
    object. Any other reply (a list, or the text of a page that is not the API's) is a TypeError,
    as reading a field of it always was."""
    body = raw_request(api, "GET", path, params=params)
    if not isinstance(body, dict):
        raise TypeError(f"GET {path} answered {type(body).__name__}, not a JSON object: "
                        "is LANGFUSE_BASE_URL the Langfuse API itself?")
    return body
