"""A small threaded HTTP/1.1 JSON server both emulators build on (stdlib only)."""
from __future__ import annotations

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# How often a server thread checks for stop(): serve_forever's default 0.5 s made stopping the two
# emulators of a test take about a second, the larger part of a short test's time.
STOP_POLL_SECONDS = 0.02


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client that timed out or was killed mid-request is normal in fault tests.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class Page:
    """A reply body that is not JSON (an HTML error page): sent as is, with its content type."""

    def __init__(self, text: str, content_type: str = "text/html; charset=utf-8"):
        self.data, self.content_type = text.encode("utf-8"), content_type


class Reply(Exception):
    """Raise to answer with a status, a JSON body (or a ``Page``) and headers."""

    def __init__(self, status: int, body=None, headers: dict | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A reply is written in two sends (headers, body); with Nagle's algorithm on, the body of a
    # keep-alive reply waits for the client's delayed ACK: ~40 ms on every request, which real
    # servers (Node's no-delay, the providers' front ends) do not add.
    disable_nagle_algorithm = True
    app = None  # set per server class: an object with handle(method, path, query, headers, body)

    def log_message(self, *args):  # quiet
        pass

    def _serve(self, method: str):
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = _INVALID
        try:
            status, payload, headers = self.app.handle(method, parts.path, query, self.headers, body)
        except Reply as reply:
            status, payload, headers = reply.status, reply.body, reply.headers
        content_type = payload.content_type if isinstance(payload, Page) else "application/json"
        data = payload.data if isinstance(payload, Page) else b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PATCH(self):
        self._serve("PATCH")

    def do_DELETE(self):
        self._serve("DELETE")


_INVALID = object()


def is_invalid(body) -> bool:
    return body is _INVALID


class Emulator:
    """Start/stop plumbing shared by the emulators; subclasses implement ``handle``."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> str:
        handler = type("Handler", (JsonHandler,), {"app": self})
        self._server = Server((self.host, self.port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": STOP_POLL_SECONDS},
                                        daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def serve_until_signalled(emulator: Emulator) -> None:
    url = emulator.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"ready {url}", flush=True)
    stop.wait()
    emulator.stop()
    sys.exit(0)
