"""Explainability and outlying inputs (a row of the data drift dashboard):
which features the model leans on now against the reference, whether that
ranking still agrees with the reference's, and the share of single inputs
unlike anything in the reference (docs/explainability.md)."""

from __future__ import annotations

from .common import MERGE, PLAIN, RATIO, barchart, organize, sel, timeseries
from .model import Row, Target


def explain_row() -> Row:
    return Row("Explainability and outlying inputs", [
        barchart(
            "Feature importance: now vs reference",
            "Each feature's share of the summed mean |attribution| (the attributions the model service sends with "
            "its events, e.g. SHAP values): the selected window (modelmon_feature_importance_ratio) against the "
            "frozen reference (modelmon_reference_feature_importance_ratio).",
            RATIO,
            [Target(f'max by (feature) ({sel("modelmon_reference_feature_importance_ratio")})', "reference",
                    instant=True, table=True),
             Target(f'max by (feature) ({sel("modelmon_feature_importance_ratio", window="$window")})', "current",
                    instant=True, table=True)],
            x_field="feature",
            transformations=[MERGE, organize(["Time"], {"Value #A": "reference", "Value #B": "current"})],
            no_value="Attribution monitoring not enabled for this model",
        ),
        timeseries(
            "Importance rank correlation",
            "Spearman correlation of the window's importance ranking with the reference's (1 = same order, "
            "0 = unrelated, -1 = reversed); lowest over replicas. Dashed red: attributions.min_rank_correlation, "
            "below which ModelmonFeatureImportanceShift fires after 15 minutes.",
            PLAIN,
            [Target(f'min({sel("modelmon_feature_importance_rank_correlation", window="$window")})', "rank correlation"),
             Target(f'max({sel("modelmon_threshold_importance_rank_correlation_min")})', "limit", threshold=True)],
            width=8, min=-1, max=1, no_value="Attribution monitoring not enabled for this model",
        ),
        timeseries(
            "Outlying inputs",
            "Share of the window's events whose outlier score (Mahalanobis distance to the reference plus rare and "
            "unseen categories) exceeds the reference's 99.5 % quantile, over all replicas. Dashed: the reference's "
            "own share, and the limit (max_share_multiple times it) above which ModelmonOutlierShareHigh fires.",
            RATIO,
            [Target(f'sum({sel("modelmon_outlier_ratio", window="$window")} * '
                    f'{sel("modelmon_outlier_window_scored_events", window="$window")}) / '
                    f'sum({sel("modelmon_outlier_window_scored_events", window="$window")})', "outlying share"),
             Target(f'max({sel("modelmon_reference_outlier_ratio")})', "reference", threshold=True),
             Target(f'max({sel("modelmon_threshold_outlier_ratio_max_multiple")}) * '
                    f'max({sel("modelmon_reference_outlier_ratio")})', "limit", threshold=True)],
            width=8, min=0, no_value="No outlier model in the reference profile",
        ),
    ])
