"""Serving metrics: requests, errors, latency, model version.

    modelmon_requests_total{model="demo",version="1.0.0"} 12000
    modelmon_request_errors_total{model="demo",version="1.0.0",reason="error"} 120
    modelmon_request_duration_seconds_bucket{model="demo",version="1.0.0",le="0.2"} 11990
    modelmon_model_info{model="demo",version="1.0.0",task="classification"} 1
    modelmon_model_version_first_seen_timestamp_seconds{model="demo",version="1.0.0"} 1.7e9
    modelmon_window_events{model="demo",window="5m"} 100000
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..monitor import LATENCY_BUCKETS
from ..pipeline import Pipeline


def _bound(b: float) -> str:
    return repr(float(b)) if b != int(b) else f"{b:.1f}"


class ServingCollector:
    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("modelmon_requests", "Predictions served (successful or not).", labels=["model", "version"])
        errors = CounterMetricFamily(
            "modelmon_request_errors", "Predictions that failed, by bounded reason.", labels=["model", "version", "reason"]
        )
        latency = HistogramMetricFamily(
            "modelmon_request_duration_seconds", "Time to serve one prediction.", labels=["model", "version"]
        )
        info = GaugeMetricFamily(
            "modelmon_model_info", "Model versions serving traffic in the shortest window (value is always 1).",
            labels=["model", "version", "task"],
        )
        first_seen = GaugeMetricFamily(
            "modelmon_model_version_first_seen_timestamp_seconds",
            "When the exporter first saw a version serve traffic (a deploy marker).", labels=["model", "version"],
        )
        events = GaugeMetricFamily(
            "modelmon_window_events",
            "Events held in the sliding window: all of them, or a uniform sample of at most max_events under heavy traffic.",
            labels=["model", "window"],
        )
        now = self.pipeline.clock()
        shortest = min(w.duration_seconds for w in self.pipeline.config.windows)
        for name, mon in self.pipeline.monitors.items():
            with mon.lock:
                versions = {v: (st.requests, dict(st.errors), st.bucket_counts.copy(), st.latency_sum, st.first_seen, st.last_seen)
                            for v, st in mon.versions.items()}
            for version, (req, errs, buckets, lsum, first, last) in versions.items():
                requests.add_metric([name, version], req)
                for reason in mon.cfg.error_reasons + ["other"]:
                    if reason in errs or reason == mon.cfg.error_reasons[0]:
                        errors.add_metric([name, version, reason], errs.get(reason, 0))
                cum = buckets.cumsum()
                latency.add_metric(
                    [name, version],
                    [(_bound(b), int(c)) for b, c in zip(LATENCY_BUCKETS, cum[:-1])] + [("+Inf", int(cum[-1]))],
                    lsum,
                )
                first_seen.add_metric([name, version], first)
                if now - last <= shortest:
                    info.add_metric([name, version, mon.cfg.task], 1)
            for window, size in mon.window_sizes().items():
                events.add_metric([name, window], size)
        yield from (requests, errors, latency, info, first_seen, events)
