"""A small Python client for model services: log predictions and labels to modelmon.

::

    from modelmon.client import Client

    mm = Client("http://modelmon:9874", model="fraud", version="1.4.0")
    mm.log_event(id=request_id, features={"amount": 12.5, "country": "DE"},
                 prediction=1, score=0.91, latency_seconds=0.042)
    ...
    mm.log_label(id=request_id, label=0)      # whenever the truth is known
    mm.close()                                # flushes what is buffered

``log_event`` and ``log_label`` only append to a bounded in-memory buffer and
return at once: they never block on the network and never raise into the
model's request path (a full buffer or an unusable value drops the item and
counts it in :attr:`Client.stats`).  A background thread sends the buffer in
batches (``batch_size`` items or every ``flush_interval`` seconds) with one
``requests.Session`` and timeouts; it backs off and keeps the items when the
exporter sheds load (429/503) or is unreachable, and drops items the exporter
refused as invalid (counted, with the reason logged once per kind).
Labels are sent after the events of the same flush, so a label never overtakes
its event.  The thread is restarted after ``os.fork()`` (pre-fork servers).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

import requests

log = logging.getLogger(__name__)

__all__ = ["Client", "ClientStats"]

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_MAX_BACKOFF = 30.0


@dataclass
class ClientStats:
    """What happened to logged items (monotonic counts)."""

    #: Accepted by the exporter.
    sent: int = 0
    #: Dropped without being sent: buffer full, unencodable value, or still unsent at close.
    dropped: int = 0
    #: Refused by the exporter (invalid, unknown model or id, unauthorized...).
    rejected: int = 0
    #: Failed POSTs (network errors, 429/5xx); their items were kept and retried where room allowed.
    failed_requests: int = 0


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays and other odd values as plain JSON."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return item()
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _encode(items: list[dict[str, Any]]) -> tuple[bytes, list[dict[str, Any]], int]:
    """(body, the items it holds, items dropped as unencodable)."""
    try:
        return json.dumps(items, default=_jsonable, allow_nan=False).encode(), items, 0
    except (TypeError, ValueError):
        good = []
        for it in items:
            try:
                json.dumps(it, default=_jsonable, allow_nan=False)
                good.append(it)
            except (TypeError, ValueError):
                pass
        body = json.dumps(good, default=_jsonable, allow_nan=False).encode()
        return body, good, len(items) - len(good)


class Client:
    """Buffers events and labels and ships them to a modelmon exporter in the background."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:9874",
        model: str | None = None,
        version: str | None = None,
        *,
        token: str | None = None,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_buffer: int = 10_000,
        timeout: float = 5.0,
        session: requests.Session | None = None,
    ):
        """
        :param url: the exporter's base URL (where ``/metrics`` is served).
        :param model: default model name for :meth:`log_event`.
        :param version: default model version.
        :param token: bearer token when the exporter requires one (``ingest.token_env``).
        :param batch_size: items per POST.
        :param flush_interval: seconds between sends when fewer than ``batch_size`` items wait.
        :param max_buffer: most events (and, separately, labels) held; beyond it items are dropped and counted.
        :param timeout: connect and read timeout of each POST, in seconds.
        """
        self.url = url.rstrip("/")
        self.model = model
        self.version = version
        self.batch_size = max(1, int(batch_size))
        self.flush_interval = float(flush_interval)
        self.max_buffer = max(1, int(max_buffer))
        self.timeout = float(timeout)
        self.stats = ClientStats()
        self._events: deque[dict[str, Any]] = deque()
        self._labels: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._session = session or requests.Session()
        self._session.headers.update({"Content-Type": "application/json", "X-Modelmon-Source": "client"})
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        self._warned: set[str] = set()
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self._flush_done = threading.Condition(self._lock)
        self._in_flight = 0
        self._backoff = 0.0
        self._start_thread()
        _live_clients.add(self)

    # ------------------------------------------------------------------ API
    def log_event(
        self,
        id: str | None = None,
        features: Mapping[str, Any] | None = None,
        prediction: Any = None,
        *,
        score: float | None = None,
        probabilities: Mapping[str, float] | None = None,
        latency_seconds: float | None = None,
        error: bool | str | None = None,
        attributes: Mapping[str, Any] | None = None,
        attributions: Mapping[str, float] | None = None,
        label: Any = None,
        timestamp: float | None = None,
        model: str | None = None,
        version: str | None = None,
    ) -> bool:
        """Queue one prediction.  Returns False when it was dropped (never raises)."""
        try:
            ev: dict[str, Any] = {"model": model or self.model, "timestamp": time.time() if timestamp is None else timestamp}
            v = version or self.version
            if v is not None:
                ev["version"] = v
            if id is not None:
                ev["id"] = str(id)
            if features is not None:
                ev["features"] = dict(features)
            if prediction is not None:
                ev["prediction"] = prediction
            if score is not None:
                ev["score"] = score
            if probabilities is not None:
                ev["probabilities"] = dict(probabilities)
            if latency_seconds is not None:
                ev["latency_seconds"] = latency_seconds
            if error:
                ev["error"] = error
            if attributes is not None:
                ev["attributes"] = dict(attributes)
            if attributions is not None:
                ev["attributions"] = dict(attributions)
            if label is not None:
                ev["label"] = label
            return self._put(self._events, ev)
        except Exception:  # the model's request path must never see our problems
            self._drop(1)
            return False

    def log_label(self, id: str, label: Any, *, model: str | None = None) -> bool:
        """Queue the ground truth of an earlier prediction.  Returns False when dropped."""
        try:
            item: dict[str, Any] = {"id": str(id), "label": label}
            if model is not None:
                item["model"] = model
            return self._put(self._labels, item)
        except Exception:
            self._drop(1)
            return False

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Send everything buffered now; True when the buffers emptied within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._ensure_thread()
        self._wake.set()
        with self._lock:
            while self._events or self._labels or self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._flush_done.wait(remaining if remaining is None else min(remaining, 0.1))
                self._wake.set()
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Flush (up to ``timeout`` seconds), stop the thread; what is still unsent is counted as dropped."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(1.0, self.timeout + 1))
        with self._lock:
            left = len(self._events) + len(self._labels)
            self._events.clear()
            self._labels.clear()
        if left:
            self._drop(left)
        self._session.close()
        _live_clients.discard(self)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ internals
    def _put(self, buf: deque, item: dict[str, Any]) -> bool:
        if self._closed:
            self._drop(1)
            return False
        self._ensure_thread()
        with self._lock:
            if len(buf) >= self.max_buffer:
                self.stats.dropped += 1
                return False
            buf.append(item)
            full = len(buf) >= self.batch_size
        if full:
            self._wake.set()
        return True

    def _drop(self, n: int) -> None:
        with self._lock:
            self.stats.dropped += n

    def _ensure_thread(self) -> None:
        if os.getpid() != self._pid:  # forked: the thread and the session did not come along
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._flush_done = threading.Condition(self._lock)
            self._events.clear()
            self._labels.clear()
            self._in_flight = 0
            self._session = requests.Session()  # fresh sockets, same headers
            self._session.headers.update({"Content-Type": "application/json", "X-Modelmon-Source": "client"})
            self._thread = None
        if self._thread is None or not self._thread.is_alive():
            self._start_thread()

    def _start_thread(self) -> None:
        if self._closed:
            return
        self._thread = threading.Thread(target=self._run, name="modelmon-client", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._backoff or self.flush_interval)
            self._wake.clear()
            try:
                self._send_all()
            except Exception:  # never let the thread die
                log.exception("modelmon client: send failed")
            if self._closed:
                return

    def _take(self, buf: deque) -> list[dict[str, Any]]:
        with self._lock:
            n = min(len(buf), self.batch_size)
            items = [buf.popleft() for _ in range(n)]
            self._in_flight += n
            return items

    def _done(self, n: int) -> None:
        with self._lock:
            self._in_flight -= n
            self._flush_done.notify_all()

    def _send_all(self) -> None:
        """Send full buffers; events before labels; stop at the first failure (back off)."""
        for buf, path in ((self._events, "/api/v1/events"), (self._labels, "/api/v1/labels")):
            while buf:
                items = self._take(buf)
                try:
                    ok = self._post(path, items, buf)
                finally:
                    self._done(len(items))
                if not ok:
                    return  # labels wait for their events
        self._backoff = 0.0

    def _post(self, path: str, items: list[dict[str, Any]], buf: deque) -> bool:
        body, kept, bad = _encode(items)
        if bad:
            self._drop(bad)
            self._warn("encode", "modelmon client: dropped %d item(s) that are not JSON-encodable", bad)
        if not kept:
            return True
        try:
            resp = self._session.post(self.url + path, data=body, timeout=self.timeout)
        except requests.RequestException as exc:
            self._retry_later(kept, buf, f"{exc.__class__.__name__}")
            return False
        if resp.status_code in _RETRY_STATUSES or resp.status_code >= 500:
            self._retry_later(kept, buf, f"HTTP {resp.status_code}")
            return False
        accepted = len(kept)
        if resp.status_code != 200:
            accepted = 0
        try:
            payload = resp.json()
            accepted = int(payload.get("accepted", accepted))
            if payload.get("rejected"):
                first = payload["rejected"][0]
                self._warn(first.get("reason", "rejected"), "modelmon client: exporter refused items (first: %s)",
                           first.get("error"))
            elif resp.status_code != 200:
                self._warn(str(resp.status_code), "modelmon client: exporter answered %s: %s",
                           resp.status_code, payload.get("error"))
        except ValueError:
            pass
        with self._lock:
            self.stats.sent += accepted
            self.stats.rejected += len(kept) - accepted
        return True

    def _retry_later(self, items: list[dict[str, Any]], buf: deque, why: str) -> None:
        """Put items back at the front (as room allows) and back off exponentially."""
        with self._lock:
            self.stats.failed_requests += 1
            room = self.max_buffer - len(buf)
            keep = items[:max(room, 0)]
            buf.extendleft(reversed(keep))
            self.stats.dropped += len(items) - len(keep)
        self._backoff = min(_MAX_BACKOFF, max(0.5, self._backoff * 2)) if not self._closed else 0.0
        self._warn("send:" + why, "modelmon client: cannot send to %s (%s); retrying", self.url, why)
        if self._closed:
            with self._lock:  # closing: do not spin on an unreachable exporter
                n = len(buf)
                buf.clear()
                self.stats.dropped += n

    def _warn(self, kind: str, msg: str, *args: Any) -> None:
        if kind not in self._warned and len(self._warned) < 100:
            self._warned.add(kind)
            log.warning(msg, *args)


_live_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # pragma: no cover - runs at interpreter exit
    for c in list(_live_clients):
        try:
            c.close(timeout=2.0)
        except Exception:
            pass
