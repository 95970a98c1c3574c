"""Model quality on labelled events, label coverage, fairness.

    modelmon_labelled_events_total{model="demo",version="1.0.0"} 9000
    modelmon_correct_predictions_total{model="demo",version="1.0.0"} 8550
    modelmon_window_labelled_events{model="demo",window="5m"} 90000
    modelmon_label_coverage_ratio{model="demo",window="5m"} 0.99
    modelmon_quality_accuracy_ratio{model="demo",window="5m"} 0.95
    modelmon_label_delay_seconds_bucket{model="demo",le="60.0"} 8000
    modelmon_fairness_positive_prediction_ratio{model="demo",window="5m",group="north"} 0.31
    modelmon_fairness_disparate_impact_ratio{model="demo",window="5m",group="south"} 0.93
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..monitor import LABEL_DELAY_BUCKETS
from ..pipeline import Pipeline

#: QualityReport attribute -> (metric name, help).  Only computed values are exported.
QUALITY_GAUGES = {
    "accuracy": ("modelmon_quality_accuracy_ratio", "Share of labelled predictions that were correct in the window."),
    "precision": ("modelmon_quality_precision_ratio", "Precision (binary: positive class; multi-class: macro) in the window."),
    "recall": ("modelmon_quality_recall_ratio", "Recall (binary: positive class; multi-class: macro) in the window."),
    "f1": ("modelmon_quality_f1_ratio", "F1 score (binary: positive class; multi-class: macro) in the window."),
    "roc_auc": ("modelmon_quality_roc_auc_ratio", "ROC AUC of the scores in the window (binary classification)."),
    "mae": ("modelmon_quality_mean_absolute_error", "Mean absolute error in the window (regression, label units)."),
    "rmse": ("modelmon_quality_root_mean_squared_error", "Root mean squared error in the window (regression, label units)."),
}


class QualityCollector:
    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        labelled_total = CounterMetricFamily(
            "modelmon_labelled_events", "Predictions whose label is known, by the version that made them.", labels=["model", "version"]
        )
        correct_total = CounterMetricFamily(
            "modelmon_correct_predictions", "Labelled predictions that were correct (classification), by version.", labels=["model", "version"]
        )
        labelled = GaugeMetricFamily(
            "modelmon_window_labelled_events", "Labelled predictions held in the sliding window (labels arrived within it; sampled like the event window).",
            labels=["model", "window"],
        )
        coverage = GaugeMetricFamily(
            "modelmon_label_coverage_ratio", "Labelled predictions / predictions that arrived in the window (capped at 1).",
            labels=["model", "window"],
        )
        gauges = {k: GaugeMetricFamily(name, doc, labels=["model", "window"]) for k, (name, doc) in QUALITY_GAUGES.items()}
        group_rate = GaugeMetricFamily(
            "modelmon_fairness_positive_prediction_ratio", "Share of positive predictions per sensitive group.",
            labels=["model", "window", "group"],
        )
        group_acc = GaugeMetricFamily(
            "modelmon_fairness_group_accuracy_ratio", "Accuracy per sensitive group.", labels=["model", "window", "group"]
        )
        group_tpr = GaugeMetricFamily(
            "modelmon_fairness_true_positive_ratio", "True-positive rate (recall) per sensitive group.",
            labels=["model", "window", "group"],
        )
        dpd = GaugeMetricFamily(
            "modelmon_fairness_demographic_parity_difference",
            "Largest difference in positive-prediction rate between sensitive groups.", labels=["model", "window"],
        )
        eod = GaugeMetricFamily(
            "modelmon_fairness_equal_opportunity_difference",
            "Largest difference in true-positive rate between sensitive groups.", labels=["model", "window"],
        )
        group_events = GaugeMetricFamily(
            "modelmon_fairness_group_labelled_events", "Labelled predictions per sensitive group in the window.",
            labels=["model", "window", "group"],
        )
        group_di = GaugeMetricFamily(
            "modelmon_fairness_disparate_impact_ratio",
            "Positive-prediction rate of a group divided by the reference group's (four-fifths rule: alert below 0.8).",
            labels=["model", "window", "group"],
        )
        delay = HistogramMetricFamily(
            "modelmon_label_delay_seconds", "Time from a prediction to its label (0 for labels sent with the event).",
            labels=["model"],
        )
        for name, mon in self.pipeline.monitors.items():
            with mon.lock:
                quality_counts = {v: tuple(c) for v, c in mon.quality_counts.items()}
                # Every serving version exports 0 before its first label, so a
                # model whose labels never arrive shows coverage 0, not nothing.
                for version in mon.versions:
                    quality_counts.setdefault(version, (0, 0))
            for version, (n_labelled, n_correct) in quality_counts.items():
                labelled_total.add_metric([name, version], n_labelled)
                if mon.cfg.task == "classification":
                    correct_total.add_metric([name, version], n_correct)
            with mon.lock:
                cum = mon.label_delay_counts.cumsum()
                delay_sum = mon.label_delay_sum
            delay.add_metric(
                [name], [(repr(float(b)), int(c)) for b, c in zip(LABEL_DELAY_BUCKETS, cum[:-1])] + [("+Inf", int(cum[-1]))],
                delay_sum,
            )
            cov = mon.label_coverage()
            for window, n in mon.labelled_sizes().items():
                labelled.add_metric([name, window], n)
                if window in cov:
                    coverage.add_metric([name, window], cov[window])
                rep = mon.quality(window)
                for key, fam in gauges.items():
                    value = getattr(rep, key)
                    if value is not None:
                        fam.add_metric([name, window], value)
                for g, v in rep.group_positive_rate.items():
                    group_rate.add_metric([name, window, g], v)
                for g, v in rep.group_accuracy.items():
                    group_acc.add_metric([name, window, g], v)
                for g, v in rep.group_true_positive_rate.items():
                    group_tpr.add_metric([name, window, g], v)
                for g, v in rep.group_events.items():
                    group_events.add_metric([name, window, g], v)
                for g, v in rep.group_disparate_impact.items():
                    group_di.add_metric([name, window, g], v)
                if rep.demographic_parity_difference is not None:
                    dpd.add_metric([name, window], rep.demographic_parity_difference)
                if rep.equal_opportunity_difference is not None:
                    eod.add_metric([name, window], rep.equal_opportunity_difference)
        yield from (labelled_total, correct_total, labelled, coverage, delay, *gauges.values(),
                    group_rate, group_acc, group_tpr, group_events, group_di, dpd, eod)
