"""Label-free monitoring: estimated performance (CBPE) and multivariate drift.

    modelmon_quality_estimated_accuracy_ratio{model="demo",window="5m"} 0.95
    modelmon_quality_estimated_lower_bound_ratio{model="demo",window="5m",metric="accuracy"} 0.93
    modelmon_quality_estimated_upper_bound_ratio{model="demo",window="5m",metric="accuracy"} 0.97
    modelmon_quality_estimated_events{model="demo",window="5m"} 90000
    modelmon_threshold_estimation_min_events{model="demo"} 100
    modelmon_multivariate_drift_reconstruction_error{model="demo",window="5m"} 1.02
    modelmon_multivariate_drift_upper_threshold{model="demo",window="5m"} 1.03
    modelmon_multivariate_drift_lower_threshold{model="demo",window="5m"} 1.00
    modelmon_multivariate_drift_detected{model="demo",window="5m"} 0
    modelmon_multivariate_drift_feature_error_ratio{model="demo",window="5m",feature="age"} 0.18
    modelmon_multivariate_drift_events{model="demo",window="5m"} 90000

Computed when a scrape asks and cached for ``drift.recompute_interval``
seconds; estimates and the error are absent below the configured
``min_samples`` rows (the row counts are always exported).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from ..estimation.cbpe import METRICS
from ..pipeline import Pipeline

CACHED = " Recomputed at most every drift.recompute_interval seconds and cached between scrapes."
NAMES = {"accuracy": "accuracy", "precision": "precision", "recall": "recall", "f1": "F1", "roc_auc": "ROC AUC"}


class EstimationCollector:
    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        lw = ["model", "window"]
        est = {m: GaugeMetricFamily(f"modelmon_quality_estimated_{m}_ratio",
                                    f"{NAMES[m]} estimated without labels from the calibrated scores (CBPE)." + CACHED,
                                    labels=lw) for m in METRICS}
        lower = GaugeMetricFamily("modelmon_quality_estimated_lower_bound_ratio",
                                  "Lower end of the estimate's sampling band (estimate - sigmas x standard error, >= 0).",
                                  labels=[*lw, "metric"])
        upper = GaugeMetricFamily("modelmon_quality_estimated_upper_bound_ratio",
                                  "Upper end of the estimate's sampling band (estimate + sigmas x standard error, <= 1).",
                                  labels=[*lw, "metric"])
        est_n = GaugeMetricFamily("modelmon_quality_estimated_events",
                                  "Predictions with a score in the window: the rows the estimate is computed on.", labels=lw)
        est_min = GaugeMetricFamily("modelmon_threshold_estimation_min_events",
                                    "Estimated-quality alerts need at least this many scored predictions "
                                    "(performance_estimation.min_samples).", labels=["model"])
        err = GaugeMetricFamily("modelmon_multivariate_drift_reconstruction_error",
                                "Mean PCA reconstruction error of the window's rows (standardised units)." + CACHED, labels=lw)
        up = GaugeMetricFamily("modelmon_multivariate_drift_upper_threshold",
                               "Reference mean + sigmas x spread of the reconstruction error for a window of this size.",
                               labels=lw)
        lo = GaugeMetricFamily("modelmon_multivariate_drift_lower_threshold",
                               "Reference mean - sigmas x spread of the reconstruction error for a window of this size.",
                               labels=lw)
        det = GaugeMetricFamily("modelmon_multivariate_drift_detected",
                                "1 when the reconstruction error is outside its thresholds." + CACHED, labels=lw)
        share = GaugeMetricFamily("modelmon_multivariate_drift_feature_error_ratio",
                                  "Share of the window's squared reconstruction residuals carried by each feature.",
                                  labels=[*lw, "feature"])
        mv_n = GaugeMetricFamily("modelmon_multivariate_drift_events",
                                 "Rows in the window the reconstruction error is computed on.", labels=lw)
        for name, mon in self.pipeline.monitors.items():
            if mon.estimators.cbpe is not None:
                est_min.add_metric([name], mon.estimators.cbpe.min_rows)
            for window in mon.windows:
                res = mon.estimated_performance(window)
                if res is not None:
                    est_n.add_metric([name, window], res.n)
                    for metric, e in res.estimates.items():
                        est[metric].add_metric([name, window], e.value)
                        lower.add_metric([name, window, metric], e.lower)
                        upper.add_metric([name, window, metric], e.upper)
                mv = mon.multivariate(window)
                if mv is None:
                    continue
                mv_n.add_metric([name, window], mv.n)
                if mv.reconstruction_error is None or mv.lower is None or mv.upper is None:
                    continue
                err.add_metric([name, window], mv.reconstruction_error)
                up.add_metric([name, window], mv.upper)
                lo.add_metric([name, window], mv.lower)
                det.add_metric([name, window], int(mv.drifted))
                for feature, v in mv.feature_share.items():
                    share.add_metric([name, window, feature], v)
        yield from (*est.values(), lower, upper, est_n, est_min, err, up, lo, det, share, mv_n)
