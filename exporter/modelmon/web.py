"""The exporter's HTTP server: /metrics, landing page, health, and routes that
other parts (the ingestion API) register.

Built on the standard library's threading HTTP server, like
prometheus_client's own ``start_http_server``; ``/metrics`` negotiates the
OpenMetrics format and gzip exactly as prometheus_client does (it calls the
client's own ``choose_encoder``).
"""

from __future__ import annotations

import gzip
import html
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from . import __version__

log = logging.getLogger(__name__)


class Response:
    """What a route handler returns."""

    def __init__(self, status: int = 200, body: bytes | str | Any = b"", content_type: str = "text/plain; charset=utf-8",
                 headers: dict[str, str] | None = None):
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            content_type = "application/json"
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.content_type = content_type
        self.headers = headers or {}


def json_error(status: int, message: str, **extra: Any) -> Response:
    return Response(status, {"error": message, **extra})


class Request:
    def __init__(self, handler: BaseHTTPRequestHandler, path: str, query: str):
        self.handler = handler
        self.method = handler.command
        self.path = path
        self.query = query
        self.headers = handler.headers

    def read_body(self, limit: int) -> bytes | None:
        """The request body, or None when it exceeds ``limit`` bytes."""
        length = self.headers.get("Content-Length")
        if length is None:
            return self.handler.rfile.read(0) if self.headers.get("Transfer-Encoding") is None else self._read_chunked(limit)
        try:
            n = int(length)
        except ValueError:
            return b""
        if n > limit:
            return None
        return self.handler.rfile.read(n)

    def _read_chunked(self, limit: int) -> bytes | None:
        out = bytearray()
        rfile = self.handler.rfile
        while True:
            size = int(rfile.readline().strip().split(b";")[0] or b"0", 16)
            if size == 0:
                rfile.readline()
                return bytes(out)
            out += rfile.read(size)
            rfile.readline()
            if len(out) > limit:
                return None


Handler = Callable[[Request], Response]

_BUSY_BODY = b'{"error": "too many connections; retry later"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class ExporterServer:
    """HTTP server for one exporter process."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, ready: Callable[[], bool] = lambda: True,
                 max_connections: int = 256):
        self.registry = registry
        self.ready = ready
        self.routes: dict[tuple[str, str], Handler] = {}
        self.links: list[tuple[str, str]] = [("/metrics", "Metrics")]
        self.add_route("GET", "/metrics", self._metrics)
        self.add_route("GET", "/", self._landing)
        self.add_route("GET", "/-/healthy", lambda r: Response(200, "Healthy.\n"))
        self.add_route("GET", "/-/ready", self._ready)
        #: Hooks set by modelmon.webauth: TLS per connection, auth before routing, headers on every response.
        self.wrap_connection: Callable[[Any], Any] | None = None
        self.authenticate: Callable[[Request], Response | None] | None = None
        self.default_headers: dict[str, str] = {}
        #: Connections served at once (a thread each).  Beyond it a connection gets a 503 and is
        #: closed, so a flood of clients cannot grow threads and memory without bound.
        self._connection_slots = threading.BoundedSemaphore(max_connections)
        #: Called for each connection refused that way (the ingestion API counts it as overloaded).
        self.on_shed: Callable[[], None] | None = None
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = f"modelmon/{__version__}"
            #: Headers and body are two writes: with Nagle on, keep-alive clients
            #: (the ingestion API's) wait ~40 ms for a delayed ACK on every response.
            disable_nagle_algorithm = True
            #: Idle keep-alive connections (and stalled uploads) give their thread back after this.
            timeout = 120

            def _dispatch(self) -> None:
                parts = urlsplit(self.path)
                route = server.routes.get((self.command, parts.path))
                denied = server.authenticate(Request(self, parts.path, parts.query)) if server.authenticate else None
                if denied is not None:
                    resp = denied
                elif route is None:
                    allowed = [m for (m, p) in server.routes if p == parts.path]
                    resp = json_error(405, f"method {self.command} not allowed on {parts.path}") if allowed else json_error(404, f"no such path {parts.path}")
                else:
                    try:
                        resp = route(Request(self, parts.path, parts.query))
                    except Exception:  # never let one request kill the server
                        log.exception("request handler failed", extra={"path": parts.path})
                        resp = json_error(500, "internal error")
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                self.send_header("Content-Length", str(len(resp.body)))
                for k, v in {**server.default_headers, **resp.headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(resp.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch

            def log_message(self, fmt: str, *args: Any) -> None:  # quiet; errors are logged by us
                log.debug("http " + fmt % args)

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def process_request(self, request: Any, client_address: Any) -> None:
                if not server._connection_slots.acquire(blocking=False):
                    if server.on_shed is not None:
                        server.on_shed()
                    if server.wrap_connection is None:  # under TLS a plain-text answer would be noise
                        try:
                            request.sendall(_BUSY)
                        except OSError:
                            pass
                    self.shutdown_request(request)
                    return
                try:
                    super().process_request(request, client_address)
                except BaseException:
                    server._connection_slots.release()
                    raise

            def process_request_thread(self, request: Any, client_address: Any) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    server._connection_slots.release()

            def finish_request(self, request: Any, client_address: Any) -> None:
                if server.wrap_connection is None:
                    return super().finish_request(request, client_address)
                conn = server.wrap_connection(request)  # TLS handshake, in this connection's thread
                if conn is not None:
                    try:
                        super().finish_request(conn, client_address)
                    finally:
                        conn.close()

        self.httpd = _Server((host, port), _Handler)
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler
        if method == "GET":
            self.routes[("HEAD", path)] = handler

    def _metrics(self, req: Request) -> Response:
        encoder, content_type = choose_encoder(req.headers.get("Accept"))
        body = encoder(self.registry)
        headers = {}
        if "gzip" in (req.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return Response(200, body, content_type, headers)

    def _ready(self, req: Request) -> Response:
        return Response(200, "Ready.\n") if self.ready() else Response(503, "Not ready.\n")

    def _landing(self, req: Request) -> Response:
        links = "".join(f'<li><a href="{html.escape(h)}">{html.escape(t)}</a></li>' for h, t in self.links)
        page = (
            "<!doctype html><html><head><title>modelmon exporter</title></head><body>"
            f"<h1>modelmon exporter</h1><p>Version {__version__}</p><ul>{links}</ul></body></html>"
        )
        return Response(200, page, "text/html; charset=utf-8")

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="modelmon-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
