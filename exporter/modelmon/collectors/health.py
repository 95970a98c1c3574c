"""The exporter's own health.

    modelmon_build_info{version="0.1.0",python_version="3.11.7"} 1
    modelmon_events_accepted_total{model="demo",source="simulator"} 12000
    modelmon_events_rejected_total{source="api",reason="malformed"} 3
    modelmon_collector_duration_seconds{collector="drift"} 0.012
"""

from __future__ import annotations

import platform
import time
from typing import Any, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .. import __version__
from ..pipeline import Pipeline


class _Timed:
    """Wraps a collector to record how long its last collection took."""

    def __init__(self, inner: Any, durations: dict[str, float]):
        self.inner = inner
        self.durations = durations
        self.name = type(inner).__name__.removesuffix("Collector").lower()

    def collect(self) -> Iterator[Metric]:
        t0 = time.perf_counter()
        metrics = list(self.inner.collect())
        self.durations[self.name] = time.perf_counter() - t0
        return iter(metrics)


class HealthCollector:
    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.durations: dict[str, float] = {}

    def timed(self, collector: Any) -> _Timed:
        return _Timed(collector, self.durations)

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily("modelmon_build_info", "modelmon build (value is always 1).", labels=["version", "python_version"])
        build.add_metric([__version__, platform.python_version()], 1)
        start = GaugeMetricFamily("modelmon_exporter_start_time_seconds", "When the exporter started.")
        start.add_metric([], self.pipeline.started)
        accepted = CounterMetricFamily("modelmon_events_accepted", "Events accepted into the pipeline.", labels=["model", "source"])
        rejected = CounterMetricFamily(
            "modelmon_events_rejected", "Events or requests refused, by source and bounded reason.", labels=["source", "reason"]
        )
        acc, rej = self.pipeline.counts()
        sim = self.pipeline.config.simulator
        for name in self.pipeline.monitors:
            # Export 0 before the first event so rate() and absent() work from the start.
            if not any(model == name for model, _ in acc):
                acc[(name, "simulator" if sim.enabled and name == sim.model else "api")] = 0
        for (model, source), n in sorted(acc.items()):
            accepted.add_metric([model, source], n)
        for (source, reason), n in sorted(rej.items()):
            rejected.add_metric([source, reason], n)
        dur = GaugeMetricFamily(
            "modelmon_collector_duration_seconds", "Wall time of each collector's previous collection.", labels=["collector"]
        )
        for name, d in sorted(self.durations.items()):
            dur.add_metric([name], d)
        yield from (build, start, accepted, rejected, dur)
