"""Per-feature drift, dataset drift, data quality and fleet-mergeable bin counts.

    modelmon_drift_score{model="demo",feature="age",method="psi",window="5m"} 0.004
    modelmon_drift_p_value{model="demo",feature="age",method="ks",window="5m"} 0.61
    modelmon_drift_threshold{model="demo",feature="age",method="psi",window="5m"} 0.1
    modelmon_drift_detected{model="demo",feature="age",method="psi",window="5m"} 0
    modelmon_feature_values{model="demo",feature="age",window="5m"} 100000
    modelmon_drift_min_values{model="demo",feature="age",method="wasserstein"} 1000
    modelmon_dataset_drifted_features_ratio{model="demo",window="5m"} 0.0
    modelmon_feature_bin_values_total{model="demo",feature="age",bin="3"} 1520
    modelmon_reference_bin_ratio{model="demo",feature="age",bin="3"} 0.1

Scores are computed when a scrape asks and cached for the model's
``drift.recompute_interval`` (HELP texts say so).  No score is exported for a
window holding fewer values than the method needs (``drift.min_samples``,
raised for distance methods to their noise floor: ``modelmon_drift_min_values``);
``modelmon_feature_values`` always is, so alerts can require enough data.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..pipeline import Pipeline

CACHED = " Recomputed at most every drift.recompute_interval seconds and cached between scrapes."


class DriftCollector:
    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        lf = ["model", "feature", "method", "window"]
        score = GaugeMetricFamily("modelmon_drift_score", "Drift statistic of a feature in the window vs the reference." + CACHED, labels=lf)
        pval = GaugeMetricFamily("modelmon_drift_p_value", "P-value of the drift test (tests only)." + CACHED, labels=lf)
        thr = GaugeMetricFamily(
            "modelmon_drift_threshold",
            "Configured drift threshold (a p-value bound for tests, a distance bound otherwise).", labels=lf,
        )
        detected = GaugeMetricFamily("modelmon_drift_detected", "1 when the method flags drift in the window." + CACHED, labels=lf)
        min_values = GaugeMetricFamily(
            "modelmon_drift_min_values",
            "Fewest values a window needs before the method is scored (drift.min_samples, raised for distances "
            "to their no-drift noise floor); below it modelmon_drift_score is absent.",
            labels=["model", "feature", "method"],
        )
        values = GaugeMetricFamily(
            "modelmon_feature_values", "Non-missing values of a feature in the window.", labels=["model", "feature", "window"]
        )
        missing = GaugeMetricFamily(
            "modelmon_feature_missing_ratio", "Share of events in the window missing the feature.", labels=["model", "feature", "window"]
        )
        oor = GaugeMetricFamily(
            "modelmon_feature_out_of_range_ratio", "Share of values outside the reference [min, max].",
            labels=["model", "feature", "window"],
        )
        newcat = GaugeMetricFamily(
            "modelmon_feature_new_category_ratio", "Share of values in categories absent from the reference.",
            labels=["model", "feature", "window"],
        )
        share = GaugeMetricFamily(
            "modelmon_dataset_drifted_features_ratio", "Share of evaluated features whose primary method flags drift." + CACHED,
            labels=["model", "window"],
        )
        ds_detected = GaugeMetricFamily(
            "modelmon_dataset_drift_detected", "1 when the drifted-feature share reaches the dataset threshold." + CACHED,
            labels=["model", "window"],
        )
        duration = GaugeMetricFamily(
            "modelmon_drift_computation_seconds", "Wall time of the last drift computation of the window.", labels=["model", "window"]
        )
        last = GaugeMetricFamily(
            "modelmon_drift_last_computation_timestamp_seconds", "When drift was last computed for the window.",
            labels=["model", "window"],
        )
        bins = CounterMetricFamily(
            "modelmon_feature_bin_values",
            "Values per reference bin (numerical: quantile bin, 0 = below and the last = above the reference range; "
            "categorical: category). Sum across replicas for fleet-wide drift.",
            labels=["model", "feature", "bin"],
        )
        ref_bins = GaugeMetricFamily(
            "modelmon_reference_bin_ratio", "Share of the reference in each bin (same bins as modelmon_feature_bin_values_total).",
            labels=["model", "feature", "bin"],
        )
        ref_info = GaugeMetricFamily(
            "modelmon_reference_info", "The frozen reference profile in use (value is always 1).", labels=["model", "profile_hash"]
        )
        ref_rows = GaugeMetricFamily("modelmon_reference_rows", "Rows in the reference dataset.", labels=["model"])
        for name, mon in self.pipeline.monitors.items():
            if mon.drift_engine is None or mon.profile is None:
                continue
            ref_info.add_metric([name, mon.profile.hash], 1)
            for plan in mon.drift_engine.plans:
                for (method, _), required in zip(plan.methods, plan.required):
                    min_values.add_metric([name, plan.name, method], required)
            ref_rows.add_metric([name], mon.profile.rows)
            with mon.lock:
                num_totals = mon.num_bin_totals.copy()
                cat_totals = mon.cat_totals.copy()
            for i, prof in enumerate(mon.num_profiles):
                for j, (label, frac) in enumerate(zip(prof.slot_labels(), prof.fractions())):
                    bins.add_metric([name, prof.name, label], int(num_totals[i, j]))
                    ref_bins.add_metric([name, prof.name, label], float(frac))
            for i, prof in enumerate(mon.cat_profiles):
                for j, (label, frac) in enumerate(zip(prof.slot_labels(), prof.fractions())):
                    bins.add_metric([name, prof.name, label], int(cat_totals[i, j]))
                    ref_bins.add_metric([name, prof.name, label], float(frac))
            for window in mon.windows:
                rep = mon.drift(window)
                if rep is None:
                    continue
                duration.add_metric([name, window], rep.duration_seconds)
                last.add_metric([name, window], rep.timestamp)
                if rep.drifted_share is not None:
                    share.add_metric([name, window], rep.drifted_share)
                    ds_detected.add_metric([name, window], int(bool(rep.dataset_drifted)))
                for fname, fr in rep.features.items():
                    values.add_metric([name, fname, window], fr.n)
                    missing.add_metric([name, fname, window], fr.missing_ratio)
                    if fr.out_of_range_ratio is not None:
                        oor.add_metric([name, fname, window], fr.out_of_range_ratio)
                    if fr.new_category_ratio is not None:
                        newcat.add_metric([name, fname, window], fr.new_category_ratio)
                    for method, res in fr.results.items():
                        labels = [name, fname, method, window]
                        plan_thr = next(t for m, t in mon.drift_engine.plans_by_name[fname].methods if m == method)
                        thr.add_metric(labels, plan_thr)
                        if res is None:
                            continue
                        score.add_metric(labels, res.statistic)
                        if res.p_value is not None:
                            pval.add_metric(labels, res.p_value)
                        detected.add_metric(labels, int(res.drifted))
        yield from (score, pval, thr, detected, min_values, values, missing, oor, newcat, share, ds_detected,
                    duration, last, bins, ref_bins, ref_info, ref_rows)
