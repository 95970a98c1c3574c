"""The proxy's HTTP transport: asyncio protocols and llhttp in front of one upstream.

Every client connection is a :class:`ClientConnection`; requests are parsed
with llhttp (Node.js's C parser, through ``httptools``) and go to the model
server over pooled connections (:mod:`.upstream`).  The per-request path is
the C parser plus a handful of Python callbacks, so the proxy costs about
what nginx costs per request rather than what a general-purpose HTTP
framework does (``bench/proxy.py`` measures both in the same run).

Requests stream through in both directions; a body is held in memory only
when it is small (``SMALL_BODY``) or when the extractor wants it and it fits
``max_capture`` (then it is also handed over for extraction).  What this
module guarantees, whatever the client sends:

* framing is strict: llhttp refuses ``Content-Length`` together with
  ``Transfer-Encoding``, several or non-numeric lengths, bad chunk sizes,
  bare LF line ends and malformed heads; the proxy answers 400 and closes
  (counted as ``framing``), as it does for heads over ``MAX_HEAD`` bytes (431)
  and request targets that are not a path (400); upstream gets exactly one
  framing header, for the body it actually sends;
* hop-by-hop headers (``Connection`` and those it names, ``Keep-Alive``,
  ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``) are not
  forwarded either way, as RFC 9110 section 7.6.1 requires;
* deadlines, not per-read timeouts: a request's head must arrive within
  ``header_timeout`` of the connection opening (or of the previous response),
  its body within ``body_timeout`` of its head (else 408).  A connection
  whose head is overdue is answered 408, closed and counted as
  ``header_timeout`` when it is new (nothing sent yet: a socket opened and
  left silent) or has started sending a head; a kept-alive connection that
  stays quiet after a completed exchange is closed without a word and not
  counted, as the exporter's own server does;
* ``Expect: 100-continue`` is answered by the proxy itself (``100 Continue``;
  upstream never sees the field); any other expectation gets 417 and the
  connection closed, the body unread (RFC 9110 section 10.1.1; counted as
  ``expectation``);
* at most ``max_connections`` client connections are open; more are answered
  503 and closed at once (counted as ``connection_limit``), so stalled sockets
  cost one file descriptor each and never a thread;
* an upstream that is unreachable or breaks off before the proxy has sent the
  response head gives the client a 502 (504 on timeout); once the head is out,
  the client connection is closed mid-body (the client sees a truncated
  response, never a wrong one) and the exchange counts as an error.  A
  kept-alive upstream connection that turns out closed before answering is
  retried once on a new one when the request was held whole;
* pipelined requests are answered in order, one exchange at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict

try:
    import uvloop
except ImportError:  # no wheel for this platform (Windows): asyncio's own loop, dearer per request
    uvloop = None  # type: ignore[assignment]

from ...httpfields import expects_continue, shown, unmet_expectation
from .extract import Exchange
from .upstream import UpstreamConnection, UpstreamPool

log = logging.getLogger(__name__)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The proxy thread's loop: uvloop's (libuv) where installed, asyncio's otherwise.

    The proxy sits on the request path of the user's model, so its cost per request is
    what matters: uvloop's C event loop takes about a fifth off the proxy's CPU per
    request and a few milliseconds off the tail (``bench/proxy.py``).  The exporter's own
    server stays on asyncio's loop, where decoding and the pipeline, not the loop, cost.
    """
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


#: Headers that describe one connection, not the message (RFC 9110 section 7.6.1), the
#: framing headers (the proxy writes its own), and ``Expect``, which the proxy answers.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"expect", b"content-length",
})
#: Bodies up to this size are read whole before forwarding (one write instead of a stream).
SMALL_BODY = 64 * 1024
#: Largest request head (request line and header fields) taken; larger ones get 431.
MAX_HEAD = 64 * 1024
#: Bytes of pipelined requests held while an earlier one is answered, before reading pauses.
MAX_QUEUED_BODY = 1024 * 1024
#: How long an idle upstream connection stays in the pool (nginx's upstream default).  A short
#: keep-alive closes the whole pool after a quiet spell, and the burst of reconnects that follows
#: can overflow a small listen backlog upstream (the standard library's is 5: a lost SYN costs 1 s).
UPSTREAM_KEEPALIVE = 60.0
#: Every value of the ``reason`` label of the proxy's own refusals.
REJECT_REASONS = ("framing", "connection_limit", "header_timeout", "body_timeout", "client_body", "expectation")
_EMPTY: CIMultiDict[str] = CIMultiDict()
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 417: b"Expectation Failed",
            431: b"Request Header Fields Too Large", 502: b"Bad Gateway", 504: b"Gateway Timeout"}


@dataclass
class TransportSettings:
    upstream: str
    #: Upstream connect timeout and the longest wait for each read of the upstream's response.
    upstream_timeout: float = 30.0
    #: Kept-alive upstream connections (the pool's size).
    upstream_connections: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 4096
    #: Largest JSON body captured for extraction.
    max_capture: int = 1024 * 1024
    capture_request: bool = False
    capture_response: bool = False


class ProxyTransport:
    """Serves the proxy on its own event loop thread; every exchange goes to ``record``."""

    def __init__(self, sock: socket.socket, settings: TransportSettings, record: Callable[[Exchange], None]):
        self.sock = sock
        self.settings = settings
        self.record = record
        u = urlsplit(settings.upstream)
        self.tls = ssl.create_default_context() if u.scheme == "https" else None
        self.host = u.hostname or "127.0.0.1"
        self.upstream_port = u.port or (443 if self.tls is not None else 80)
        #: Prefixed to every forwarded path (an upstream URL with a path mounts the model server there).
        self.base_path = u.path.rstrip("/").encode("utf-8", "surrogateescape")
        #: Host field for clients that sent none (HTTP/1.0); others keep theirs.
        self.host_field = u.netloc.rpartition("@")[2].encode("idna")
        #: Requests being proxied right now.
        self.in_flight = 0
        #: Requests and connections refused by the proxy itself, by reason.
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        #: Client connections open now.
        self.open_connections = 0
        self.pool: UpstreamPool | None = None
        self.connections: set[ClientConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._server: asyncio.AbstractServer | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modelmon-proxy", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        loop = new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._setup(loop))
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._failure = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            self._teardown()
            loop.run_until_complete(asyncio.sleep(0))  # let the closing transports finish
            loop.close()

    async def _setup(self, loop: asyncio.AbstractEventLoop) -> None:
        s = self.settings
        self.pool = UpstreamPool(loop, self.host, self.upstream_port, self.tls, s.upstream_connections,
                                 s.upstream_timeout, s.upstream_timeout, UPSTREAM_KEEPALIVE)
        self._server = await loop.create_server(self._protocol, sock=self.sock, backlog=1024)

    def _teardown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        if self.pool is not None:
            self.pool.close()

    def _protocol(self) -> asyncio.BaseProtocol:
        if self.open_connections >= self.settings.max_connections:
            self.rejected["connection_limit"] += 1
            return _Refuse()
        return ClientConnection(self)


@dataclass(eq=False, slots=True)
class _Request:
    """One request of a client connection, from its head to its response's end."""

    t0: float
    start: float
    method: bytes = b""
    target: bytes = b""
    http11: bool = True
    keep_alive: bool = True
    raw_headers: list[tuple[bytes, bytes]] | None = None
    headers: CIMultiDict[str] | None = None
    #: Content-Length of the body; None with chunked framing or no body.
    length: int | None = None
    chunked: bool = False
    #: Held whole before sending upstream (else streamed as it comes).
    whole: bool = True
    body: list[bytes] | None = None
    body_bytes: int = 0
    #: Bytes of the body held while the request waits (its share of ``queued_bytes``).
    held: int = 0
    complete: bool = False
    #: Request body kept for extraction (None: not wanted or over ``max_capture``).
    capture: list[bytes] | None = None
    #: The proxy's own answer instead of the upstream's: (reason counted, status, message).
    refusal: tuple[str | None, int, str] | None = None
    continue_pending: bool = False
    upstream: UpstreamConnection | None = None
    retried: bool = False
    # the response
    status: int = 0
    response_headers: CIMultiDict[str] | None = None
    response_head: bytes = b""
    response_whole: bool = False
    response_chunks: list[bytes] | None = None
    response_chunked: bool = False
    response_capture: list[bytes] | None = None
    response_capture_bytes: int = 0
    head_sent: bool = False
    error: str | None = None


class ClientConnection(asyncio.Protocol):
    """One client connection: parses its requests and answers them in order."""

    def __init__(self, proxy: ProxyTransport):
        self.proxy = proxy
        self.settings = proxy.settings
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        #: Parsed requests not yet answered; the first is being answered.
        self.queue: deque[_Request] = deque()
        self.cur: _Request | None = None
        self.head_bytes = 0
        self.queued_bytes = 0
        #: No more requests are read (a refusal, ``Connection: close``, a parse error).
        self.done_reading = False
        self.closed = False
        self.served = False
        self.head_started = False
        self.reading_paused = False
        # One deadline at a time (the head's or the active request body's) behind one timer that is
        # pushed back rather than re-created: setting a deadline per request costs no timer.
        self._timer: asyncio.TimerHandle | None = None
        self._deadline_kind: str | None = None
        self._deadline_at = 0.0
        self._deadline_req: _Request | None = None

    # ------------------------------------------------------------ asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio's interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.proxy.open_connections += 1
        self.proxy.connections.add(self)
        self._arm_head()

    def data_received(self, data: bytes) -> None:
        if self.done_reading or self.closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade and CONNECT are not proxied: the request goes on as a plain one, then the connection closes.
            self.done_reading = True
        except httptools.HttpParserError as exc:
            if not self.done_reading:  # not a refusal raised from a callback
                self._refuse_from_parser(exc)

    def eof_received(self) -> bool:
        if self.cur is not None or (self.queue and not self.queue[-1].complete):
            return False  # a half-sent request: connection_lost counts it
        self.done_reading = True
        return bool(self.queue)  # keep the write side open to answer what was asked

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.proxy.open_connections -= 1
        self.proxy.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline_kind = self._deadline_req = None
        for req in self.queue:
            if not req.complete and req.refusal is None:
                self.proxy.rejected["client_body"] += 1  # the client broke off mid-body
            if req.upstream is not None:
                req.upstream.abort()
                req.upstream = None
                self.proxy.in_flight -= 1
        self.queue.clear()

    def pause_writing(self) -> None:
        req = self.queue[0] if self.queue else None
        if req is not None and req.upstream is not None and req.upstream.transport is not None:
            req.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        req = self.queue[0] if self.queue else None
        if req is not None and req.upstream is not None and req.upstream.transport is not None:
            req.upstream.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # ------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        self.cur = _Request(time.time(), time.perf_counter(), raw_headers=[])
        self.head_bytes = 0
        self.head_started = True

    def on_url(self, url: bytes) -> None:
        assert self.cur is not None
        self.cur.target += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.cur is not None and self.cur.raw_headers is not None
        self.cur.raw_headers.append((name, value))
        self._count_head(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        req = self.cur
        assert req is not None and req.raw_headers is not None
        self._disarm_head()
        self.head_started = False
        self.served = True
        p = self.parser
        req.method = p.get_method()
        req.http11 = p.get_http_version() == "1.1"
        req.keep_alive = p.should_keep_alive()
        req.headers = _decoded(req.raw_headers)
        s = self.settings
        if not req.target.startswith(b"/"):
            self._refuse(req, "framing", 400, "request target must be a path")
            return
        expectations = req.headers.getall("Expect", [])
        if expectations:
            unmet = unmet_expectation(expectations)
            if unmet is not None:
                self._refuse(req, "expectation", 417,
                             f"Expect {shown(unmet)!r} cannot be met: only 100-continue is supported")
                return
            req.continue_pending = expects_continue(expectations) and req.http11
        length = req.headers.get("Content-Length")
        req.length = int(length) if length is not None else None
        req.chunked = "Transfer-Encoding" in req.headers
        has_body = req.chunked or bool(req.length)
        want = s.capture_request and _capturable(req.headers)
        req.whole = not has_body or (req.length is not None and req.length <= (s.max_capture if want else SMALL_BODY))
        req.body = []
        if want and (req.length is None or req.length <= s.max_capture):
            req.capture = req.body if req.whole else []
        if not has_body:
            req.continue_pending = False
        self.queue.append(req)
        if len(self.queue) == 1:
            self._begin(req)

    def on_body(self, chunk: bytes) -> None:
        req = self.cur
        if req is None or req.refusal is not None or req.body is None:
            return
        req.body_bytes += len(chunk)
        if req.capture is not None and req.capture is not req.body:
            if req.body_bytes <= self.settings.max_capture:
                req.capture.append(chunk)
            else:
                req.capture = None
        if not req.whole and req.upstream is not None:
            req.upstream.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if req.chunked else chunk)
            return
        req.body.append(chunk)
        if req is not self._active() or not req.whole:  # held for later: bounded
            req.held += len(chunk)
            self.queued_bytes += len(chunk)
            if self.queued_bytes > MAX_QUEUED_BODY:
                self._pause_reading(True)

    def on_message_complete(self) -> None:
        req, self.cur = self.cur, None
        if req is None or req.refusal is not None:
            return
        req.complete = True
        if req is self._active():
            self._disarm_body()
            if req.upstream is not None:
                if req.chunked:
                    req.upstream.write(b"0\r\n\r\n")
            elif req.whole:
                self._send(req)
        if self.done_reading or not req.keep_alive:  # Connection: close, or an Upgrade: the last one read
            self.done_reading = True
            raise httptools.HttpParserError("no more requests on this connection")  # stops feed_data

    # ------------------------------------------------------------ one exchange
    def _active(self) -> _Request | None:
        return self.queue[0] if self.queue else None

    def _begin(self, req: _Request) -> None:
        """``req`` is now the first in line: answer it or send it upstream."""
        if req.refusal is not None:
            self._write_refusal(req)
            return
        if req.continue_pending:
            req.continue_pending = False
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if req.whole and req.held:  # held while queued; now it is the one being read
            self._release_held(req)
        if not req.complete and (req.chunked or req.length):
            self._arm_body(req)
        if req.complete or not req.whole:
            self._send(req)

    def _send(self, req: _Request) -> None:
        pool = self.proxy.pool
        assert pool is not None
        conn = pool.take_idle()
        if conn is not None:
            self._dispatch(req, conn)
        else:
            asyncio.ensure_future(self._connect_and_send(req, pool))

    async def _connect_and_send(self, req: _Request, pool: UpstreamPool) -> None:
        try:
            conn = await pool.acquire()
        except Exception as exc:  # noqa: BLE001 - every failure maps to an answer
            if self._active() is req and not self.closed:
                self.on_upstream_failure(exc, False, req)
            return
        if self._active() is not req or self.closed:
            pool.release(conn)  # the client left meanwhile
            return
        self._dispatch(req, conn)

    def _dispatch(self, req: _Request, conn: UpstreamConnection) -> None:
        assert req.raw_headers is not None and req.body is not None
        req.upstream = conn
        self.proxy.in_flight += 1
        parts = [b"%s %s%s HTTP/1.1\r\n" % (req.method, self.proxy.base_path, req.target)]
        parts += _forwarded(req.raw_headers)
        if req.headers is None or "Host" not in req.headers:
            parts.append(b"Host: %s\r\n" % self.proxy.host_field)
        if req.whole:
            body = b"".join(req.body)
            if req.length is not None or body:
                parts.append(b"Content-Length: %d\r\n" % len(body))
            parts.append(b"\r\n")
            parts.append(body)
        else:
            parts.append(b"Content-Length: %d\r\n\r\n" % req.length if req.length is not None
                         else b"Transfer-Encoding: chunked\r\n\r\n")
            for chunk in req.body:
                parts.append(b"%x\r\n%s\r\n" % (len(chunk), chunk) if req.chunked else chunk)
            if req.complete and req.chunked:
                parts.append(b"0\r\n\r\n")
            req.body = []
            self._release_held(req)
        conn.start(_Sink(self, req), b"".join(parts), head_only=req.method == b"HEAD")

    # ------------------------------------------------------------ the upstream's answer
    def on_response_head(self, req: _Request, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                         length: int | None) -> None:
        s = self.settings
        req.status = status
        req.response_headers = _decoded(headers)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        head += _forwarded(headers)
        want = s.capture_response and _capturable(req.response_headers)
        no_body = req.method == b"HEAD" or status in (204, 304)
        if no_body:
            if length is not None and status not in (204, 304):
                head.append(b"Content-Length: %d\r\n" % length)
            req.response_whole = True
            req.response_chunks = []
        elif length is not None and length <= (s.max_capture if want else SMALL_BODY):
            head.append(b"Content-Length: %d\r\n" % length)
            req.response_whole = True
            req.response_chunks = []
            if want:
                req.response_capture = req.response_chunks
        else:
            if length is not None:
                head.append(b"Content-Length: %d\r\n" % length)
            elif req.http11:
                head.append(b"Transfer-Encoding: chunked\r\n")
                req.response_chunked = True
            else:
                req.keep_alive = False  # an HTTP/1.0 client reads to the end of the connection
            if want and (length is None or length <= s.max_capture):
                req.response_capture = []
        if not req.keep_alive:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        req.response_head = b"".join(head)
        if not req.response_whole:
            req.head_sent = True
            self._write(req.response_head)

    def on_response_body(self, req: _Request, chunk: bytes) -> None:
        if req.response_whole:
            assert req.response_chunks is not None
            req.response_chunks.append(chunk)
            return
        cap = req.response_capture
        if cap is not None:
            req.response_capture_bytes += len(chunk)
            if req.response_capture_bytes <= self.settings.max_capture:
                cap.append(chunk)
            else:
                req.response_capture = None
        self._write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if req.response_chunked else chunk)

    def on_response_end(self, req: _Request) -> None:
        if req.response_whole:
            assert req.response_chunks is not None
            self._write(req.response_head + b"".join(req.response_chunks))
        elif req.response_chunked:
            self._write(b"0\r\n\r\n")
        self._record(req, req.status, "error" if req.status >= 500 else None)
        self._finish(req)

    def on_upstream_failure(self, exc: BaseException, answered: bool, req: _Request) -> None:
        conn, req.upstream = req.upstream, None
        if conn is not None:
            self.proxy.in_flight -= 1
        if (conn is not None and conn.reused and not answered and not req.retried and req.whole and req.complete
                and isinstance(exc, ConnectionError)):
            # A kept-alive connection the model server had closed: once more on a fresh one.
            req.retried = True
            pool = self.proxy.pool
            assert pool is not None
            asyncio.ensure_future(self._connect_and_send(req, pool))
            return
        timeout = isinstance(exc, TimeoutError)
        log.debug("upstream failed: %r", exc)
        if req.head_sent:  # the client has part of the answer: break the connection, never send a wrong one
            self._record(req, req.status, "timeout" if timeout else "upstream")
            self.queue.clear()
            if self.transport is not None:
                self.transport.abort()
            return
        code = 504 if timeout else 502
        message = "upstream timed out" if timeout else f"upstream unavailable: {exc.__class__.__name__}"
        req.response_headers = None
        self._record(req, code, "timeout" if timeout else "upstream")
        if not req.complete:  # the rest of the body will not be read
            req.keep_alive = False
        self._write(_json_answer(code, message, close=not req.keep_alive))
        self._finish(req)

    def _release_held(self, req: _Request) -> None:
        self.queued_bytes -= req.held
        req.held = 0
        if self.queued_bytes <= MAX_QUEUED_BODY:
            self._pause_reading(False)

    def on_upstream_paused(self, paused: bool) -> None:
        self._pause_reading(paused)

    def _record(self, req: _Request, status: int, error: str | None) -> None:
        body = None if req.capture is None or not req.complete else b"".join(req.capture)
        captured = None if req.response_capture is None else b"".join(req.response_capture)
        path = req.target.decode("utf-8", "surrogateescape")
        self.proxy.record(Exchange(req.t0, time.perf_counter() - req.start, req.method.decode("latin-1"), path,
                                   status, error, req.headers if req.headers is not None else _EMPTY,
                                   req.response_headers if req.response_headers is not None else _EMPTY,
                                   body, captured))

    def _finish(self, req: _Request) -> None:
        """The answer to ``req`` is out: the next request, or an idle connection under the head deadline."""
        if req.upstream is not None:
            req.upstream = None
            self.proxy.in_flight -= 1
        if self.queue and self.queue[0] is req:
            self.queue.popleft()
        self._disarm_body()
        if not req.complete:  # answered before its body ended (a 413, a 502): the rest is not read
            req.keep_alive = False
        if not req.keep_alive or (self.done_reading and not self.queue and self.cur is None):
            self.queue.clear()
            self.close()
            return
        if self.queue:
            self._begin(self.queue[0])
        else:  # the head deadline runs again, for a head already begun too
            self._arm_head()

    # ------------------------------------------------------------ the proxy's own answers
    def _refuse(self, req: _Request, reason: str | None, status: int, message: str) -> None:
        """Answer ``req`` with ``status`` once it is first in line, then close; read nothing more."""
        req.refusal = (reason, status, message)
        req.complete = True
        self.done_reading = True
        self.cur = None
        self.queue.append(req)
        if len(self.queue) == 1:
            self._write_refusal(req)
        raise httptools.HttpParserError("refused")  # stops feed_data: data_received leaves it be

    def _refuse_from_parser(self, exc: BaseException) -> None:
        message = str(exc) or "malformed request"
        req = self.cur or _Request(time.time(), time.perf_counter())
        req.refusal = ("framing", 400, f"malformed request: {message}")
        self.done_reading = True
        self.cur = None
        if req not in self.queue:
            self.queue.append(req)
        if self.queue[0] is req:
            self._write_refusal(req)

    def _count_head(self, n: int) -> None:
        self.head_bytes += n
        if self.head_bytes > MAX_HEAD and self.cur is not None:
            self._refuse(self.cur, "framing", 431, f"request head larger than {MAX_HEAD} bytes")

    def _write_refusal(self, req: _Request) -> None:
        assert req.refusal is not None
        reason, status, message = req.refusal
        if reason is not None:
            self.proxy.rejected[reason] += 1
        self._write(_json_answer(status, message, close=True))
        self.queue.clear()
        self.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _pause_reading(self, pause: bool) -> None:
        if self.transport is None or self.closed or pause == self.reading_paused:
            return
        self.reading_paused = pause
        if pause:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # ------------------------------------------------------------ deadlines
    def _loop(self) -> asyncio.AbstractEventLoop:
        pool = self.proxy.pool
        assert pool is not None
        return pool.loop

    def _set_deadline(self, kind: str, seconds: float, req: _Request | None = None) -> None:
        loop = self._loop()
        self._deadline_kind, self._deadline_req = kind, req
        self._deadline_at = at = loop.time() + seconds
        timer = self._timer
        if timer is not None and timer.when() > at:  # fires too late for this deadline
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = loop.call_at(at, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        kind, req = self._deadline_kind, self._deadline_req
        if kind is None or self.closed:
            return
        loop = self._loop()
        if loop.time() < self._deadline_at:  # pushed back since: wait for the new one
            self._timer = loop.call_at(self._deadline_at, self._on_deadline)
            return
        self._deadline_kind = self._deadline_req = None
        if kind == "head":
            self._head_overdue()
        elif req is not None:
            self._body_overdue(req)

    def _arm_head(self) -> None:
        self._set_deadline("head", self.settings.header_timeout)

    def _disarm_head(self) -> None:
        if self._deadline_kind == "head":
            self._deadline_kind = None

    def _head_overdue(self) -> None:
        if self.queue or self.closed:
            return
        if self.head_started or not self.served:
            self.proxy.rejected["header_timeout"] += 1
            self._write(_json_answer(408, "request head not received in time", close=True))
        self.close()

    def _arm_body(self, req: _Request) -> None:
        if self._deadline_req is not req and not req.complete and req is self._active():
            self._set_deadline("body", self.settings.body_timeout, req)

    def _disarm_body(self) -> None:
        if self._deadline_kind == "body":
            self._deadline_kind = self._deadline_req = None

    def _body_overdue(self, req: _Request) -> None:
        if req.complete or self.closed or self._active() is not req:
            return
        self.proxy.rejected["body_timeout"] += 1
        if req.upstream is not None:
            req.upstream.abort()
            req.upstream = None
            self.proxy.in_flight -= 1
        req.complete = True  # not counted again as a broken-off body
        if not req.head_sent:
            self._write(_json_answer(408, "request body not received in time", close=True))
        self.queue.clear()
        self.close()


class _Sink:
    """Routes one upstream exchange's callbacks to its client connection and request."""

    __slots__ = ("client", "req")

    def __init__(self, client: ClientConnection, req: _Request):
        self.client, self.req = client, req

    def on_response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                         length: int | None) -> None:
        self.client.on_response_head(self.req, status, reason, headers, length)

    def on_response_body(self, chunk: bytes) -> None:
        self.client.on_response_body(self.req, chunk)

    def on_response_end(self) -> None:
        self.client.on_response_end(self.req)

    def on_upstream_failure(self, exc: BaseException, answered: bool) -> None:
        self.client.on_upstream_failure(exc, answered, self.req)

    def on_upstream_paused(self, paused: bool) -> None:
        self.client.on_upstream_paused(paused)


def _forwarded(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Header lines of ``headers`` without the hop-by-hop ones (order and duplicates kept)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    drop = HOP_BY_HOP | named if named else HOP_BY_HOP
    return [b"%s: %s\r\n" % (name, value) for name, value in headers if name.lower() not in drop]


def _decoded(headers: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """Header fields as text for the extractor: UTF-8, an undecodable byte kept as a lone surrogate
    (as aiohttp does), so a value that is not UTF-8 fails the label-safety check instead of becoming
    a different, valid string."""
    try:  # the usual case, every field UTF-8: the strict codec and a list are the fast path (every request)
        return CIMultiDict([(k.decode(), v.decode()) for k, v in headers])
    except UnicodeDecodeError:
        return CIMultiDict([(k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                            for k, v in headers])


def _json_answer(status: int, message: str, close: bool) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (status, _REASONS.get(status, b"Error"), len(body), b"Connection: close\r\n" if close else b"", body))


def _capturable(headers: Any) -> bool:
    """A JSON body, or one of Triton's binary-extension bodies (a JSON head and raw tensors)."""
    return "json" in headers.get("Content-Type", "").lower() or "Inference-Header-Content-Length" in headers


_BUSY_BODY = b'{"error": "too many open connections"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
         b"Retry-After: 1\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class _Refuse(asyncio.Protocol):
    """A connection over the cap: answered 503 and closed without reading it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        out = cast(asyncio.WriteTransport, transport)
        out.write(_BUSY)
        out.close()
