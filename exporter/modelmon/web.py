"""The exporter's HTTP server on aiohttp: /metrics, landing page, health, and
the routes sources add (the ingestion API).

Two parts, as prometheus_client separates ``make_asgi_app`` from the server
that carries it:

- :class:`ExporterApp` is the application: a plain async callable from an
  aiohttp request to a response (routing, authentication, default headers,
  errors).  Tests call it with ``aiohttp.test_utils.make_mocked_request``,
  no socket needed.  ``/metrics`` negotiates OpenMetrics and gzip exactly as
  prometheus_client does (its ``choose_encoder``; ``gzip;q=0`` means no
  gzip) and runs the registry's collection in a thread, so a drift
  recomputation never stalls other connections.
- :class:`ExporterServer` carries it: one event loop in a background thread,
  a listening socket bound at construction (IPv4 or IPv6, a large backlog),
  TLS through an ``ssl.SSLContext``, and the limits of :class:`ServerLimits`.

What the server does with hostile clients (each refusal is counted in
``modelmon_http_requests_refused_total{reason}``):

- framing: aiohttp's parser (llhttp) already answers 400 to a Content-Length
  with Transfer-Encoding, several Content-Lengths, a Content-Length that is
  not a non-negative integer, a bad chunk size and malformed header lines,
  and closes the connection; the app adds a 400 for Transfer-Encoding on
  HTTP/1.0 and for any transfer coding other than ``chunked``
  (``bad_request``);
- a request head not complete ``header_timeout_seconds`` after the connection
  opened, or after its first byte on a kept-alive connection (slowloris, or
  sockets opened and left silent): 408 and close (``header_timeout``); a
  kept-alive connection that sends nothing is closed after
  ``idle_timeout_seconds``;
- a body not complete ``body_timeout_seconds`` after its head, however
  it trickles: 408 (``body_timeout``); larger than the route allows: 413
  (``body_too_large``);
- more than ``max_connections`` open: 503 and close (``too_many_connections``).

Handlers read bodies with :func:`read_body`, which applies the whole-body
deadline; work that holds a slot (the ingestion API's) starts only once the
body is in, so stalled uploads never take slots.
"""

from __future__ import annotations

import asyncio
import gzip
import html
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from . import __version__

log = logging.getLogger(__name__)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
#: Pre-routing hook (basic auth): None to go on, or the response to send instead.
Authenticate = Callable[[web.BaseRequest], Awaitable[web.StreamResponse | None]]

#: Every value of the ``reason`` label of ``modelmon_http_requests_refused_total``.
REFUSAL_REASONS = ("bad_request", "header_timeout", "body_timeout", "body_too_large", "too_many_connections")
_SERVER = f"modelmon/{__version__}"


@dataclass(frozen=True)
class ServerLimits:
    """Deadlines and caps of the HTTP server."""

    #: A request head must be complete this long after the connection opened (on a kept-alive one: after its first byte).
    header_timeout_seconds: float = 10.0
    #: A request body must be complete this long after its head.
    body_timeout_seconds: float = 30.0
    #: Keep-alive connections that send nothing are closed after this.
    idle_timeout_seconds: float = 75.0
    #: Connections open at once; more get a 503 and are closed.
    max_connections: int = 2048
    #: Listen backlog (the kernel caps it at net.core.somaxconn).
    backlog: int = 2048
    #: Largest body any route may read (a route passes its own, smaller limit to :func:`read_body`).
    max_body_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class Route:
    """One route a source adds: ``GET`` routes also answer ``HEAD``.  The
    landing page lists every route with its one-line ``description``, while
    ``listed()`` (when given) is true."""

    method: str
    path: str
    handler: Handler
    description: str = ""
    listed: Callable[[], bool] | None = None


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json", headers=headers)


def json_error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return json_response(status, {"error": message, **extra}, headers)


class BodyTimeout(web.HTTPRequestTimeout):
    """The body did not arrive within the whole-body deadline."""


class BodyTooLarge(web.HTTPRequestEntityTooLarge):
    """The body is larger than the route allows."""

    def __init__(self, limit: int):
        super().__init__(max_size=limit, actual_size=limit + 1, text=json.dumps(
            {"error": f"body larger than {limit} bytes"}), content_type="application/json")


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The whole request body, within the server's whole-body deadline and ``limit`` bytes.

    Raises :class:`BodyTimeout` (408) or :class:`BodyTooLarge` (413); the server counts both.
    """
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(limit)
    deadline = getattr(request.protocol, "body_deadline", None)  # set by ExporterServer per request
    remaining = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
    chunks: list[bytes] = []
    size = 0

    async def _read() -> None:
        nonlocal size
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)

    try:
        await asyncio.wait_for(_read(), remaining)
    except TimeoutError:
        raise BodyTimeout(text=json.dumps({"error": "request body not received in time"}),
                          content_type="application/json", headers={"Connection": "close"}) from None
    return b"".join(chunks)


def gzip_wanted(accept_encoding: str | None) -> bool:
    """True when ``Accept-Encoding`` accepts gzip (``gzip;q=0`` refuses it)."""
    for part in (accept_encoding or "").split(","):
        name, _, params = part.partition(";")
        if name.strip().lower() != "gzip":
            continue
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def redact_query(path_qs: str) -> str:
    """A request target for logs: the query string (which may hold a token) is never written."""
    path, sep, _ = path_qs.partition("?")
    return path + ("?<redacted>" if sep else "")


class ServerStats:
    """Refusals and open connections: ``modelmon_http_requests_refused_total{reason}``,
    ``modelmon_http_connections_open``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.refused = dict.fromkeys(REFUSAL_REASONS, 0)
        self.open_connections = 0

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.refused[reason] += 1

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily("modelmon_http_requests_refused",
                                  "HTTP requests and connections refused before reaching a route, by reason.",
                                  labels=["reason"])
        with self._lock:
            for reason, n in self.refused.items():
                fam.add_metric([reason], n)
            open_now = self.open_connections
        yield fam
        yield GaugeMetricFamily("modelmon_http_connections_open", "HTTP connections open on the exporter's listener.",
                                value=open_now)


class ExporterApp:
    """Routes, authentication and default headers: ``await app(request) -> response``."""

    def __init__(self, registry: CollectorRegistry, ready: Callable[[], bool] = lambda: True,
                 routes: list[Route] | None = None, authenticate: Authenticate | None = None,
                 default_headers: dict[str, str] | None = None, stats: ServerStats | None = None,
                 metrics_executor: ThreadPoolExecutor | None = None):
        self.registry = registry
        self.ready = ready
        self.authenticate = authenticate
        self.default_headers = dict(default_headers or {})
        self.stats = stats or ServerStats()
        self._metrics_executor = metrics_executor or ThreadPoolExecutor(2, thread_name_prefix="modelmon-scrape")
        self.routes: dict[tuple[str, str], Handler] = {}
        #: What the landing page lists, in the order added.
        self.endpoints: list[Route] = []
        self.add_route(Route("GET", "/metrics", self.metrics,
                             "Prometheus metrics of the models and the exporter (text or OpenMetrics, gzip)"))
        self.add_route(Route("GET", "/", self.landing, listed=lambda: False))
        self.add_route(Route("GET", "/-/healthy", self.healthy, "liveness: 200 while the exporter answers HTTP"))
        self.add_route(Route("GET", "/-/ready", self.ready_page,
                             "readiness: 200 once the exporter serves its models, 503 before and while stopping"))
        for route in routes or []:
            self.add_route(route)

    def add_route(self, route: Route) -> None:
        self.routes[(route.method, route.path)] = route.handler
        if route.method == "GET":
            self.routes[("HEAD", route.path)] = route.handler
        self.endpoints = [r for r in self.endpoints if (r.method, r.path) != (route.method, route.path)]
        self.endpoints.append(route)

    # ------------------------------------------------------------ dispatch
    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        resp = await self._dispatch(request)
        for k, v in self.default_headers.items():
            resp.headers.setdefault(k, v)
        resp.headers["Server"] = _SERVER
        if log.isEnabledFor(logging.DEBUG):
            log.debug("http request", extra={"method": request.method, "path": redact_query(request.path_qs),
                                             "status": resp.status, "remote": request.remote,
                                             "duration_seconds": round(time.perf_counter() - started, 6)})
        return resp

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        te = request.headers.get("Transfer-Encoding")
        if te is not None and (request.version < (1, 1) or te.strip().lower() != "chunked"):
            self.stats.refuse("bad_request")
            return json_error(400, "Transfer-Encoding must be exactly 'chunked' on HTTP/1.1",
                              headers={"Connection": "close"})
        if self.authenticate is not None:
            denied = await self.authenticate(request)
            if denied is not None:
                return denied
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            if any(p == request.path for (_, p) in self.routes):
                return json_error(405, f"method {request.method} not allowed on {request.path}")
            return json_error(404, f"no such path {request.path}")
        try:
            return await handler(request)
        except BodyTimeout as exc:
            self.stats.refuse("body_timeout")
            return exc
        except BodyTooLarge as exc:
            self.stats.refuse("body_too_large")
            exc.headers["Connection"] = "close"
            return exc
        except web.HTTPException as exc:
            return exc
        except Exception:  # never let one request take the server down
            log.exception("request handler failed", extra={"path": request.path})
            return json_error(500, "internal error")

    # ------------------------------------------------------------ built-in routes
    def _exposition(self, accept: str | None, accept_encoding: str | None) -> tuple[bytes, str, bool]:
        encoder, content_type = choose_encoder(accept or "")
        body = encoder(self.registry)
        zipped = gzip_wanted(accept_encoding)
        return (gzip.compress(body, compresslevel=6) if zipped else body), content_type, zipped

    async def metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        body, content_type, zipped = await loop.run_in_executor(
            self._metrics_executor, self._exposition, request.headers.get("Accept"),
            request.headers.get("Accept-Encoding"))
        resp = web.Response(body=body, headers={"Content-Type": content_type})
        if zipped:
            resp.headers["Content-Encoding"] = "gzip"
        return resp

    async def landing(self, request: web.BaseRequest) -> web.StreamResponse:
        """Every endpoint, one line each: GET ones as links, the others (POST) as their path."""
        items = []
        for r in self.endpoints:
            if r.listed is not None and not r.listed():
                continue
            path = html.escape(r.path)
            target = f'<a href="{path}">{path}</a>' if r.method == "GET" else f"<code>{path}</code>"
            about = f": {html.escape(r.description)}" if r.description else ""
            items.append(f"<li><code>{html.escape(r.method)}</code> {target}{about}</li>")
        page = ("<!doctype html><html><head><title>modelmon exporter</title></head><body>"
                f"<h1>modelmon exporter</h1><p>Version {__version__}</p><h2>Endpoints</h2>"
                f"<ul>{''.join(items)}</ul></body></html>")
        return web.Response(text=page, content_type="text/html")

    async def healthy(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text="Healthy.\n")

    async def ready_page(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text="Ready.\n") if self.ready() else web.Response(status=503, text="Not ready.\n")

    def close(self) -> None:
        self._metrics_executor.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------- connections

_REQUEST_TIMEOUT_BODY = b'{"error": "request head not received in time"}'
_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(_REQUEST_TIMEOUT_BODY), _REQUEST_TIMEOUT_BODY))
_BUSY_BODY = b'{"error": "too many connections; retry later"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class _Connection(RequestHandler):
    """aiohttp's per-connection protocol, plus the connection cap, the request-head
    deadline and counted parse errors."""

    def __init__(self, server: ExporterServer, manager: web.Server, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self.exporter_server = server
        #: When bytes of a request head started arriving (None while idle or inside a request).
        self.pending_since: float | None = None
        self.in_request = False
        self.refused = False
        #: When the body of the current request must be complete (loop time).
        self.body_deadline: float | None = None
        #: The error being answered is the client's (4xx): logged at debug only.
        self.client_error = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        srv = self.exporter_server
        srv.connection_opened(self)
        super().connection_made(transport)
        self.pending_since = srv.loop_time()  # a new connection owes its first request head from now
        if srv.stats.open_connections > srv.limits.max_connections:
            self.refused = True
            srv.stats.refuse("too_many_connections")
            self.transport.write(_BUSY)  # type: ignore[union-attr]
            self.force_close()
            self.transport.close()  # type: ignore[union-attr]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.exporter_server.connection_closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if not self.in_request and self.pending_since is None:
            self.pending_since = self.exporter_server.loop_time()
        super().data_received(data)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        self.client_error = 400 <= status < 500
        if status == 413:
            self.exporter_server.stats.refuse("body_too_large")
        elif self.client_error:
            self.exporter_server.stats.refuse("bad_request")
        return super().handle_error(request, status, exc, message)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if self.client_error:  # a malformed request is counted, not logged as an error with a traceback
            kw.pop("exc_info", None)
            log.debug(*args, **kw)
        else:
            log.error(*args, **kw)

    def expire_head(self, now: float, timeout: float) -> bool:
        """Close the connection when a request head has been arriving for longer than ``timeout``."""
        if self.in_request or self.pending_since is None or now - self.pending_since <= timeout:
            return False
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(_REQUEST_TIMEOUT)
            self.force_close()
            transport.close()
        return True


def _listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ExporterServer:
    """Carries an :class:`ExporterApp` on one socket, in an event loop of its own thread.

    The socket is bound here (errors surface at construction); :meth:`start`
    serves, :meth:`stop` closes connections and joins the thread.  ``app`` may be
    replaced while serving (a config reload): each request goes to the app set
    when it arrives.
    """

    def __init__(self, app: ExporterApp, host: str, port: int, limits: ServerLimits = ServerLimits(),
                 tls: Callable[[], ssl.SSLContext] | None = None,
                 on_handshake_failure: Callable[[], None] | None = None):
        self.app = app
        self.limits = limits
        self.stats = app.stats
        #: The TLS context for each new connection (called per connection, so a reloaded certificate applies).
        self.tls = tls
        self.on_handshake_failure = on_handshake_failure
        self.sock = _listen_socket(host, port, limits.backlog)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    def loop_time(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    # ------------------------------------------------------------ bookkeeping (loop thread)
    def connection_opened(self, conn: _Connection) -> None:
        self._connections.add(conn)
        self.stats.open_connections = len(self._connections)

    def connection_closed(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        self.stats.open_connections = len(self._connections)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        conn = request.protocol
        if isinstance(conn, _Connection):
            conn.in_request = True
            conn.pending_since = None
            conn.body_deadline = self.loop_time() + self.limits.body_timeout_seconds
        try:
            return await self.app(request)
        finally:
            if isinstance(conn, _Connection):
                conn.in_request = False

    def _request_factory(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        assert self._loop is not None
        return web.BaseRequest(message, payload, protocol, writer, task, self._loop,
                               client_max_size=self.limits.max_body_bytes)

    async def _sweep(self) -> None:
        """Every so often: close connections whose request head is overdue."""
        loop = asyncio.get_running_loop()
        timeout = self.limits.header_timeout_seconds
        while True:
            await asyncio.sleep(min(0.5, timeout / 4))
            now = loop.time()
            for conn in list(self._connections):
                if conn.expire_head(now, timeout):
                    self.stats.refuse("header_timeout")

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        manager = web.Server(self._handle, request_factory=self._request_factory, loop=loop)
        # auto_decompress off: the ingest schema undoes Content-Encoding itself, within its limit.
        kwargs = {"loop": loop, "keepalive_timeout": self.limits.idle_timeout_seconds, "access_log": None,
                  "auto_decompress": False, "lingering_time": 1.0}

        def connection() -> _Connection:
            return _Connection(self, manager, **kwargs)

        factory: Callable[[], asyncio.Protocol] = connection
        if self.tls is not None:
            tls, on_failure, timeout = self.tls, self.on_handshake_failure, self.limits.header_timeout_seconds

            def tls_connection() -> asyncio.Protocol:
                return _TLSAcceptor(loop, tls, connection, timeout, on_failure)

            factory = tls_connection
        server = await loop.create_server(factory, sock=self.sock, backlog=self.limits.backlog)
        sweep = asyncio.create_task(self._sweep())
        self._started.set()
        try:
            await self._stopping.wait()
        finally:
            sweep.cancel()
            server.close()
            for conn in list(self._connections):
                conn.force_close()
            await manager.shutdown(2.0)
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except TimeoutError:
                pass

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._started.set()
            log.exception("HTTP server failed")
        finally:
            loop.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modelmon-http", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and self._thread is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stopping.set)
            self._thread.join(10)
        else:
            self.sock.close()
        self.app.close()


class _TLSAcceptor(asyncio.Protocol):
    """Runs the server side of the TLS handshake (within the head deadline), then hands
    the encrypted transport to a new connection; failed handshakes are counted."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tls: Callable[[], ssl.SSLContext],
                 connection: Callable[[], _Connection], timeout: float, on_failure: Callable[[], None] | None):
        self.loop, self.tls, self.connection, self.timeout, self.on_failure = loop, tls, connection, timeout, on_failure
        self.task: asyncio.Task[None] | None = None
        self.early: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.early.append(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the ClientHello stays in the socket until start_tls reads it
        self.task = self.loop.create_task(self._handshake(transport))

    async def _handshake(self, transport: asyncio.Transport) -> None:
        try:
            tls_transport = await self.loop.start_tls(transport, self, self.tls(), server_side=True,
                                                      ssl_handshake_timeout=self.timeout)
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            log.debug("TLS handshake failed", extra={"error": str(exc) or type(exc).__name__})
            if self.on_failure is not None:
                self.on_failure()
            transport.abort()
            return
        if tls_transport is None:  # closed during the handshake
            return
        conn = self.connection()
        tls_transport.set_protocol(conn)
        conn.connection_made(tls_transport)
        # Bytes decrypted between the end of the handshake and the switch came here: hand them on.
        for data in self.early:
            conn.data_received(data)
        self.early.clear()

    def connection_lost(self, exc: BaseException | None) -> None:
        pass
