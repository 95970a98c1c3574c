"""Data drift: is the model's input still like its reference data, and which
features moved, how much and since when?

Per-feature scores against their thresholds (table and time series), test
p-values, the dataset-level drifted share, how many values the windows hold
(too few and the methods stay silent), data-quality rates, fleet-wide PSI from
the recording rule (summed across replicas), and the reference-vs-current
distribution of each feature from the frozen bin counts.
"""

from __future__ import annotations

from .common import (
    COUNT, LABEL_COLUMNS, MERGE, PLAIN, RATIO, SECONDS, base_vars, barchart, organize, sel, stat, table,
    timeseries, value_mapping, window_var,
)
from .explain import explain_row
from .model import Dashboard, Panel, Row, Step, Target, Variable

DRIFT_LABELS = "job, instance, model, feature, method, window"


def _drift(metric: str) -> str:
    return sel(metric, window="$window", method="=~$method", feature="=~$feature")


def method_var() -> Variable:
    return Variable(
        "method", "Method", "query",
        'label_values(modelmon_drift_score{job=~"$job", instance=~"$instance", model="$model"}, method)',
        "Drift methods configured for the model (ks, psi, wasserstein, jensenshannon, chisquare, meanstd).",
        include_all=True, multi=True, all_value=".+", current="$__all",
    )


def feature_var() -> Variable:
    return Variable(
        "feature", "Feature", "query",
        'label_values(modelmon_feature_values{job=~"$job", instance=~"$instance", model="$model"}, feature)',
        "Features of the model; the distribution panels repeat once per selected feature.",
        include_all=True, multi=True, all_value=".+", current="$__all",
    )


def _quality(title: str, metric: str, threshold: str, what: str) -> Panel:
    return timeseries(
        title, f"{what} per feature in the selected window. Dashed red: the model's limit ({threshold}).", RATIO,
        [Target(f'max by (feature) ({sel(metric, window="$window", feature="=~$feature")})', "{{feature}}"),
         Target(f"max({sel(threshold)})", "limit", threshold=True)],
        width=8, min=0,
    )


def _binned(expr: str) -> str:
    # Zero-pad one-digit numerical bins ("3" -> "03") so bins sort in order as
    # text; categorical bins pass unchanged.
    return f'label_replace({expr}, "bin", "0$1", "bin", "([0-9])")'


def build() -> Dashboard:
    summary = Row("Summary", [
        stat("Dataset drift", "1 when the share of drifted features reaches the model's dataset_drift_share "
                              "(modelmon_dataset_drift_detected) in the selected window.", PLAIN,
             [Target(f'max({sel("modelmon_dataset_drift_detected", window="$window")})', "dataset drift")],
             color_mode="background", mappings=[value_mapping({"0": ("No drift", "green"), "1": ("Drift", "red")})]),
        stat("Drifted feature share", "Share of evaluated features whose primary method flags drift "
                                      "(modelmon_dataset_drifted_features_ratio).", RATIO,
             [Target(f'max({sel("modelmon_dataset_drifted_features_ratio", window="$window")})', "share")], graph=True),
        stat("Features flagged", "Features that at least one selected method flags as drifted now.", COUNT,
             [Target(f'sum(max by (feature) ({_drift("modelmon_drift_detected")}))', "features")]),
        stat("Events in window", "Events held in the selected sliding window (modelmon_window_events): the sample "
                                 "the drift methods compare with the reference.", COUNT,
             [Target(f'sum({sel("modelmon_window_events", window="$window")})', "events")]),
        stat("Reference rows", "Rows in the frozen reference dataset (modelmon_reference_rows).", COUNT,
             [Target(f'max({sel("modelmon_reference_rows")})', "rows")]),
        stat("Drift result age", "Seconds since drift was last computed for the window; drift is recomputed on "
                                 "scrape at most every drift.recompute_interval.", SECONDS,
             [Target(f'time() - max({sel("modelmon_drift_last_computation_timestamp_seconds", window="$window")})',
                     "age")]),
    ])
    per_feature = Row("Per feature", [
        table(
            "Drift score vs threshold",
            "Each feature and method now: the statistic, the configured threshold (a p-value bound for the tests "
            "ks and chisquare, a distance bound otherwise) and whether the method flags drift.",
            PLAIN,
            [Target(f"max by (feature, method) ({_drift('modelmon_drift_score')})", instant=True, table=True),
             Target(f"max by (feature, method) ({_drift('modelmon_drift_threshold')})", instant=True, table=True),
             Target(f"max by (feature, method) ({_drift('modelmon_drift_detected')})", instant=True, table=True)],
            width=10, height=10, sort_by="drifted",
            transformations=[MERGE, organize(LABEL_COLUMNS, {"Value #A": "score", "Value #B": "threshold",
                                                             "Value #C": "drifted"})],
            overrides=[{
                "matcher": {"id": "byName", "options": "drifted"},
                "properties": [
                    {"id": "mappings", "value": [value_mapping({"0": ("no", "green"), "1": ("DRIFT", "red")})]},
                    {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                ],
            }],
            decimals=3,
        ),
        timeseries(
            "Drift score relative to threshold",
            "Statistic ÷ threshold for the distance methods (psi, wasserstein, jensenshannon, meanstd): above the "
            "dashed line at 1 the feature drifts. Tests (ks, chisquare) are in the p-value panel.",
            PLAIN,
            [Target(f"{_drift('modelmon_drift_score')} / {_drift('modelmon_drift_threshold')} "
                    f"unless on({DRIFT_LABELS}) {_drift('modelmon_drift_p_value')}", "{{feature}} {{method}}")],
            width=14, height=10, min=0, steps=[Step("green"), Step("red", 1)],
        ),
        timeseries(
            "Test p-values",
            "P-values of the statistical tests (ks, chisquare) per feature, log scale. Dashed red: the method's "
            "p-value bound; below it the test rejects 'same distribution'.",
            PLAIN,
            [Target(f"{_drift('modelmon_drift_p_value')}", "{{feature}} {{method}}"),
             Target(f"max by (method) ({_drift('modelmon_drift_threshold')} and on({DRIFT_LABELS}) "
                    f"{_drift('modelmon_drift_p_value')})", "{{method}} bound", threshold=True)],
            log=True, fill=0,
            no_value="No test for this model: ks / chisquare run when the reference has at most "
                     "drift.small_sample_max rows, or when drift.methods names them",
        ),
        timeseries(
            "Drift scores",
            "Raw statistic per feature and method (units depend on the method: KS D, PSI, normalised Wasserstein, "
            "JS distance, chi-square, mean/std score).",
            PLAIN,
            [Target(f"{_drift('modelmon_drift_score')}", "{{feature}} {{method}}")],
            min=0, fill=0,
        ),
    ])
    dataset = Row("Dataset and samples", [
        timeseries(
            "Dataset drift share",
            "Share of features flagged by their primary method, per window. Dashed red: the share that declares "
            "dataset drift (modelmon_threshold_dataset_drift_share_ratio).",
            RATIO,
            [Target(f'max by (window) ({sel("modelmon_dataset_drifted_features_ratio")})', "{{window}} window"),
             Target(f'max({sel("modelmon_threshold_dataset_drift_share_ratio")})', "dataset drift at", threshold=True)],
            min=0, max=1,
        ),
        timeseries(
            "Window sample counts",
            "Non-missing values per feature in the selected window (modelmon_feature_values) and all events in it. "
            "Dashed red: the values a method needs before it scores (modelmon_drift_min_values); below it the "
            "feature gets no drift score.",
            COUNT,
            [Target(f'max by (feature) ({sel("modelmon_feature_values", window="$window", feature="=~$feature")})',
                    "{{feature}}"),
             Target(f'sum({sel("modelmon_window_events", window="$window")})', "all events"),
             Target(f'max({sel("modelmon_drift_min_values", feature="=~$feature")})', "needed for a score",
                    threshold=True)],
            min=0,
        ),
    ])
    multivariate = Row("Multivariate drift (PCA reconstruction)", [
        timeseries(
            "Reconstruction error",
            "Mean PCA reconstruction error of the window's rows (modelmon_multivariate_drift_reconstruction_error, "
            "docs/estimation.md): it rises when the features stop varying together as in the reference, even when "
            "each one alone looks unchanged. Dashed red: the reference band for a window of this size.",
            PLAIN,
            [Target(f'max({sel("modelmon_multivariate_drift_reconstruction_error", window="$window")})', "error"),
             Target(f'max({sel("modelmon_multivariate_drift_upper_threshold", window="$window")})', "upper threshold",
                    threshold=True),
             Target(f'min({sel("modelmon_multivariate_drift_lower_threshold", window="$window")})', "lower threshold",
                    threshold=True)],
            no_value="Multivariate drift not enabled for this model",
        ),
        timeseries(
            "Share of the error by feature",
            "Each feature's share of the window's squared reconstruction residuals: the features a broken relation "
            "runs through.",
            RATIO,
            [Target(f'max by (feature) ({sel("modelmon_multivariate_drift_feature_error_ratio", window="$window")})',
                    "{{feature}}")],
            min=0, max=1, no_value="Multivariate drift not enabled for this model",
        ),
    ])
    data_quality = Row("Data quality", [
        _quality("Missing values", "modelmon_feature_missing_ratio", "modelmon_threshold_missing_ratio_max",
                 "Share of events missing the feature"),
        _quality("Out of reference range", "modelmon_feature_out_of_range_ratio",
                 "modelmon_threshold_out_of_range_ratio_max",
                 "Numerical features: share of values outside the reference [min, max]"),
        _quality("New categories", "modelmon_feature_new_category_ratio", "modelmon_threshold_new_category_ratio_max",
                 "Categorical features: share of values in categories absent from the reference"),
    ])
    fleet = Row("Fleet-wide drift (all replicas)", [
        timeseries(
            "Fleet-wide PSI (5m)",
            "Population stability index per feature computed in PromQL from the bin counters summed over all "
            "replicas (recording rule model_feature:modelmon_fleet_psi:rate5m). Dashed: 0.1 (moderate shift) and "
            "0.25 (significant shift), the usual PSI rules of thumb.",
            PLAIN,
            [Target('max by (feature) (model_feature:modelmon_fleet_psi:rate5m{model="$model", feature=~"$feature"})',
                    "{{feature}}")],
            min=0, steps=[Step("green"), Step("orange", 0.1), Step("red", 0.25)],
        ),
        timeseries(
            "Fleet-wide Jensen-Shannon distance (5m)",
            "Jensen-Shannon distance (base 2, 0..1) per feature between the fleet's last 5 minutes of values and "
            "the reference, from the summed bin counters (recording rule "
            "model_feature:modelmon_fleet_jensenshannon:rate5m). Dashed: 0.1, the default drift bound.",
            PLAIN,
            [Target('max by (feature) (model_feature:modelmon_fleet_jensenshannon:rate5m{model="$model", '
                    'feature=~"$feature"})', "{{feature}}")],
            min=0, max=1, steps=[Step("green"), Step("red", 0.1)],
        ),
    ])
    bins = sel("modelmon_feature_bin_values_total", feature="$feature")
    distributions = Row("Reference vs current distribution", [
        barchart(
            "Distribution of $feature",
            "Share of values per bin: the frozen reference (modelmon_reference_bin_ratio) against the values seen "
            "over the dashboard's time range (modelmon_feature_bin_values_total). Numerical bins 00 and the last "
            "are below the reference minimum and above its maximum; __other__ holds unknown categories.",
            RATIO,
            [Target(_binned(f'max by (bin) ({sel("modelmon_reference_bin_ratio", feature="$feature")})'),
                    "reference", instant=True, table=True),
             Target(_binned(f"sum by (bin) (increase({bins}[$__range])) / scalar(sum(increase({bins}[$__range])))"),
                    "current", instant=True, table=True)],
            x_field="bin", repeat="feature", max_per_row=3,
            transformations=[MERGE, organize(["Time"], {"Value #A": "reference", "Value #B": "current"}),
                             {"id": "sortBy", "options": {"fields": {}, "sort": [{"desc": False, "field": "bin"}]}}],
        ),
    ])
    return Dashboard(
        uid="modelmon-drift",
        title="modelmon / Data drift",
        description="Is the input still like the reference data? Per-feature drift against thresholds, p-values, "
                    "dataset drift, sample counts, data quality, fleet-wide PSI and distributions.",
        rows=[summary, per_feature, dataset, multivariate, explain_row(), data_quality, fleet, distributions],
        variables=base_vars(window_var(), method_var(), feature_var()),
    )
