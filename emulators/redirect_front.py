"""A redirecting front for the Langfuse emulator: what an ingress that sends http:// to https://
looks like to a client. Every request is answered 301 (or 308) with a Location.

Where the Location points (`location`):
- None (default): at the emulator itself (`upstream` + path). That is another origin (another
  port), so httpx drops the Authorization header on the way (it keeps it only for the same
  origin or an http:80 -> https:443 upgrade) and the emulator answers 401.
- "same-origin": at this front, under /_upgraded/..., which it forwards to the emulator. httpx
  keeps Authorization, as it does for the real http -> https upgrade on default ports, so the
  redirected request reaches the emulator authenticated: a followed 301 turns
  POST /api/public/scores into GET /api/public/scores, a valid list endpoint that answers 200.
- any other string, e.g. "https://127.0.0.1:8443": used as the base of the Location.

    front = RedirectFront(emulator.base_url, location="same-origin"); front.start()
    env["LANGFUSE_BASE_URL"] = front.base_url
"""
from __future__ import annotations

import http.client
import json
import threading
from urllib.parse import urlencode, urlsplit

from emulators.http_base import Emulator, Reply, is_invalid

UPGRADED = "/_upgraded"
_FORWARDED_HEADERS = ("Authorization", "Content-Type", "Accept", "User-Agent")
_HOP_HEADERS = {"content-length", "content-type", "connection", "transfer-encoding", "keep-alive", "date", "server"}


class RedirectFront(Emulator):
    def __init__(self, upstream: str, *, status: int = 301, location: str | None = None, host: str = "127.0.0.1",
                 port: int = 0):
        super().__init__(host, port)
        self.upstream = upstream.rstrip("/")
        self.location = location
        self.set_status(status)
        self._lock = threading.Lock()
        self._seen: list[dict] = []

    def set_status(self, status: int) -> None:
        if status not in (301, 302, 303, 307, 308):
            raise ValueError("a redirect status is one of 301, 302, 303, 307, 308")
        self.status = status

    def requests(self) -> list[dict]:
        """What reached the front: {method, path, forwarded, status}."""
        with self._lock:
            return list(self._seen)

    def handle(self, method, path, query, headers, body):
        suffix = f"?{urlencode(query, doseq=True)}" if query else ""
        if self.location == "same-origin" and path.startswith(UPGRADED + "/"):
            status, payload, reply_headers = self._forward(method, path[len(UPGRADED):] + suffix, headers, body)
            self._record(method, path, True, status)
            return status, payload, reply_headers
        self._record(method, path, False, self.status)
        raise Reply(self.status, None, {"Location": self._location_base() + path + suffix})

    def _location_base(self) -> str:
        if self.location is None:
            return self.upstream
        if self.location == "same-origin":
            return self.base_url + UPGRADED
        return self.location.rstrip("/")

    def _forward(self, method, path_and_query, headers, body):
        target = urlsplit(self.upstream)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        data = None if body is None or is_invalid(body) else json.dumps(body).encode()
        sent = {k: headers[k] for k in _FORWARDED_HEADERS if headers.get(k)}
        try:
            connection.request(method, path_and_query, body=data, headers=sent)
            response = connection.getresponse()
            raw = response.read()
            kept = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_HEADERS}
            return response.status, (json.loads(raw) if raw else None), kept
        finally:
            connection.close()

    def _record(self, method, path, forwarded, status):
        with self._lock:
            self._seen.append({"method": method, "path": path, "forwarded": forwarded, "status": status})
