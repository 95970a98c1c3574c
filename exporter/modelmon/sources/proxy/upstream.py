"""The proxy's side towards the model server: pooled HTTP/1.1 connections.

Each :class:`UpstreamConnection` carries one exchange at a time: the proxy
writes a request on it and the connection parses the answer with llhttp (the
C parser of Node.js, through ``httptools``), handing the head, the body
chunks and the end to the exchange's :class:`ResponseSink`.  A connection that
ended its response cleanly and may be kept alive goes back to the
:class:`UpstreamPool`, which keeps at most ``limit`` connections open and
closes idle ones after ``keepalive`` seconds.  Reading is bounded per read
(``read_timeout`` without a byte from the model server fails the exchange),
like aiohttp's ``sock_read``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Protocol, cast

import httptools


class ResponseSink(Protocol):
    """What an exchange does with the model server's answer."""

    def on_response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                         length: int | None) -> None: ...

    def on_response_body(self, chunk: bytes) -> None: ...

    def on_response_end(self) -> None: ...

    def on_upstream_failure(self, exc: BaseException, answered: bool) -> None:
        """The connection failed; ``answered``: some of the response had arrived."""

    def on_upstream_paused(self, paused: bool) -> None:
        """The upstream's write buffer is full (stop reading the client's body) or drained."""


class UpstreamTimeout(TimeoutError):
    """No byte from the model server within the read timeout."""


class UpstreamConnection(asyncio.Protocol):
    """One kept-alive connection to the model server, one exchange at a time."""

    def __init__(self, pool: UpstreamPool):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        self.closed = False
        #: Whether this connection already served an exchange (a reused one may have been closed by the peer).
        self.reused = False
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._head_only = False
        self._answered = False
        self._close_delimited = False
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio's interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._last_read = time.monotonic()
        if self._parser is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self._close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self._disarm()
        if self.sink is not None:
            if self._close_delimited and self._answered:  # the body ran to the end of the connection
                self._finish(reusable=False)
            else:
                self._fail(exc or ConnectionResetError("upstream closed the connection"))
        self.pool.forget(self)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.on_upstream_paused(True)

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.on_upstream_paused(False)

    # ------------------------------------------------------------ one exchange
    def start(self, sink: ResponseSink, data: bytes, head_only: bool) -> None:
        """Send a request (its head, and its body if it is whole) and route the answer to ``sink``."""
        self.sink = sink
        self._parser = httptools.HttpResponseParser(self)
        self._headers = []
        self._reason = b""
        self._head_only = head_only
        self._answered = self._close_delimited = False
        self._last_read = time.monotonic()
        self._arm()
        assert self.transport is not None
        self.transport.write(data)

    def write(self, data: bytes) -> None:
        """More of the request body (streamed requests)."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def abort(self) -> None:
        """Give up the exchange (the client left or broke its request): the connection is not reused."""
        self.sink = None
        self._close()

    # ------------------------------------------------------------ parser callbacks
    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (the proxy sends no Expect): skip it
            self._headers, self._reason = [], b""
            return
        self._answered = True
        length: int | None = None
        chunked = False
        for name, value in self._headers:
            low = name.lower()
            if low == b"content-length":
                length = int(value)
            elif low == b"transfer-encoding":
                chunked = True
        no_body = self._head_only or status in (204, 304)
        self._close_delimited = not no_body and length is None and not chunked
        if self.sink is not None:
            self.sink.on_response_head(status, self._reason, self._headers, length)
        if no_body:
            # llhttp would wait for the body a HEAD answer announces: the exchange ends here.
            self._finish(reusable=self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        if self._answered and self.sink is not None and self._parser is not None:
            self._finish(reusable=self._parser.should_keep_alive())

    # ------------------------------------------------------------ end of an exchange
    def _finish(self, reusable: bool) -> None:
        sink, self.sink = self.sink, None
        self._parser = None
        self._disarm()
        self.reused = True
        # Back to the pool first, so the client's next request (pipelined) can take this very connection.
        if reusable and not self.closed:
            self.pool.release(self)
        else:
            self._close()
        if sink is not None:
            sink.on_response_end()

    def _fail(self, exc: BaseException) -> None:
        sink, self.sink = self.sink, None
        self._parser = None
        answered = self._answered
        self._close()
        if sink is not None:
            sink.on_upstream_failure(exc, answered)

    def _close(self) -> None:
        self._disarm()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.closed = True
        self.pool.forget(self)

    # ------------------------------------------------------------ read deadline
    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.pool.loop.call_later(self.pool.read_timeout, self._check)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        # One timer per exchange, pushed back by each read rather than re-armed per chunk.
        self._timer = None
        if self.sink is None:
            return
        overdue = self._last_read + self.pool.read_timeout - time.monotonic()
        if overdue > 0:
            self._timer = self.pool.loop.call_later(overdue, self._check)
            return
        self._fail(UpstreamTimeout(f"no answer from the model server in {self.pool.read_timeout:g} s"))


class UpstreamPool:
    """At most ``limit`` connections to one model server; idle ones kept ``keepalive`` seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int, tls: ssl.SSLContext | None,
                 limit: int, connect_timeout: float, read_timeout: float, keepalive: float):
        self.loop = loop
        self.host, self.port, self.tls = host, port, tls
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive = keepalive
        self._idle: list[UpstreamConnection] = []
        self._open: set[UpstreamConnection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take_idle(self) -> UpstreamConnection | None:
        """A kept-alive connection ready now, or None (the common case needs no await)."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive:
                return conn
            conn.abort()
        return None

    async def acquire(self) -> UpstreamConnection:
        """A connection for one exchange: an idle one, a new one, or the next one released."""
        deadline = self.loop.time() + self.connect_timeout
        while True:
            conn = self.take_idle()
            if conn is not None:
                return conn
            if len(self._open) < self.limit:
                return await self._connect(deadline)
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self, deadline: float) -> UpstreamConnection:
        placeholder = UpstreamConnection(self)  # holds the slot while connecting
        self._open.add(placeholder)
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await self.loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port, ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None)
        finally:
            self._open.discard(placeholder)
        self._open.add(conn)
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        self._wake()

    def forget(self, conn: UpstreamConnection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for conn in list(self._open):
            conn.abort()
        self._idle.clear()
