"""A counting reverse proxy between tracejudge and Langfuse: the real server counts no
requests, so every request tracejudge makes goes through here and is counted by route and
status; non-2xx answers are kept (their first 300 bytes) as evidence."""
from __future__ import annotations

import collections
import http.client
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "content-length", "host"}
_ID = re.compile(r"^(?=.*\d)[0-9a-zA-Z_-]{16,}$")


def route_of(method: str, target: str) -> str:
    """A request's route with ids replaced, plus what a listing asks for: one label per kind."""
    parts = urlsplit(target)
    path = "/".join("{id}" if _ID.match(seg) else seg for seg in parts.path.split("/"))
    query = parse_qs(parts.query)
    tag = ""
    if path.endswith("/v2/observations"):
        tag = ("sessionId" if "sessionId" in query else "traceId" if "traceId" in query
               else "roots" if "isRootObservation" in query else "filter" if "filter" in query else "other")
    elif path.endswith("/v3/scores"):
        tag = "by id" if "id" in query else "by name" if "name" in query else "other"
    return f"{method} {path}" + (f" [{tag}]" if tag else "")


def request_kind(route: str) -> str:
    """What a request is for, to split the requests per judged trace."""
    if "[roots]" in route or "[filter]" in route:
        return "listing"
    if "/v2/observations" in route or "/traces" in route:
        return "trace/session reads"
    if route.startswith("POST /api/public/scores"):
        return "score writes"
    if "[by id]" in route:
        return "read-back"
    if "annotation-queues" in route or "dataset" in route or "[by name]" in route:
        return "review loop"
    if "score-configs" in route:
        return "score configs"
    return "other"


class CountingProxy:
    def __init__(self, upstream: str):
        parsed = urlsplit(upstream)
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()  # (route, status) -> requests
        self.refused: list[tuple[str, int, str]] = []  # (route, status, body) of every non-2xx answer
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                headers["Host"] = f"{proxy.host}:{proxy.port}"
                # A fresh connection per request: re-sending a POST on a dead keep-alive could write twice.
                conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    status, data, out = resp.status, resp.read(), resp.getheaders()
                except (OSError, http.client.HTTPException) as exc:
                    status, data, out = 502, f"proxy: {exc}".encode(), [("Content-Type", "text/plain")]
                finally:
                    conn.close()
                proxy.record(route_of(self.command, self.path), status, data)
                self.send_response(status)
                for k, v in out:
                    if k.lower() not in _HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def record(self, route: str, status: int, data: bytes) -> None:
        with self.lock:
            self.counts[(route, status)] += 1
            if status >= 300:
                self.refused.append((route, status, data[:300].decode("utf-8", "replace")))

    def total(self) -> int:
        with self.lock:
            return sum(self.counts.values())

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
