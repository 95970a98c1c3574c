"""Metric groups that can be switched off, as node_exporter's ``--collector.X``
flags do: when the series budget of a large fleet is tight, drop whole groups
of families from ``/metrics`` (``--no-collector.bins`` or, in the config,
``collectors: {bins: false}``).

A group is a set of metric-family name prefixes.  Families outside every
group (build info, thresholds, event counters, windows, ingestion) are always
exported: the alert rules and dashboards rely on them.  A disabled group's
values may still be computed (drift scores feed the dataset-drift gauge),
they are just not exposed.

This is the light table (the CLI builds its flags from it without loading
the collectors); the filtering registry is :mod:`modelmon.collectors.groups`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

NAMESPACE = "modelmon_"


@dataclass(frozen=True)
class MetricGroup:
    name: str
    description: str
    #: Family names (as the collectors declare them, counters without
    #: ``_total``) starting with ``modelmon_`` + one of these belong to the group.
    prefixes: tuple[str, ...]
    #: Families outside the ``modelmon_`` namespace, by full prefix.
    foreign: tuple[str, ...] = ()

    def matches(self, family: str) -> bool:
        if family.startswith(NAMESPACE):
            return family[len(NAMESPACE):].startswith(self.prefixes)
        return family.startswith(self.foreign)


GROUPS: tuple[MetricGroup, ...] = (
    MetricGroup("serving", "requests, errors, latency histogram, model versions",
                ("requests", "request_", "model_info",
                 "model_version_first_seen")),
    MetricGroup("quality", "windowed quality gauges, labelled / correct counters, label delay and coverage",
                ("quality_", "labelled_events", "correct_predictions",
                 "label_delay", "label_coverage", "window_labelled_events")),
    MetricGroup("fairness", "per-group rates and fairness differences", ("fairness_",)),
    MetricGroup("drift", "per-feature drift scores, p-values, thresholds and flags; dataset and multivariate drift",
                ("drift_", "dataset_drift", "multivariate_drift")),
    MetricGroup("data_quality", "per-feature value counts, missing, out-of-range and new-category shares",
                ("feature_values", "feature_missing", "feature_out_of_range",
                 "feature_new_category")),
    MetricGroup("bins", "per-bin value counters and reference shares (the fleet-wide PSI / JS rules need them)",
                ("feature_bin_values", "reference_bin_ratio")),
    MetricGroup("explain", "outlier scores and shares; per-feature attribution importance against the reference",
                ("outlier_", "reference_outlier_ratio", "feature_importance", "reference_feature_importance",
                 "attribution_events")),
    MetricGroup("process", "process and Python platform metrics of prometheus_client",
                (), foreign=("process_", "python_")),
)
NAMES: tuple[str, ...] = tuple(g.name for g in GROUPS)


def group_of(family: str) -> str | None:
    """The group a metric family belongs to, or None (always exported)."""
    for group in GROUPS:
        if group.matches(family):
            return group.name
    return None


def check_names(names: Iterable[str]) -> list[str]:
    """``names`` as a list; ValueError naming the first unknown group."""
    out = list(names)
    for name in out:
        if name not in NAMES:
            raise ValueError(f"unknown metric group {name!r} (known: {', '.join(NAMES)})")
    return out
