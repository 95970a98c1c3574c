"""Attribution importance and outlying inputs (docs/explainability.md).

    modelmon_feature_importance{model="demo",feature="credit_score",window="5m"} 0.64
    modelmon_feature_importance_ratio{model="demo",feature="credit_score",window="5m"} 0.37
    modelmon_reference_feature_importance_ratio{model="demo",feature="credit_score"} 0.36
    modelmon_feature_importance_rank_correlation{model="demo",window="5m"} 0.94
    modelmon_feature_importance_shift_detected{model="demo",window="5m"} 0
    modelmon_attribution_events{model="demo",window="5m"} 300000
    modelmon_threshold_importance_rank_correlation_min{model="demo"} 0.7
    modelmon_outlier_ratio{model="demo",window="5m"} 0.0051
    modelmon_outlier_window_scored_events{model="demo",window="5m"} 300000
    modelmon_reference_outlier_ratio{model="demo"} 0.005
    modelmon_outlier_score_threshold{model="demo"} 24.3
    modelmon_threshold_outlier_ratio_max_multiple{model="demo"} 3
    modelmon_outlier_events_total{model="demo"} 1520
    modelmon_outlier_scored_events_total{model="demo"} 300000
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..pipeline import Pipeline
from .drift import CACHED


class ExplainCollector:
    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        fw = ["model", "feature", "window"]
        mw = ["model", "window"]
        imp = GaugeMetricFamily("modelmon_feature_importance",
                                "Mean absolute attribution of the feature over the window's events." + CACHED, labels=fw)
        imp_ratio = GaugeMetricFamily("modelmon_feature_importance_ratio",
                                      "The feature's share of the summed importance in the window." + CACHED, labels=fw)
        ref_ratio = GaugeMetricFamily("modelmon_reference_feature_importance_ratio",
                                      "The feature's share of the summed importance in the reference.",
                                      labels=["model", "feature"])
        rank = GaugeMetricFamily("modelmon_feature_importance_rank_correlation",
                                 "Spearman correlation of the window's importance ranking with the reference's "
                                 "(absent while undefined)." + CACHED, labels=mw)
        shift = GaugeMetricFamily("modelmon_feature_importance_shift_detected",
                                  "1 when the rank correlation is below its threshold (window large enough)." + CACHED,
                                  labels=mw)
        attr_events = GaugeMetricFamily("modelmon_attribution_events",
                                        "Events of the window carrying attributions.", labels=mw)
        rank_min = GaugeMetricFamily("modelmon_threshold_importance_rank_correlation_min",
                                     "Alert when the importance rank correlation falls below this.", labels=["model"])
        ratio = GaugeMetricFamily("modelmon_outlier_ratio", "Share of the window's events whose outlier score exceeds "
                                  "the reference threshold.", labels=mw)
        scored = GaugeMetricFamily("modelmon_outlier_window_scored_events", "Events of the window given an outlier score.",
                                   labels=mw)
        ref_share = GaugeMetricFamily("modelmon_reference_outlier_ratio",
                                      "Share of the reference's own rows above the outlier threshold.", labels=["model"])
        thr = GaugeMetricFamily("modelmon_outlier_score_threshold",
                                "Outlier score threshold: the configured quantile of the reference's scores.",
                                labels=["model"])
        multiple = GaugeMetricFamily("modelmon_threshold_outlier_ratio_max_multiple",
                                     "Alert when the outlier ratio exceeds this multiple of the reference's.",
                                     labels=["model"])
        total = CounterMetricFamily("modelmon_outlier_events", "Events whose outlier score exceeded the threshold.",
                                    labels=["model"])
        scored_total = CounterMetricFamily("modelmon_outlier_scored_events", "Events given an outlier score.",
                                           labels=["model"])
        for name, mon in self.pipeline.monitors.items():
            om = mon.outlier_model
            if om is not None:
                ref_share.add_metric([name], om.reference_share)
                thr.add_metric([name], om.threshold)
                multiple.add_metric([name], mon.cfg.outliers.max_share_multiple)
                out, n = mon.outlier_totals()
                total.add_metric([name], out)
                scored_total.add_metric([name], n)
                for window in mon.windows:
                    res = mon.outlier_share(window)
                    scored.add_metric([name, window], 0 if res is None else res[1])
                    if res is not None:
                        ratio.add_metric([name, window], res[0])
            ip = mon.importance_profile
            if ip is None:
                continue
            rank_min.add_metric([name], mon.cfg.attributions.min_rank_correlation)
            for feature, share in zip(ip.features, ip.shares()):
                if math.isfinite(share):
                    ref_ratio.add_metric([name, feature], float(share))
            for window in mon.windows:
                rep = mon.importance(window)
                if rep is None:
                    continue
                attr_events.add_metric([name, window], rep.n)
                if rep.n == 0:
                    continue
                for feature, v, sh in zip(rep.features, rep.importance, rep.shares):
                    if math.isfinite(v):
                        imp.add_metric([name, feature, window], float(v))
                    if math.isfinite(sh):
                        imp_ratio.add_metric([name, feature, window], float(sh))
                if rep.rank_correlation is not None:
                    rank.add_metric([name, window], rep.rank_correlation)
                if rep.drifted is not None:
                    shift.add_metric([name, window], int(rep.drifted))
        yield from (imp, imp_ratio, ref_ratio, rank, shift, attr_events, rank_min,
                    ratio, scored, ref_share, thr, multiple, total, scored_total)
