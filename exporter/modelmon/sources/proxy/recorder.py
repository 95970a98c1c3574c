"""Proxied exchanges -> validated event batches -> the pipeline, off the request path.

The transport only appends an :class:`~.extract.Exchange` to a bounded queue
(a full queue drops and counts it; the request itself is never held up).  A
background thread wakes every ``FLUSH_INTERVAL`` seconds, runs the extractor
over what has queued, validates the items through the ingest schema into one
:class:`~modelmon.events.EventBatch` and submits it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ...config import ModelConfig
from ...events import EventBatch
from ...ingest import ItemError, ItemValidator
from .extract import Exchange, ExtractionError, Extractor

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.1
#: How long the recorder pauses every 8 exchanges so the event loop's thread gets the GIL (see flush).
YIELD_SECONDS = 0.0002
#: The serving fields kept when extracted values do not validate.
SERVING_FIELDS = ("model", "version", "id", "timestamp", "latency_seconds", "error")


class Recorder:
    """A bounded queue of exchanges and the thread that turns them into batches."""

    def __init__(self, model: ModelConfig, extractor: Extractor, submit: Callable[[EventBatch], Any],
                 max_queued: int):
        self.model = model
        self.extractor = extractor
        self.submit = submit
        self.max_queued = max_queued
        #: Requests whose bodies did not yield events (recorded with latency and status only).
        self.extraction_failures = 0
        #: Exchanges not recorded because the queue was full.
        self.dropped = 0
        #: Responses by status class ``1xx``..``5xx`` (the proxy's own 502/504 are 5xx).
        self.responses: dict[str, int] = {c: 0 for c in ("1xx", "2xx", "3xx", "4xx", "5xx")}
        self._queue: deque[Exchange] = deque()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, ex: Exchange) -> None:
        """Queue one exchange (called on the event loop; never blocks)."""
        status = ex.status
        key = f"{status // 100}xx" if 100 <= status < 600 else "5xx"
        self.responses[key] += 1
        if len(self._queue) >= self.max_queued:
            self.dropped += 1
            return
        self._queue.append(ex)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="modelmon-proxy-recorder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            try:
                self.flush()
            except Exception:  # keep recording: one bad batch must not stop the thread
                log.exception("proxy flush failed")

    def flush(self) -> int:
        """Turn everything queued into one batch and submit it; returns the number of events."""
        with self._flush_lock:
            q = self._queue
            n = len(q)
            if not n:
                return 0
            exchanges = [q.popleft() for _ in range(n)]
            b = ItemValidator(self.model, "proxy")
            now = time.time()
            for i, ex in enumerate(exchanges):
                if i & 7 == 7:
                    # Hand the GIL to the proxy's event loop now and then.  A real sleep, not
                    # sleep(0): a thread that gives the GIL up for no time usually takes it back
                    # before the loop's thread wakes, and the loop then waits out the whole switch
                    # interval (5 ms) at every step of a request.  Under a backlog, no pause.
                    time.sleep(YIELD_SECONDS if len(q) < self.max_queued // 2 else 0)
                try:
                    items = self.extractor.events(ex)
                except ExtractionError:
                    self.extraction_failures += 1
                    items = [self.extractor.serving_event(ex)]
                failed = False
                for item in items:
                    try:
                        b.add(item, now)
                    except ItemError:  # a value the extractor let through: keep the serving part
                        failed = True
                        try:
                            b.add({k: item[k] for k in SERVING_FIELDS if k in item}, now)
                        except ItemError:
                            pass  # not even the serving part validates: counted as a failure only
                self.extraction_failures += failed
            if len(b):
                self.submit(b.batch())
            return len(b)
