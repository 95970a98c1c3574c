"""The KServe payload-logger sink's own health (``POST /api/v1/cloudevents``).

    modelmon_cloudevents_received_total{type="request"} 1200
    modelmon_cloudevents_received_total{type="response"} 1195
    modelmon_cloudevents_unpaired_total{type="request"} 5
    modelmon_cloudevents_refused_total{reason="unknown_model"} 0
    modelmon_cloudevents_pending 3
    modelmon_cloudevents_pending_bytes 2048
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class CloudEventsCollector:
    """Reads a :class:`~modelmon.sources.cloudevents.CloudEventsSink`'s counters."""

    def __init__(self, sink: Any):
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        s = self.sink
        received = CounterMetricFamily("modelmon_cloudevents_received",
                                       "KServe payload-logger CloudEvents taken, by type (request or response).",
                                       labels=["type"])
        unpaired = CounterMetricFamily(
            "modelmon_cloudevents_unpaired",
            "Requests or responses used without their other half (it did not arrive within cloudevents.join_horizon, "
            "or the join buffer was full); a request alone has no prediction, a response alone no features.",
            labels=["type"])
        for kind in ("request", "response"):
            received.add_metric([kind], s.received.get(kind, 0))
            unpaired.add_metric([kind], s.unpaired.get(kind, 0))
        refused = CounterMetricFamily(
            "modelmon_cloudevents_refused",
            "CloudEvents or payloads the sink could not use, by reason (event-level validation refusals are in "
            "modelmon_events_rejected_total{source=\"cloudevents\"}).", labels=["reason"])
        for reason, n in sorted(dict(s.refused).items()):
            refused.add_metric([reason], n)
        pending = GaugeMetricFamily("modelmon_cloudevents_pending",
                                    "Requests and responses waiting in the join buffer for their other half.")
        pending.add_metric([], len(s.buffer))
        pending_bytes = GaugeMetricFamily("modelmon_cloudevents_pending_bytes",
                                          "Body bytes held in the join buffer (bounded by cloudevents.max_pending_bytes).")
        pending_bytes.add_metric([], s.buffer.bytes)
        yield from (received, unpaired, refused, pending, pending_bytes)
