"""Model overview: is the model serving well right now, and since when not?

Request rate, errors, latency and accuracy each against the model's own
configured limits (the ``modelmon_threshold_*`` gauges, so a per-model
threshold change moves the line), the alerts firing for the model, the version
serving, and deploy markers on every time series.
"""

from __future__ import annotations

from .common import (
    COUNT,
    LABEL_COLUMNS,
    PLAIN,
    RATIO,
    REQPS,
    SECONDS,
    base_vars,
    organize,
    rate,
    sel,
    stat,
    table,
    timeseries,
    value_mapping,
    window_var,
)
from .model import Annotation, Dashboard, Row, Step, Target

REQUESTS = sel("modelmon_requests_total")
ERRORS = sel("modelmon_request_errors_total")
BUCKETS = sel("modelmon_request_duration_seconds_bucket")
ALERTS = 'ALERTS{model="$model"}'


def _quantile(q: float) -> str:
    return f"histogram_quantile({q}, sum by (le) ({rate(BUCKETS)}))"


def _threshold(name: str) -> str:
    return f"max({sel(name)})"


ERROR_RATIO = f"sum({rate(ERRORS)}) / sum({rate(REQUESTS)})"
STREAM_ACCURACY = (f'sum({rate(sel("modelmon_correct_predictions_total"))}) / '
                   f'sum({rate(sel("modelmon_labelled_events_total"))})')


def build() -> Dashboard:
    now = Row("Now", [
        stat("Request rate", "Predictions served per second, all versions and replicas.", REQPS,
             [Target(f"sum({rate(REQUESTS)})", "requests/s")], graph=True),
        stat("Error ratio", "Failed predictions / all predictions, all reasons. Limit: modelmon_threshold_error_ratio_max.",
             RATIO, [Target(ERROR_RATIO, "errors")], graph=True),
        stat("p95 latency", "95th percentile time to serve a prediction, from the latency histogram.", SECONDS,
             [Target(_quantile(0.95), "p95")], graph=True),
        stat("Accuracy", "Accuracy on the labelled predictions of the selected window (modelmon_quality_accuracy_ratio). "
                         "Absent until labelled predictions arrive.", RATIO,
             [Target(f'max({sel("modelmon_quality_accuracy_ratio", window="$window")})', "accuracy")], graph=True),
        stat("Firing alerts", "Alerts firing for this model now (Prometheus ALERTS series). 0 when none fire.", COUNT,
             [Target('count(ALERTS{model="$model", alertstate="firing"}) or vector(0)', "firing")],
             color_mode="background", steps=[Step("green"), Step("red", 1)]),
        stat("Serving version", "Model version(s) that served traffic within the shortest window (modelmon_model_info).",
             PLAIN, [Target(f'max by (version) ({sel("modelmon_model_info")})', "{{version}}", instant=True)],
             text_mode="name"),
    ])
    serving = Row("Serving", [
        timeseries(
            "Request rate by version",
            "Predictions per second per model version. Dashed red: the minimum request rate "
            "(modelmon_threshold_throughput_min_requests_per_second); below it the model is starved or failing upstream.",
            REQPS,
            [Target(f"sum by (version) ({rate(REQUESTS)})", "{{version}}"),
             Target(_threshold("modelmon_threshold_throughput_min_requests_per_second"), "minimum", threshold=True)],
            min=0,
        ),
        timeseries(
            "Error ratio by reason",
            "Share of predictions that failed, per error reason. Dashed red: the maximum error ratio "
            "(modelmon_threshold_error_ratio_max).",
            RATIO,
            [Target(f"sum by (reason) ({rate(ERRORS)}) / ignoring(reason) group_left sum({rate(REQUESTS)})", "{{reason}}"),
             Target(_threshold("modelmon_threshold_error_ratio_max"), "maximum", threshold=True)],
            min=0,
        ),
        timeseries(
            "Latency percentiles",
            "p50, p95 and p99 time to serve a prediction, from modelmon_request_duration_seconds (buckets dense "
            "between 50 and 500 ms). Dashed red: the p95 limit (modelmon_threshold_latency_p95_seconds).",
            SECONDS,
            [Target(_quantile(0.5), "p50"), Target(_quantile(0.95), "p95"), Target(_quantile(0.99), "p99"),
             Target(_threshold("modelmon_threshold_latency_p95_seconds"), "p95 limit", threshold=True)],
            min=0,
        ),
        timeseries(
            "Accuracy against limits",
            "Accuracy of labelled predictions: 'streaming' from the correct/labelled counters at the rate interval, "
            "'window' from the selected sliding window. Dashed red: the alert minimum "
            "(modelmon_threshold_accuracy_min_ratio) and the release gate (modelmon_threshold_release_accuracy_min_ratio).",
            RATIO,
            [Target(STREAM_ACCURACY, "streaming"),
             Target(f'max({sel("modelmon_quality_accuracy_ratio", window="$window")})', "window $window"),
             Target(_threshold("modelmon_threshold_accuracy_min_ratio"), "alert minimum", threshold=True),
             Target(_threshold("modelmon_threshold_release_accuracy_min_ratio"), "release gate", threshold=True)],
        ),
    ])
    alerts = Row("Alerts", [
        table(
            "Active alerts",
            "Alerts pending or firing for this model, with their labels. Empty means no alert rule is active; "
            "Alertmanager (port 9093) has the notifications.",
            PLAIN,
            [Target(ALERTS, instant=True, table=True)],
            width=24, height=7,
            transformations=[organize(LABEL_COLUMNS + ["Value"], {"alertname": "alert", "alertstate": "state"})],
            overrides=[{
                "matcher": {"id": "byName", "options": "state"},
                "properties": [
                    {"id": "mappings", "value": [value_mapping({"firing": ("firing", "red"), "pending": ("pending", "orange")})]},
                    {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                ],
            }],
            no_value="No alert pending or firing",
        ),
    ])
    return Dashboard(
        uid="modelmon-overview",
        title="modelmon / Model overview",
        description="Is the model serving well now? Request rate, errors, latency and accuracy against the model's "
                    "configured limits, its alerts, its version and deploys.",
        rows=[now, serving, alerts],
        variables=base_vars(window_var()),
        annotations=[
            Annotation(
                "Deploys",
                f'max by (version) ({sel("modelmon_model_version_first_seen_timestamp_seconds")}) * 1000',
                "Version {{version}} first served", "blue", tags="version", use_value_for_time=True,
            ),
            Annotation(
                "Simulated anomaly",
                f'max({sel("modelmon_simulator_anomaly_active")}) == 1',
                "Simulator anomaly running", "orange",
            ),
        ],
    )
