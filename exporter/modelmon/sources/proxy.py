"""The reverse-proxy source: watch a model server without touching its code.

Clients call the proxy; it forwards method, path (after the upstream URL's own
path, if any), headers and body to the model server and returns the upstream
response as it came, while recording one event per prediction: latency,
status (a 5xx, a refused connection or a timeout is an error) and, when
configured, features and prediction extracted from the JSON bodies by dotted
paths::

    inputs[0]            instances[*].age        outputs.label       predictions[*]

A ``[*]`` makes one event per element (a batch prediction request); all
``[*]`` paths of a request must then have the same length.  Hop-by-hop headers
(``Connection``, ``Transfer-Encoding``...) are the only ones not passed on, as
RFC 9110 requires of a proxy.  An upstream that cannot be reached gives the
client a 502 (504 on timeout) and counts as an error; the exporter keeps
running.  Chunked or unknown-length responses (streaming), non-JSON bodies and
bodies over ``proxy.max_parse_bytes`` pass through untouched, recorded with
latency and status only.

The request path stays cheap: events go to a bounded queue that a background
thread turns into one :class:`~modelmon.events.EventBatch` every 100 ms; when
the queue is full events are dropped and counted, never the request.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import re
import select
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import urlsplit

from ..collectors.ingest import ProxyCollector
from ..config import Config, ConfigError, ModelConfig, listen_address
from ..ingest import ItemError, ItemValidator, canonical_class, loads
from ..pipeline import Pipeline

log = logging.getLogger(__name__)

#: Headers that describe one connection, not the message (RFC 9110 section 7.6.1), plus
#: ``Expect``, which the proxy has already answered.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect",
})
FLUSH_INTERVAL = 0.1
STREAM_CHUNK = 64 * 1024

# --------------------------------------------------------------------------- dotted paths

_MISSING = object()
WILDCARD = "*"
_STEP_RE = re.compile(r"\.?([^.\[\]]+)|\[(\d+|\*)\]")


class PathError(ValueError):
    pass


class JsonPath:
    """A compiled dotted path: ``a.b[0].c``, ``instances[*].age``, ``[*].x``.

    Names are object keys (a name made of digits also indexes a list),
    ``[n]`` indexes a list and ``[*]`` takes every element.
    """

    def __init__(self, text: str):
        self.text = text
        steps: list[str | int] = []
        pos = 0
        text = text.strip()
        if not text:
            raise PathError("empty path")
        while pos < len(text):
            m = _STEP_RE.match(text, pos)
            if m is None or (pos == 0 and m.group(0).startswith(".")):
                raise PathError(f"invalid path {self.text!r} at character {pos + 1}")
            if m.group(1) is not None:
                steps.append(m.group(1))
            else:
                steps.append(WILDCARD if m.group(2) == "*" else int(m.group(2)))
            pos = m.end()
        self.steps = steps
        self.wildcard = WILDCARD in steps
        self._first_wildcard = steps.index(WILDCARD) if self.wildcard else len(steps)

    def __repr__(self) -> str:
        return f"JsonPath({self.text!r})"

    def extract(self, doc: Any) -> Any:
        """The value at the path (or ``None``); with ``[*]``, the list of values (``None`` where absent)."""
        if self.wildcard:
            out: list[Any] = []
            self._walk(doc, 0, out)
            return out
        v = self._get(doc, 0)
        return None if v is _MISSING else v

    def _get(self, node: Any, i: int) -> Any:
        for step in self.steps[i:]:
            node = _step(node, step)
            if node is _MISSING:
                return _MISSING
        return node

    def _walk(self, node: Any, i: int, out: list[Any]) -> None:
        steps = self.steps
        while i < len(steps):
            step = steps[i]
            if step == WILDCARD:
                if isinstance(node, list):
                    for item in node:
                        self._walk(item, i + 1, out)
                return
            node = _step(node, step)
            if node is _MISSING:
                if i > self._first_wildcard:  # an element lacks it: keep the slot
                    out.append(None)
                return
            i += 1
        out.append(node)


def _step(node: Any, step: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(step, _MISSING) if isinstance(step, str) else _MISSING
    if isinstance(node, list):
        if isinstance(step, str):
            if not step.isdigit():
                return _MISSING
            step = int(step)
        return node[step] if step < len(node) else _MISSING
    return _MISSING


# --------------------------------------------------------------------------- config


def proxy_model(cfg: Config) -> ModelConfig | None:
    if cfg.proxy.model:
        return cfg.model(cfg.proxy.model)
    return cfg.models[0] if len(cfg.models) == 1 else None


def validate_proxy_config(cfg: Config) -> None:
    """Cross-field checks of the ``proxy`` section (called by the config loader and the CLI)."""
    p = cfg.proxy
    if not p.listen_address:
        raise ConfigError("required when proxy.upstream is set", field_path="proxy.listen_address")
    try:
        listen_address(p.listen_address)
    except ValueError as exc:
        raise ConfigError(str(exc), field_path="proxy.listen_address") from None
    if not p.upstream:
        raise ConfigError("required: the model server's URL, e.g. http://127.0.0.1:8080", field_path="proxy.upstream")
    u = urlsplit(p.upstream)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ConfigError("must be an http:// or https:// URL with a host", field_path="proxy.upstream")
    try:
        u.port
    except ValueError:
        raise ConfigError("invalid port", field_path="proxy.upstream") from None
    if p.model and cfg.model(p.model) is None:
        raise ConfigError(f"unknown model {p.model!r} (not in models)", field_path="proxy.model")
    model = proxy_model(cfg)
    if model is None:
        raise ConfigError("required when several models are configured", field_path="proxy.model")
    known = {f.name for f in model.features} | ({model.fairness.attribute} if model.fairness.attribute else set())
    for name, path in p.features.items():
        if name not in known:
            raise ConfigError(f"not a feature of model {model.name!r}", field_path=f"proxy.features.{name}")
        _compile(path, f"proxy.features.{name}")
    for name, path in p.attributions.items():
        if model.feature(name) is None:
            raise ConfigError(f"not a feature of model {model.name!r}", field_path=f"proxy.attributions.{name}")
        _compile(path, f"proxy.attributions.{name}")
    for key in ("id", "prediction", "score"):
        if getattr(p, key):
            _compile(getattr(p, key), f"proxy.{key}")


def _compile(path: Any, field_path: str) -> JsonPath:
    if not isinstance(path, str):
        raise ConfigError("must be a dotted path string such as instances[*].age", field_path=field_path)
    try:
        return JsonPath(path)
    except PathError as exc:
        raise ConfigError(str(exc), field_path=field_path) from None


# --------------------------------------------------------------------------- upstream pool


class _Pool:
    """Keep-alive connections to the upstream, shared by the proxy's threads."""

    def __init__(self, url: str, timeout: float, size: int = 64):
        u = urlsplit(url)
        self.https = u.scheme == "https"
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (443 if self.https else 80)
        self.base = u.path.rstrip("/")
        self.netloc = u.netloc
        self.timeout = timeout
        self.size = size
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def get(self) -> tuple[http.client.HTTPConnection, bool]:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if _usable(conn):
                return conn, True
            conn.close()
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout), False

    def put(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()


def _usable(conn: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection is usable unless the upstream closed it
    (then the socket reads as ready: EOF)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


#: Methods that may be sent twice (RFC 9110 section 9.2.2): retried once on a fresh
#: connection when a kept-alive one fails before any response.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})

# --------------------------------------------------------------------------- the source


class ProxySource:
    """A reverse-proxy listener feeding the pipeline (``source="proxy"``)."""

    def __init__(self, cfg: Config, pipeline: Pipeline):
        validate_proxy_config(cfg)
        self.cfg = cfg.proxy
        self.pipeline = pipeline
        self.model_cfg = proxy_model(cfg)
        assert self.model_cfg is not None
        self.model = self.model_cfg.name
        self.pool = _Pool(self.cfg.upstream, self.cfg.timeout_seconds)
        self.features = {name: JsonPath(path) for name, path in self.cfg.features.items()}
        self.id_path = JsonPath(self.cfg.id) if self.cfg.id else None
        self.prediction = JsonPath(self.cfg.prediction) if self.cfg.prediction else None
        self.score = JsonPath(self.cfg.score) if self.cfg.score else None
        self.attributions = {name: JsonPath(path) for name, path in self.cfg.attributions.items()}
        self.numerical = {f.name for f in self.model_cfg.features if f.type == "numerical"}
        self.classification = self.model_cfg.task == "classification"
        self.parse_request = bool(self.features or self.id_path)
        self.parse_response = bool(self.prediction or self.score or self.attributions)
        self.extraction_failures = 0
        self.dropped = 0
        #: Responses by status class (``2xx``..``5xx``, ``502``/``504`` included in 5xx).
        self.responses: dict[str, int] = {c: 0 for c in ("1xx", "2xx", "3xx", "4xx", "5xx")}
        self._queue: deque[dict[str, Any]] = deque()
        self._qlock = threading.Lock()
        #: Requests being proxied right now.
        self.in_flight = 0
        self._stop = threading.Event()
        host, port = listen_address(self.cfg.listen_address)
        try:
            self.httpd = _ProxyServer((host, port), _handler_for(self))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.cfg.listen_address}: {exc.strerror or exc}",
                              field_path="proxy.listen_address") from None
        self.port = self.httpd.server_address[1]
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ lifecycle
    name = "proxy"

    def routes(self) -> list[Any]:
        return []  # the proxy has its own listener

    def collectors(self) -> list[Any]:
        return [ProxyCollector(self)]

    def start(self) -> None:
        for target, name in ((self.httpd.serve_forever, "modelmon-proxy"), (self._flusher, "modelmon-proxy-flush")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("proxy started", extra={"address": f"{self.httpd.server_address[0]}:{self.port}",
                                         "upstream": self.cfg.upstream, "model": self.model})

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self.drain(timeout=1.0)
        self.pool.close()

    # ------------------------------------------------------------ events
    def record(self, events: list[dict[str, Any]], status_class: str) -> None:
        """Queue a request's events (never blocks: drops and counts when full)."""
        with self._qlock:
            self.responses[status_class] = self.responses.get(status_class, 0) + 1
            room = self.cfg.queue_max_events - len(self._queue)
            if room < len(events):
                self.dropped += len(events) - max(room, 0)
                events = events[: max(room, 0)]
            self._queue.extend(events)

    def _count_failure(self) -> None:
        with self._qlock:
            self.extraction_failures += 1

    def _flusher(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            try:
                self.flush()
            except Exception:  # keep proxying: one bad batch must not stop recording
                log.exception("proxy flush failed")

    def flush(self) -> int:
        """Move queued events into the pipeline as one batch; returns how many."""
        with self._qlock:
            events, self._queue = self._queue, deque()
        if not events:
            return 0
        b = ItemValidator(self.model_cfg, "proxy")
        now = time.time()
        for ev in events:
            try:
                b.add(ev, now)
            except ItemError:  # a value the extraction let through: keep the serving part
                self._count_failure()
                b.add({k: ev[k] for k in ("model", "version", "timestamp", "latency_seconds", "error") if k in ev}, now)
        self.pipeline.submit(b.batch())
        return len(b)

    def drain(self, timeout: float = 5.0) -> int:
        """Wait for requests in progress to be recorded, then :meth:`flush` (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.flush()

    def build_events(self, t0: float, latency: float, error: str | None, req_headers: Any, req_body: bytes | None,
                     req_json_ok: bool, resp_headers: list[tuple[str, str]], resp_body: bytes | None) -> list[dict[str, Any]]:
        """The events of one proxied request (one unless ``[*]`` paths say otherwise)."""
        base: dict[str, Any] = {"model": self.model, "timestamp": t0, "latency_seconds": latency}
        if error:
            base["error"] = error
        version = self.cfg.version
        if self.cfg.version_header:
            for k, v in resp_headers:
                if k.lower() == self.cfg.version_header.lower():
                    version = v
                    break
        if version:
            base["version"] = version[:128]
        header_id = req_headers.get(self.cfg.id_header) if self.cfg.id_header else None
        if header_id:
            base["id"] = header_id[:256]
        if not (self.parse_request or self.parse_response):
            return [base]
        try:
            columns = self._extract(req_body if req_json_ok else None, resp_body if not error else None)
        except (ValueError, PathError):
            self._count_failure()
            return [base]
        n = max((len(v) for v in columns.values() if isinstance(v, list)), default=1)
        if n == 0:
            return [base]
        if any(isinstance(v, list) and len(v) != n for v in columns.values()):
            self._count_failure()
            return [base]
        events = []
        for i in range(n):
            ev = dict(base)
            if n > 1 and header_id:
                ev["id"] = f"{header_id[:240]}:{i}"
            feats = {}
            attributions = {}
            for key, col in columns.items():
                v = col[i] if isinstance(col, list) else col
                if key == "__id":
                    if v is not None and type(v) in (str, int):
                        ev["id"] = str(v)[:256]
                elif key == "__prediction":
                    ev["prediction"] = self._prediction(v)
                elif key == "__score":
                    ev["score"] = v if type(v) in (int, float) and math.isfinite(v) else None
                elif key.startswith("__attribution."):
                    attributions[key.partition(".")[2]] = v if type(v) in (int, float) and math.isfinite(v) else None
                else:
                    feats[key] = self._feature(key, v)
            if feats:
                ev["features"] = feats
            if attributions:
                ev["attributions"] = attributions
            events.append(ev)
        return events

    def _extract(self, req_body: bytes | None, resp_body: bytes | None) -> dict[str, Any]:
        cols: dict[str, Any] = {}
        if self.parse_request and req_body:
            doc = loads(req_body)
            for name, path in self.features.items():
                cols[name] = path.extract(doc)
            if self.id_path is not None:
                cols["__id"] = self.id_path.extract(doc)
        if self.parse_response and resp_body:
            doc = loads(resp_body)
            if self.prediction is not None:
                cols["__prediction"] = self.prediction.extract(doc)
            if self.score is not None:
                cols["__score"] = self.score.extract(doc)
            for name, path in self.attributions.items():
                cols[f"__attribution.{name}"] = path.extract(doc)
        return cols

    def _feature(self, name: str, v: Any) -> Any:
        if name in self.numerical:
            return v if type(v) in (int, float) and math.isfinite(v) else None
        if v is None or type(v) is str:
            return v
        return str(v).lower() if type(v) is bool else (str(v) if type(v) in (int, float) else None)

    def _prediction(self, v: Any) -> Any:
        try:
            if self.classification:
                return canonical_class(v)
            return v if type(v) in (int, float) and math.isfinite(v) else None
        except ItemError:
            return None


# --------------------------------------------------------------------------- HTTP


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _is_json(headers: Any) -> bool:
    ctype = (headers.get("Content-Type") or "").lower() if hasattr(headers, "get") else ""
    return "json" in ctype


def _handler_for(proxy: ProxySource) -> type[BaseHTTPRequestHandler]:
    pool = proxy.pool

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # small responses must not wait for a delayed ACK
        timeout = max(75.0, proxy.cfg.timeout_seconds)  # idle keep-alive connections release their thread

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("proxy " + fmt % args)

        def _proxy(self) -> None:
            with proxy._qlock:
                proxy.in_flight += 1
            try:
                self._proxy_one()
            finally:
                with proxy._qlock:
                    proxy.in_flight -= 1

        def _proxy_one(self) -> None:
            t0 = time.time()
            start = time.perf_counter()
            headers = self.headers
            connection_tokens = {t.strip().lower() for t in (headers.get("Connection") or "").split(",")}
            chunked_in = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
            body: bytes | None = None
            body_iter: Iterator[bytes] | None = None
            if chunked_in:
                body_iter = self._chunks_in()
            else:
                length = headers.get("Content-Length")
                if length is not None:
                    try:
                        n = int(length)
                    except ValueError:
                        self._reply_error(400, "invalid Content-Length")
                        return
                    body = self.rfile.read(n)
            req_json_ok = (body is not None and proxy.parse_request and len(body) <= proxy.cfg.max_parse_bytes
                           and (_is_json(headers) or body[:1] in (b"{", b"[")))
            out_headers = [(k, v) for k, v in headers.items()
                           if k.lower() not in HOP_BY_HOP and k.lower() not in connection_tokens]
            if not any(k.lower() == "host" for k, _ in out_headers):
                out_headers.append(("Host", pool.netloc))
            path = pool.base + self.path if pool.base else self.path
            try:
                conn, resp = self._forward(path, out_headers, body, body_iter)
            except socket.timeout:
                self._fail(t0, start, "timeout", 504, "upstream timed out", body, req_json_ok)
                return
            except (OSError, http.client.HTTPException) as exc:
                self._fail(t0, start, "upstream", 502, f"upstream unavailable: {exc.__class__.__name__}", body, req_json_ok)
                return
            self._relay(conn, resp, t0, start, body, req_json_ok)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _proxy

        def _chunks_in(self) -> Iterator[bytes]:
            rfile = self.rfile
            while True:
                size = int(rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    while rfile.readline().strip():  # trailers
                        pass
                    return
                data = rfile.read(size)
                rfile.readline()
                yield data

        def _forward(self, path: str, headers: list[tuple[str, str]], body: bytes | None,
                     body_iter: Iterator[bytes] | None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
            for attempt in (0, 1):
                conn, reused = pool.get()
                try:
                    conn.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
                    for k, v in headers:
                        conn.putheader(k, v)
                    if body_iter is not None:
                        conn.putheader("Transfer-Encoding", "chunked")
                        conn.endheaders()
                        for piece in body_iter:
                            if piece:
                                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                        conn.send(b"0\r\n\r\n")
                    else:
                        conn.endheaders(body)
                    return conn, conn.getresponse()
                except socket.timeout:
                    conn.close()
                    raise
                except (OSError, http.client.HTTPException):
                    conn.close()
                    # A kept-alive connection the upstream closed meanwhile: retry once on a fresh one.
                    if not reused or body_iter is not None or attempt == 1 or self.command not in IDEMPOTENT:
                        raise
            raise AssertionError("unreachable")

        def _relay(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, t0: float, start: float,
                   req_body: bytes | None, req_json_ok: bool) -> None:
            status = resp.status
            resp_headers = resp.getheaders()
            conn_tokens = {t.strip().lower() for t in (resp.getheader("Connection") or "").split(",")}
            keep = [(k, v) for k, v in resp_headers if k.lower() not in HOP_BY_HOP and k.lower() not in conn_tokens]
            no_body = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
            length = resp.getheader("Content-Length")
            streaming = not no_body and (resp.chunked or length is None)
            resp_body: bytes | None = None
            error = "error" if status >= 500 else None
            try:
                if no_body:
                    resp.read()
                    self._write_head(status, resp.reason, keep)
                elif streaming:
                    self._write_head(status, resp.reason, keep + [("Transfer-Encoding", "chunked")])
                    while True:
                        piece = resp.read1(STREAM_CHUNK)
                        if not piece:
                            break
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    size = int(length or 0)
                    if size <= proxy.cfg.max_parse_bytes:
                        resp_body = resp.read()
                        self.wfile.write(self._head(status, resp.reason, keep) + resp_body)
                    else:
                        self._write_head(status, resp.reason, keep)
                        while piece := resp.read(STREAM_CHUNK):
                            self.wfile.write(piece)
            except socket.timeout:
                error = "timeout"
                self.close_connection = True
                conn.close()
            except (OSError, http.client.HTTPException):
                error = "upstream"
                self.close_connection = True
                conn.close()
            else:
                if resp.will_close:
                    conn.close()
                else:
                    pool.put(conn)
            latency = time.perf_counter() - start
            parse = resp_body if (resp_body is not None and proxy.parse_response and _is_json(resp.headers)) else None
            if parse is None and resp_body is not None and proxy.parse_response and resp_body[:1] in (b"{", b"["):
                parse = resp_body
            events = proxy.build_events(t0, latency, error, self.headers, req_body, req_json_ok, resp_headers, parse)
            proxy.record(events, f"{status // 100}xx" if 100 <= status < 600 else "5xx")

        def _head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
            lines = [f"HTTP/1.1 {status} {reason}\r\n"]
            lines += [f"{k}: {v}\r\n" for k, v in headers]
            lines.append("\r\n")
            return "".join(lines).encode("latin-1", "replace")

        def _write_head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
            self.wfile.write(self._head(status, reason, headers))

        def _reply_error(self, status: int, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            self.close_connection = True
            self.wfile.write(self._head(status, http.client.responses.get(status, ""), [
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close"),
            ]) + body)

        def _fail(self, t0: float, start: float, reason: str, status: int, message: str,
                  body: bytes | None, req_json_ok: bool) -> None:
            self._reply_error(status, message)
            events = proxy.build_events(t0, time.perf_counter() - start, reason, self.headers, body, req_json_ok, [], None)
            proxy.record(events, "5xx")

    return _Handler
