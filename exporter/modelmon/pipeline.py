"""The event pipeline: the one path every source feeds.

``source -> Pipeline.submit() -> ModelMonitor (windows, counters) -> collectors``

The pipeline owns the per-model monitors and the exporter's own health
counters (events accepted per model and source, rejected per source and
reason).  Sources validate what they receive and call :meth:`Pipeline.reject`
for what they refuse, with a reason from :data:`REJECT_REASONS`, so the
``reason`` label stays a small fixed set.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

from .config import Config
from .drift.reference import ReferenceProfile
from .events import Event, EventBatch
from .monitor import ModelMonitor

log = logging.getLogger(__name__)

#: Every value the ``reason`` label of ``modelmon_events_rejected_total`` can take.
REJECT_REASONS = (
    "malformed",  # not JSON / NDJSON, or not an object
    "invalid_field",  # a field of the wrong type or out of range
    "non_finite",  # NaN or infinity where a number is required
    "unknown_model",
    "unknown_feature",
    "body_too_large",
    "unsupported_media_type",  # a Content-Type other than JSON / NDJSON (415)
    "unauthorized",
    "overloaded",  # shed under load
    "unknown_id",  # a label for an event the join buffer does not hold
)
#: Every value of the ``source`` label.
SOURCES = ("simulator", "api", "proxy", "client", "cloudevents")


class Pipeline:
    """Routes events to their model's monitor and counts what was accepted or rejected."""

    def __init__(self, config: Config, profiles: dict[str, ReferenceProfile | None], clock: Callable[[], float] = time.time):
        self.config = config
        self.clock = clock
        self.monitors: dict[str, ModelMonitor] = {
            m.name: ModelMonitor(m, config, profiles.get(m.name), clock=clock) for m in config.models
        }
        self._lock = threading.Lock()
        self.accepted: dict[tuple[str, str], int] = {}
        self.rejected: dict[tuple[str, str], int] = {(s, r): 0 for s in SOURCES for r in REJECT_REASONS}
        self.started = clock()
        #: Callbacks run on every accepted batch (structured logs, label join...).
        self.listeners: list[Callable[[EventBatch], None]] = []

    def reconfigure(self, config: Config, profiles: dict[str, ReferenceProfile | None], keep: set[str]) -> None:
        """Switch to ``config`` (a reload): the monitors of the models in ``keep``
        (definition and reference unchanged) carry on with their counters and
        windows; the others start afresh; models no longer configured go.  The
        monitor map is replaced in one assignment, so a scrape sees either the
        old set or the new one.  The accepted-events counters (exporter health)
        carry on for every model still configured."""
        monitors = {}
        for m in config.models:
            old = self.monitors.get(m.name)
            monitors[m.name] = old if (old is not None and m.name in keep) else ModelMonitor(
                m, config, profiles.get(m.name), clock=self.clock)
        with self._lock:
            self.monitors = monitors
            self.config = config
            self.accepted = {k: v for k, v in self.accepted.items() if k[0] in monitors}

    def submit(self, batch: EventBatch) -> None:
        """Accept a validated batch of one model's events."""
        mon = self.monitors.get(batch.model)
        if mon is None:
            self.reject(batch.source, "unknown_model", len(batch))
            return
        mon.observe(batch)
        with self._lock:
            key = (batch.model, batch.source)
            self.accepted[key] = self.accepted.get(key, 0) + len(batch)
        for listener in self.listeners:
            try:
                listener(batch)
            except Exception:  # a listener must never lose events for the others
                log.exception("event listener failed")

    def submit_events(self, events: Iterable[Event]) -> None:
        """Row-form convenience: group by model and submit."""
        by_model: dict[tuple[str, str], list[Event]] = {}
        for e in events:
            by_model.setdefault((e.model, e.source), []).append(e)
        for evs in by_model.values():
            self.submit(EventBatch.from_events(evs))

    def counts(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """Copies of the accepted ``{(model, source): n}`` and rejected ``{(source, reason): n}`` counters."""
        with self._lock:
            return dict(self.accepted), dict(self.rejected)

    def reject(self, source: str, reason: str, n: int = 1) -> None:
        if reason not in REJECT_REASONS:
            raise ValueError(f"unknown reject reason {reason!r}")
        with self._lock:
            key = (source, reason)
            self.rejected[key] = self.rejected.get(key, 0) + n
