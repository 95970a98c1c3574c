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
``requests.Session`` and timeouts.  What each answer does:

* 2xx: sent (items the exporter refused inside the batch are counted as rejected);
* 429 / 503 (load shedding) and network errors: the batch is kept and the
  sender waits ``Retry-After`` seconds when the exporter gave them, else an
  exponential backoff (``retry_backoff`` doubling up to 30 s); nothing is sent
  before that time, however full the buffer gets;
* any other 4xx (invalid, unauthorized, too large...): the batch is dropped and
  counted as rejected, never retried;
* any other 5xx or a read timeout: retried with backoff ``max_retries`` times,
  then dropped and counted as ``given_up`` so that one poison batch never
  holds back the batches behind it.

Labels are sent after the events of the same flush, so a label never overtakes
its event.  The thread is restarted after ``os.fork()`` (pre-fork servers).
"""

from __future__ import annotations

import atexit
import email.utils
import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import requests

log = logging.getLogger(__name__)

__all__ = ["Client", "ClientStats"]

#: The exporter shedding load: wait (Retry-After or backoff) and retry, however long it takes.
_SHED_STATUSES = frozenset({429, 503})
_MAX_BACKOFF = 30.0
#: Longest ``Retry-After`` honoured (a larger one is cut to this).
_MAX_RETRY_AFTER = 300.0
EVENTS = "/api/v1/events"
LABELS = "/api/v1/labels"


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
    #: Dropped after ``max_retries`` failed attempts (5xx other than 503, read timeouts).
    given_up: int = 0


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
        max_retries: int = 3,
        retry_backoff: float = 0.5,
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
        :param max_retries: further attempts for a batch that failed with a 5xx (other than 503)
            or a read timeout, before it is dropped (``stats.given_up``).
        :param retry_backoff: first backoff in seconds after a failure without ``Retry-After``; it
            doubles with each failure in a row, up to 30 s.
        """
        self.url = url.rstrip("/")
        self.model = model
        self.version = version
        self.batch_size = max(1, int(batch_size))
        self.flush_interval = float(flush_interval)
        self.max_buffer = max(1, int(max_buffer))
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.retry_backoff = max(0.001, float(retry_backoff))
        self.stats = ClientStats()
        self._events: deque[dict[str, Any]] = deque()
        self._labels: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
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
        #: No POST before this time.monotonic() value (Retry-After / backoff).
        self._not_before = 0.0
        #: A batch that failed and is sent again before anything else: (path, items, attempts).
        self._retry: tuple[str, list[dict[str, Any]], int] | None = None
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
        except Exception:  # noqa: BLE001 - the model's request path must never see our problems
            self._drop(1)
            return False

    def log_label(self, id: str, label: Any, *, model: str | None = None) -> bool:
        """Queue the ground truth of an earlier prediction.  Returns False when dropped."""
        try:
            item: dict[str, Any] = {"id": str(id), "label": label}
            if model is not None:
                item["model"] = model
            return self._put(self._labels, item)
        except Exception:  # noqa: BLE001 - never raise into the caller
            self._drop(1)
            return False

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Send everything buffered now; True when the buffers emptied within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._ensure_thread()
        self._wake.set()
        with self._lock:
            while self._events or self._labels or self._in_flight or self._retry is not None:
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
        self._closing.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(1.0, self.timeout + 1))
        with self._lock:
            left = len(self._events) + len(self._labels) + (len(self._retry[1]) if self._retry else 0)
            self._events.clear()
            self._labels.clear()
            self._retry = None
        if left:
            self._drop(left)
        self._session.close()
        _live_clients.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
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
            self._retry = None
            self._not_before = 0.0
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
            delay = self._not_before - time.monotonic()
            if delay > 0:
                if self._closed:
                    return  # close() counts what is left as dropped
                # Backing off: sleep it out; a full buffer must not bring the next POST forward.
                self._closing.wait(delay)
                continue
            self._wake.wait(self.flush_interval)
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
        """The batch being retried first, then full buffers, events before labels;
        stop at the first failure (the backoff then applies to everything)."""
        if self._retry is not None:
            path, items, attempts = self._retry
            if not self._attempt(path, items, attempts):
                return
        for buf, path in ((self._events, EVENTS), (self._labels, LABELS)):
            while buf:
                if time.monotonic() < self._not_before:
                    return
                items = self._take(buf)
                try:
                    ok = self._attempt(path, items, 0)
                finally:
                    self._done(len(items))
                if not ok:
                    return  # labels wait for their events
        self._backoff = 0.0

    def _attempt(self, path: str, items: list[dict[str, Any]], attempts: int) -> bool:
        """POST one batch; False when it failed and waits in the retry slot."""
        outcome, retry_after = self._post(path, items)
        with self._lock:
            self._retry = None
            if outcome == "done":
                self._flush_done.notify_all()
                return True
            self.stats.failed_requests += 1
            if outcome == "poison" and attempts >= self.max_retries:
                self.stats.given_up += len(items)
                self._flush_done.notify_all()
                self._warn("given_up", "modelmon client: dropped a batch of %d item(s) after %d attempts",
                           len(items), attempts + 1)
                return True  # dropped: the batches behind it go on
            if self._closed:  # closing: do not wait for an exporter that refuses
                self.stats.dropped += len(items)
                self._flush_done.notify_all()
                return False
            self._retry = (path, items, attempts + (outcome == "poison"))
        self._backoff = min(_MAX_BACKOFF, max(self.retry_backoff, self._backoff * 2))
        wait = self._backoff if retry_after is None else retry_after
        self._not_before = time.monotonic() + wait
        return False

    def _post(self, path: str, items: list[dict[str, Any]]) -> tuple[str, float | None]:
        """("done" | "shed" | "poison", Retry-After seconds)."""
        body, kept, bad = _encode(items)
        if bad:
            self._drop(bad)
            self._warn("encode", "modelmon client: dropped %d item(s) that are not JSON-encodable", bad)
        if not kept:
            return "done", None
        items[:] = kept
        try:
            resp = self._session.post(self.url + path, data=body, timeout=self.timeout)
        except (requests.ConnectionError, requests.ConnectTimeout) as exc:
            self._warn("send:" + exc.__class__.__name__, "modelmon client: cannot send to %s (%s); retrying",
                       self.url, exc.__class__.__name__)
            return "shed", None
        except requests.RequestException as exc:  # read timeout and the like: maybe the batch's fault
            self._warn("send:" + exc.__class__.__name__, "modelmon client: sending to %s failed (%s); retrying",
                       self.url, exc.__class__.__name__)
            return "poison", None
        code = resp.status_code
        if code in _SHED_STATUSES:
            self._warn(f"send:HTTP {code}", "modelmon client: exporter at %s answered %s; backing off", self.url, code)
            return "shed", _retry_after(resp.headers.get("Retry-After"))
        if code >= 500:
            self._warn(f"send:HTTP {code}", "modelmon client: exporter at %s answered %s; retrying", self.url, code)
            return "poison", _retry_after(resp.headers.get("Retry-After"))
        accepted = len(kept) if 200 <= code < 300 else 0
        try:
            payload = resp.json()
            if 200 <= code < 300:
                accepted = int(payload.get("accepted", accepted))
            if payload.get("rejected"):
                first = payload["rejected"][0]
                self._warn(first.get("reason", "rejected"), "modelmon client: exporter refused items (first: %s)",
                           first.get("error"))
            elif code >= 300:
                self._warn(str(code), "modelmon client: exporter answered %s: %s", code, payload.get("error"))
        except (ValueError, AttributeError, TypeError, IndexError, KeyError):
            if code >= 300:
                self._warn(str(code), "modelmon client: exporter answered %s", code)
        accepted = max(0, min(accepted, len(kept)))
        with self._lock:
            self.stats.sent += accepted
            self.stats.rejected += len(kept) - accepted
        return "done", None

    def _warn(self, kind: str, msg: str, *args: Any) -> None:
        if kind not in self._warned and len(self._warned) < 100:
            self._warned.add(kind)
            log.warning(msg, *args)


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date), bounded."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value) if value.isdigit() else (
            email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # pragma: no cover - runs at interpreter exit
    for c in list(_live_clients):
        try:
            c.close(timeout=2.0)
        except Exception:  # noqa: BLE001, S110 - interpreter exit: nothing left to tell
            pass
