"""Quality and fairness: is the model still right, and equally right for
every group?

Classification metrics (accuracy, precision, recall, F1, ROC AUC) or
regression errors (MAE, RMSE) on the labelled window, whether enough labels
arrive and how late, and per-group rates with the fairness differences.
Quality gauges exist only once they can be computed (never a misleading 0), so
a panel without labels yet says so in its "no value" text.
"""

from __future__ import annotations

from .common import (
    COUNT, EPS, LABEL_COLUMNS, MERGE, PLAIN, RATIO, SECONDS, base_vars, organize, rate, sel, stat, table,
    timeseries, window_var,
)
from .model import Dashboard, Row, Step, Target

NO_LABELS = "No labelled predictions yet"

# The 60 s bucket; "60.0" from this exporter, "60" once Prometheus 3 normalises `le`.
WITHIN_MINUTE = sel("modelmon_label_delay_seconds_bucket", le="=~60|60.0")


def _w(metric: str, **labels: str) -> str:
    return sel(metric, window="$window", **labels)


def _accuracy_bound(side: str) -> str:
    """The accuracy estimate's band (its ``metric`` label clashes with sel()'s first parameter)."""
    return sel(f"modelmon_quality_estimated_{side}_bound_ratio", window="$window")[:-1] + ', metric="accuracy"}'


def _threshold(name: str) -> str:
    return f"max({sel(name)})"


def _delay(q: float) -> str:
    return f'histogram_quantile({q}, sum by (le) ({rate(sel("modelmon_label_delay_seconds_bucket"))}))'


def build() -> Dashboard:
    summary = Row("Summary", [
        stat("Accuracy", "Accuracy on the labelled predictions of the selected window.", RATIO,
             [Target(f'max({_w("modelmon_quality_accuracy_ratio")})', "accuracy")], graph=True, no_value=NO_LABELS),
        stat("Label coverage", "Labelled predictions / predictions in the window (capped at 1).", RATIO,
             [Target(f'max({_w("modelmon_label_coverage_ratio")})', "coverage")], graph=True),
        stat("Labelled in window", "Labelled predictions in the window (by label arrival time); quality alerts wait "
                                   "for modelmon_threshold_min_labelled_events of them.", COUNT,
             [Target(f'sum({_w("modelmon_window_labelled_events")})', "labelled")]),
        stat("Labels within 1 minute", "Share of labels that arrived within 60 s of their prediction (those sent "
                                       "with the prediction count as 0 s), from modelmon_label_delay_seconds.", RATIO,
             [Target(f"sum({rate(WITHIN_MINUTE)}) / sum({rate(sel('modelmon_label_delay_seconds_count'))})",
                     "within 1 min")],
             no_value=NO_LABELS),
        stat("Demographic parity difference", "Largest difference in positive-prediction rate between groups.", RATIO,
             [Target(f'max({_w("modelmon_fairness_demographic_parity_difference")})', "parity")]),
        stat("Equal opportunity difference", "Largest difference in true-positive rate between groups.", RATIO,
             [Target(f'max({_w("modelmon_fairness_equal_opportunity_difference")})', "opportunity")],
             no_value=NO_LABELS),
    ])
    metrics = Row("Model quality", [
        timeseries(
            "Classification metrics",
            "Accuracy, precision, recall, F1 (binary on the positive class, macro-averaged for multi-class) and ROC "
            "AUC on the labelled window. Dashed red: the accuracy alert minimum and the release gate.",
            RATIO,
            [Target(f'max({_w("modelmon_quality_accuracy_ratio")})', "accuracy"),
             Target(f'max({_w("modelmon_quality_precision_ratio")})', "precision"),
             Target(f'max({_w("modelmon_quality_recall_ratio")})', "recall"),
             Target(f'max({_w("modelmon_quality_f1_ratio")})', "F1"),
             Target(f'max({_w("modelmon_quality_roc_auc_ratio")})', "ROC AUC"),
             Target(_threshold("modelmon_threshold_accuracy_min_ratio"), "accuracy minimum", threshold=True),
             Target(_threshold("modelmon_threshold_release_accuracy_min_ratio"), "release gate", threshold=True)],
            no_value="Regression model, or no labels yet",
        ),
        timeseries(
            "Regression errors",
            "Mean absolute error and root mean squared error on the labelled window, in the label's own units "
            "(regression models).",
            PLAIN,
            [Target(f'max({_w("modelmon_quality_mean_absolute_error")})', "MAE"),
             Target(f'max({_w("modelmon_quality_root_mean_squared_error")})', "RMSE")],
            min=0, no_value="Classification model, or no labels yet",
        ),
    ])
    estimated = Row("Estimated without labels (CBPE)", [
        timeseries(
            "Estimated vs realized accuracy",
            "Accuracy estimated from the calibrated scores of every prediction in the window, labelled or not "
            "(modelmon_quality_estimated_accuracy_ratio, docs/estimation.md), with its sampling band (lower / upper "
            "bound), next to the realized accuracy once labels arrive. A realized value far outside the band means "
            "the scores are no longer calibrated or the label's meaning changed. Dashed red: the accuracy minimum.",
            RATIO,
            [Target(f'max({_w("modelmon_quality_estimated_accuracy_ratio")})', "estimated"),
             Target(f'min({_accuracy_bound("lower")})', "band lower"),
             Target(f'max({_accuracy_bound("upper")})', "band upper"),
             Target(f'max({_w("modelmon_quality_accuracy_ratio")})', "realized"),
             Target(_threshold("modelmon_threshold_accuracy_min_ratio"), "accuracy minimum", threshold=True)],
            no_value="Performance estimation not enabled for this model",
        ),
        timeseries(
            "Estimated metrics",
            "Precision, recall, F1 (positive class) and ROC AUC estimated without labels from the calibrated scores.",
            RATIO,
            [Target(f'max({_w("modelmon_quality_estimated_precision_ratio")})', "precision"),
             Target(f'max({_w("modelmon_quality_estimated_recall_ratio")})', "recall"),
             Target(f'max({_w("modelmon_quality_estimated_f1_ratio")})', "F1"),
             Target(f'max({_w("modelmon_quality_estimated_roc_auc_ratio")})', "ROC AUC")],
            no_value="Performance estimation not enabled for this model",
        ),
    ])
    labels = Row("Labels", [
        timeseries(
            "Label coverage by window",
            "Labelled / all predictions per window. Dashed red: the minimum coverage "
            "(modelmon_threshold_label_coverage_min_ratio); below it quality figures rest on a thin sample.",
            RATIO,
            [Target(f'max by (window) ({sel("modelmon_label_coverage_ratio")})', "{{window}} window"),
             Target(_threshold("modelmon_threshold_label_coverage_min_ratio"), "minimum", threshold=True)],
            width=8, min=0, max=1,
        ),
        timeseries(
            "Labelled predictions",
            "Labelled predictions held per window. Dashed red: the count quality alerts need "
            "(modelmon_threshold_min_labelled_events).",
            COUNT,
            [Target(f'max by (window) ({sel("modelmon_window_labelled_events")})', "{{window}} window"),
             Target(_threshold("modelmon_threshold_min_labelled_events"), "needed", threshold=True)],
            width=8, min=0,
        ),
        timeseries(
            "Label delay",
            "Time from prediction to label (modelmon_label_delay_seconds), p50, p95 and p99 over the rate "
            "interval. Labels sent with the prediction count as 0 s. Resolution is the bucket (1 s, 5 s, 15 s, 1 min, "
            "... 7 d): a quantile inside the first bucket reads up to 1 s even when every delay was 0.",
            SECONDS,
            [Target(_delay(0.5), "p50"), Target(_delay(0.95), "p95"), Target(_delay(0.99), "p99")],
            width=8, min=0, no_value="No late labels",
        ),
        timeseries(
            "Labels arriving",
            "Labelled predictions per second (modelmon_labelled_events_total), whether the label came with the "
            "prediction or later.",
            EPS,
            [Target(f'sum({rate(sel("modelmon_labelled_events_total"))})', "labelled/s")],
            width=24, height=6, min=0,
        ),
    ])
    per_group = Row("Fairness", [
        timeseries(
            "Positive prediction rate by group",
            "Share of positive predictions per sensitive group in the window (demographic parity compares these).",
            RATIO, [Target(f'max by (group) ({_w("modelmon_fairness_positive_prediction_ratio")})', "{{group}}")],
            width=8, min=0, max=1,
        ),
        timeseries(
            "Accuracy by group",
            "Accuracy per sensitive group on the labelled window.",
            RATIO, [Target(f'max by (group) ({_w("modelmon_fairness_group_accuracy_ratio")})', "{{group}}")],
            width=8, min=0, max=1,
        ),
        timeseries(
            "True-positive rate by group",
            "Recall on the positive class per sensitive group (equal opportunity compares these).",
            RATIO, [Target(f'max by (group) ({_w("modelmon_fairness_true_positive_ratio")})', "{{group}}")],
            width=8, min=0, max=1,
        ),
        table(
            "Per-group rates now",
            "Each sensitive group now: positive-prediction rate, accuracy and true-positive rate in the window.",
            RATIO,
            [Target(f'max by (group) ({_w("modelmon_fairness_positive_prediction_ratio")})', instant=True, table=True),
             Target(f'max by (group) ({_w("modelmon_fairness_group_accuracy_ratio")})', instant=True, table=True),
             Target(f'max by (group) ({_w("modelmon_fairness_true_positive_ratio")})', instant=True, table=True),
             Target(f'max by (group) ({_w("modelmon_fairness_disparate_impact_ratio")})', instant=True, table=True),
             Target(f'max by (group) ({_w("modelmon_fairness_group_labelled_events")})', instant=True, table=True)],
            width=12, transformations=[MERGE, organize(LABEL_COLUMNS, {
                "Value #A": "positive rate", "Value #B": "accuracy", "Value #C": "true-positive rate",
                "Value #D": "disparate impact", "Value #E": "labelled"})],
            decimals=3,
            overrides=[{"matcher": {"id": "byName", "options": "labelled"},
                        "properties": [{"id": "unit", "value": COUNT}, {"id": "decimals", "value": 0}]},
                       {"matcher": {"id": "byName", "options": "disparate impact"},
                        "properties": [{"id": "unit", "value": PLAIN}]}],
        ),
        timeseries(
            "Fairness differences",
            "Largest between-group difference in positive-prediction rate (demographic parity) and in true-positive "
            "rate (equal opportunity). Dashed: 0.1, a common rule of thumb (not an alert threshold).",
            RATIO,
            [Target(f'max({_w("modelmon_fairness_demographic_parity_difference")})', "demographic parity"),
             Target(f'max({_w("modelmon_fairness_equal_opportunity_difference")})', "equal opportunity")],
            width=12, min=0, steps=[Step("green"), Step("orange", 0.1)],
        ),
        timeseries(
            "Disparate impact by group",
            "Positive-prediction rate of each group divided by that of the reference group "
            "(fairness.reference_group). Dashed: 0.8, the four-fifths rule; below it the group is selected "
            "markedly less often.",
            PLAIN, [Target(f'max by (group) ({_w("modelmon_fairness_disparate_impact_ratio")})', "{{group}}")],
            width=24, min=0, steps=[Step("orange"), Step("green", 0.8)],
        ),
    ])
    return Dashboard(
        uid="modelmon-quality",
        title="modelmon / Quality and fairness",
        description="Is the model still right, and equally right for every group? Quality on labelled predictions, "
                    "label coverage and delay, per-group rates and fairness differences.",
        rows=[summary, metrics, estimated, labels, per_group],
        variables=base_vars(window_var()),
    )
