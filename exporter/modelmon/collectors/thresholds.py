"""Configured thresholds as gauges, so alert rules compare against them.

Rules join on the model (``on(model) group_left``), so a threshold changes per
model in the exporter's config without editing rules.

    modelmon_threshold_latency_p95_seconds{model="demo"} 0.2
    modelmon_threshold_throughput_min_requests_per_second{model="demo"} 500
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from ..pipeline import Pipeline

#: ThresholdsConfig field -> (metric name, help)
THRESHOLD_GAUGES = {
    "latency_p95_seconds": ("modelmon_threshold_latency_p95_seconds", "Alert when p95 latency exceeds this."),
    "throughput_min_requests_per_second": (
        "modelmon_threshold_throughput_min_requests_per_second", "Alert when the request rate falls below this."),
    "accuracy_min": ("modelmon_threshold_accuracy_min_ratio", "Alert when accuracy falls below this."),
    "error_ratio_max": ("modelmon_threshold_error_ratio_max", "Alert when the error ratio exceeds this."),
    "dataset_drift_share": ("modelmon_threshold_dataset_drift_share_ratio", "Dataset drifts when this share of features drift."),
    "min_labelled_events": ("modelmon_threshold_min_labelled_events", "Quality alerts need at least this many labelled events."),
    "label_coverage_min": ("modelmon_threshold_label_coverage_min_ratio", "Alert when label coverage falls below this."),
    "missing_ratio_max": ("modelmon_threshold_missing_ratio_max", "Alert when a feature's missing ratio exceeds this."),
    "out_of_range_ratio_max": ("modelmon_threshold_out_of_range_ratio_max",
                               "Alert when a feature's out-of-range ratio exceeds this."),
    "new_category_ratio_max": ("modelmon_threshold_new_category_ratio_max",
                               "Alert when a feature's new-category ratio exceeds this."),
    "release_accuracy_min": ("modelmon_threshold_release_accuracy_min_ratio", "Release gate: minimum accuracy to promote."),
}


class ThresholdCollector:
    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        fams = {k: GaugeMetricFamily(n, h, labels=["model"]) for k, (n, h) in THRESHOLD_GAUGES.items()}
        for name, mon in self.pipeline.monitors.items():
            for key, fam in fams.items():
                fam.add_metric([name], float(getattr(mon.cfg.thresholds, key)))
        yield from fams.values()
