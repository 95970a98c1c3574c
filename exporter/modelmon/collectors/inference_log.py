"""The inference log's own health (``logs.enabled``): lines written, and writes that failed.

    modelmon_inference_log_lines_written_total 12000
    modelmon_inference_log_write_failures_total 3
    modelmon_inference_log_lines_dropped_total 150

A failed write loses log lines only (the events were monitored all the same),
so an alert on ``increase(modelmon_inference_log_write_failures_total[10m]) > 0``
is what tells that the audit trail has a gap.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from ..inference_log import InferenceLogger


class InferenceLogCollector:
    """Reads an :class:`~modelmon.inference_log.InferenceLogger`'s counters."""

    def __init__(self, logger: InferenceLogger):
        self.logger = logger

    def collect(self) -> Iterator[Metric]:
        lg = self.logger
        yield CounterMetricFamily("modelmon_inference_log_lines_written",
                                  "Inference log lines written (one per logged event).", value=lg.lines_written)
        yield CounterMetricFamily(
            "modelmon_inference_log_write_failures",
            "Inference log writes (one per batch of events) that failed: disk full, permission denied, "
            "logs.output's directory gone.  The events were still monitored; their log lines were dropped.",
            value=lg.write_failures)
        yield CounterMetricFamily("modelmon_inference_log_lines_dropped",
                                  "Inference log lines lost to failed writes.", value=lg.lines_dropped)
