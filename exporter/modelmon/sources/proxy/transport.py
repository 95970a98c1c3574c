"""The proxy's HTTP transport: an aiohttp listener in front of one upstream.

Requests stream through in both directions; a body is held in memory only
when it is small (``SMALL_BODY``) or when the extractor wants it and it fits
``max_capture`` (then it is also handed over for extraction).  What this
module guarantees, whatever the client sends:

* framing is strict: aiohttp's parser refuses ``Content-Length`` together with
  ``Transfer-Encoding``, several or non-numeric lengths and bad chunk sizes
  with a 400 (counted as ``framing``); upstream gets exactly one framing
  header, chosen by the client library for the body it actually sends;
* hop-by-hop headers (``Connection`` and those it names, ``Keep-Alive``,
  ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``) are not
  forwarded either way, as RFC 9110 section 7.6.1 requires;
* deadlines, not per-read timeouts: a request's headers must arrive within
  ``header_timeout`` of the connection opening (or of the previous response),
  its body within ``body_timeout`` of its arrival (else 408).  A connection
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
  response, never a wrong one) and the exchange counts as an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict
from yarl import URL

from ...httpfields import expects_continue, shown, unmet_expectation
from .extract import Exchange

log = logging.getLogger(__name__)

#: Headers that describe one connection, not the message (RFC 9110 section 7.6.1), the
#: framing headers (the client library writes its own), and ``Expect``, which the proxy answers.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect", "content-length",
})
#: Bodies up to this size are read whole before forwarding (one write instead of a stream).
SMALL_BODY = 64 * 1024
#: How long an idle upstream connection stays in the pool (nginx's upstream default).  aiohttp's own
#: 15 s closes the whole pool after a quiet spell, and the burst of reconnects that follows can
#: overflow a small listen backlog upstream (the standard library's is 5: a lost SYN costs 1 s).
UPSTREAM_KEEPALIVE = 60.0
#: Headers the client library would otherwise add to forwarded requests.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
#: Every value of the ``reason`` label of ``modelmon_proxy_rejected_requests_total``.
REJECT_REASONS = ("framing", "connection_limit", "header_timeout", "body_timeout", "client_body", "expectation")
_OURS = web.RequestKey("modelmon.proxied", bool)
_EMPTY: CIMultiDict[str] = CIMultiDict()


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
        u = URL(settings.upstream)
        self._base = str(u.with_path(u.path.rstrip("/"), encoded=True)).rstrip("/")
        #: Requests being proxied right now.
        self.in_flight = 0
        #: Requests and connections refused by the proxy itself, by reason.
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        #: Client connections open now.
        self.open_connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._session: aiohttp.ClientSession | None = None
        self._server: asyncio.AbstractServer | None = None
        self._web: web.Server | None = None
        #: What every client connection's protocol (:class:`_ProxyConnection`) is built with.
        self._connection_args: dict[str, Any] = {}

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
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._setup())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._failure = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._teardown())
            loop.close()

    async def _setup(self) -> None:
        s = self.settings
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=s.upstream_connections, limit_per_host=s.upstream_connections,
                                           ttl_dns_cache=60, enable_cleanup_closed=False,
                                           keepalive_timeout=UPSTREAM_KEEPALIVE),
            # connect: waiting for a pooled connection plus connecting; sock_read: each read of a response
            timeout=aiohttp.ClientTimeout(total=None, connect=s.upstream_timeout, sock_connect=s.upstream_timeout,
                                          sock_read=s.upstream_timeout),
            auto_decompress=False, skip_auto_headers=_NO_AUTO_HEADERS, cookie_jar=aiohttp.DummyCookieJar(),
        )
        loop = asyncio.get_running_loop()
        self._web = _CountingServer(self._handle, self, handler_cancellation=True, loop=loop)
        self._connection_args = dict(
            loop=loop,
            # The head deadline is _ProxyConnection's (it counts what it closes); aiohttp's own idle
            # timer, which would close the same connections silently, only backs it up.
            keepalive_timeout=2 * s.header_timeout,
            logger=_QuietLogger(log), access_log_class=_access_logger_for(self), access_log=log,
            lingering_time=0,  # a refused request's unread body is not waited for: close at once
            auto_decompress=False,  # a gzip request body goes upstream as it came, with its Content-Encoding
        )
        self._server = await asyncio.get_running_loop().create_server(self._protocol, sock=self.sock, backlog=1024)

    async def _teardown(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._web is not None:
            await self._web.shutdown(1.0)
        if self._session is not None:
            await self._session.close()

    def _protocol(self) -> asyncio.BaseProtocol:
        assert self._web is not None
        if self.open_connections >= self.settings.max_connections:
            self.rejected["connection_limit"] += 1
            return _Refuse()
        return _ProxyConnection(self._web, self, **self._connection_args)

    # ------------------------------------------------------------ one request
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        request[_OURS] = True
        conn = request.protocol
        if isinstance(conn, _ProxyConnection):
            conn.request_started()
        self.in_flight += 1
        try:
            return await self._proxy(request, time.time(), time.perf_counter())
        finally:
            self.in_flight -= 1
            if isinstance(conn, _ProxyConnection):
                conn.request_finished()

    async def _proxy(self, request: web.BaseRequest, t0: float, start: float) -> web.StreamResponse:
        s = self.settings
        headers = request.headers
        out = _forward_headers(headers)
        expectations = headers.getall("Expect", [])
        unmet = unmet_expectation(expectations)
        if unmet is not None:
            return self._refuse(request, "expectation", 417,
                                f"Expect {shown(unmet)!r} cannot be met: only 100-continue is supported")
        if expects_continue(expectations) and request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body: bytes | AsyncIterator[bytes] | None = None
        captured: bytes | None = None
        cap: list[bytes] | None = None
        state = _BodyState()
        if request.body_exists:
            want = s.capture_request and _capturable(headers)
            length = request.content_length
            if length is not None and length <= (s.max_capture if want else SMALL_BODY):
                try:
                    content = request.content
                    if content.is_eof():  # already here whole (the common small request): no timer
                        body = await content.read()
                    else:
                        async with asyncio.timeout(s.body_timeout):
                            body = await content.read()
                except TimeoutError:
                    return self._refuse(request, "body_timeout", 408, "request body not received in time")
                except Exception:  # noqa: BLE001 - the client broke off or sent a bad body
                    return self._refuse(request, "client_body", 400, "invalid request body")
                captured = body if want else None
            else:
                cap = [] if want and (length is None or length <= s.max_capture) else None
                body = self._stream(request, state, cap)
                if length is not None:  # sent on as it came: the one framing header upstream
                    out["Content-Length"] = str(length)
        url = URL(self._base + request.raw_path, encoded=True)
        assert self._session is not None
        try:
            resp = await self._session.request(request.method, url, headers=out, data=body, allow_redirects=False)
        except Exception as exc:  # noqa: BLE001 - every failure maps to an answer
            if state.failed:
                return self._refuse(request, *state.failed)
            return self._upstream_failed(request, t0, start, exc, captured)
        if cap is not None and state.captured_bytes <= s.max_capture:
            captured = b"".join(cap)
        try:
            return await self._respond(request, resp, t0, start, captured)
        finally:
            resp.release()

    async def _respond(self, request: web.BaseRequest, resp: aiohttp.ClientResponse, t0: float, start: float,
                       req_captured: bytes | None) -> web.StreamResponse:
        s = self.settings
        status = resp.status
        rh = _response_headers(resp.headers)
        length = resp.content_length
        want = s.capture_response and _capturable(resp.headers)
        error = "error" if status >= 500 else None
        captured: bytes | None = None
        out: web.StreamResponse
        if request.method == "HEAD" or status in (204, 304) or status < 200:
            out = web.StreamResponse(status=status, reason=resp.reason, headers=rh)
            if length is not None and status not in (204, 304) and status >= 200:
                out.headers["Content-Length"] = str(length)
        elif length is not None and length <= (s.max_capture if want else SMALL_BODY):
            try:
                data = await resp.read()
            except Exception as exc:  # noqa: BLE001 - nothing sent yet: the client gets a 502
                return self._upstream_failed(request, t0, start, exc, req_captured, status)
            out = web.Response(body=data, status=status, reason=resp.reason, headers=rh)
            captured = data if want else None
        else:
            out = web.StreamResponse(status=status, reason=resp.reason, headers=rh)
            if length is not None:
                out.content_length = length
            cap: list[bytes] | None = [] if want and (length is None or length <= s.max_capture) else None
            size = 0
            try:
                await out.prepare(request)
            except ConnectionError:  # the client left before the head went out
                resp.close()
                cap = None
            else:
                while True:
                    try:
                        chunk = await resp.content.readany()
                    except Exception as exc:  # noqa: BLE001 - head already sent: break the client connection
                        error = "timeout" if isinstance(exc, TimeoutError) else "upstream"
                        log.debug("upstream broke off mid-response: %r", exc)
                        resp.close()
                        request.protocol.force_close()
                        cap = None
                        break
                    if not chunk:
                        break
                    if cap is not None:
                        size += len(chunk)
                        if size <= s.max_capture:
                            cap.append(chunk)
                        else:
                            cap = None
                    try:
                        await out.write(chunk)
                    except ConnectionError:  # the client left: stop reading the upstream
                        resp.close()
                        cap = None
                        break
            if cap is not None:
                captured = b"".join(cap)
        self.record(Exchange(t0, time.perf_counter() - start, request.method, request.raw_path, status, error,
                             request.headers, resp.headers, req_captured, captured))
        return out

    async def _stream(self, request: web.BaseRequest, state: _BodyState,
                      cap: list[bytes] | None) -> AsyncIterator[bytes]:
        """The client's body as it arrives, under the whole-body deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.body_timeout
        content = request.content
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await content.readany()
            except TimeoutError:
                state.failed = ("body_timeout", 408, "request body not received in time")
                raise
            except Exception:
                state.failed = ("client_body", 400, "invalid request body")
                raise
            if not chunk:
                return
            if cap is not None:
                state.captured_bytes += len(chunk)
                if state.captured_bytes <= self.settings.max_capture:
                    cap.append(chunk)
            yield chunk

    # ------------------------------------------------------------ answers of the proxy's own
    def _refuse(self, request: web.BaseRequest, reason: str, status: int, message: str) -> web.StreamResponse:
        self.rejected[reason] += 1
        resp = _json_response(status, message)
        resp.force_close()
        return resp

    def _upstream_failed(self, request: web.BaseRequest, t0: float, start: float, exc: BaseException,
                         req_captured: bytes | None, status: int | None = None) -> web.StreamResponse:
        if isinstance(exc, TimeoutError):
            code, error, message = 504, "timeout", "upstream timed out"
        else:
            code, error, message = 502, "upstream", f"upstream unavailable: {exc.__class__.__name__}"
        log.debug("upstream failed: %r", exc)
        self.record(Exchange(t0, time.perf_counter() - start, request.method, request.raw_path, code, error,
                             request.headers, _EMPTY, req_captured, None))
        return _json_response(code, message)


@dataclass
class _BodyState:
    """What went wrong while streaming the client's body (the client library only sees an error)."""

    failed: tuple[str, int, str] | None = None
    captured_bytes: int = 0


def _json_response(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=json.dumps({"error": message}).encode(), content_type="application/json")


def _connection_tokens(value: str | None) -> frozenset[str]:
    return frozenset(t.strip().lower() for t in value.split(",")) if value else frozenset()


def _forward_headers(headers: Any) -> CIMultiDict[str]:
    """A copy of ``headers`` without the hop-by-hop ones (order and duplicates kept)."""
    out: CIMultiDict[str] = CIMultiDict(headers)  # copied in C; then the few deletions
    connection = out.get("Connection")
    for name in HOP_BY_HOP:
        if name in out:
            del out[name]
    if connection:
        for name in _connection_tokens(connection):
            if name in out:
                del out[name]
    return out


def _response_headers(headers: Any) -> CIMultiDict[str]:
    return _forward_headers(headers)


def _capturable(headers: Any) -> bool:
    """A JSON body, or one of Triton's binary-extension bodies (a JSON head and raw tensors)."""
    return "json" in headers.get("Content-Type", "").lower() or "Inference-Header-Content-Length" in headers


class _CountingServer(web.Server):
    """aiohttp's low-level server, keeping the transport's count of open connections."""

    def __init__(self, handler: Any, transport: ProxyTransport, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self.transport = transport

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        self.transport.open_connections += 1
        super().connection_made(handler, transport)

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        self.transport.open_connections -= 1
        super().connection_lost(handler, exc)


class _ProxyConnection(RequestHandler):
    """aiohttp's per-connection protocol plus the request-head deadline.

    aiohttp's keep-alive timer alone would close an overdue connection
    silently and cannot tell a stalled head from an idle kept-alive
    connection; this one answers 408 and counts ``header_timeout`` for a new
    connection or one that has started sending a head, and closes a quiet
    kept-alive connection without either (the exporter's server does the
    same).  The deadline runs from the connection opening, then from the end
    of each exchange."""

    def __init__(self, manager: web.Server, proxy: ProxyTransport, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self.proxy = proxy
        self.in_request = False
        #: An exchange has started on this connection (so a quiet spell is idle keep-alive).
        self.served = False
        #: Bytes of a request head arrived since the last exchange.
        self.head_started = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and not self.in_request:
            self.head_started = True
        super().data_received(data)

    def request_started(self) -> None:
        self.in_request = self.served = True
        self.head_started = False
        self._disarm()

    def request_finished(self) -> None:
        self.in_request = False
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.proxy.settings.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        transport = self.transport
        if self.in_request or transport is None or transport.is_closing():
            return
        if self.head_started or not self.served:
            self.proxy.rejected["header_timeout"] += 1
            transport.write(_HEAD_TIMEOUT)
        self.force_close()
        transport.close()


_HEAD_TIMEOUT_BODY = b'{"error": "request head not received in time"}'
_HEAD_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (len(_HEAD_TIMEOUT_BODY), _HEAD_TIMEOUT_BODY))
_BUSY_BODY = b'{"error": "too many open connections"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
         b"Retry-After: 1\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class _Refuse(asyncio.Protocol):
    """A connection over the cap: answered 503 and closed without reading it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()


class _QuietLogger(logging.LoggerAdapter):
    """aiohttp logs every refused request with a traceback; the proxy counts them instead."""

    def exception(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("exc_info", None)
        self.debug(msg, *args, **kwargs)


def _access_logger_for(transport: ProxyTransport) -> type[AbstractAccessLogger]:
    class _Counting(AbstractAccessLogger):
        """Counts the requests aiohttp refused before the proxy saw them (bad framing, bad head)."""

        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            if request.get(_OURS) is None:
                transport.rejected["framing"] += 1

        @property
        def enabled(self) -> bool:
            return True

    return _Counting
