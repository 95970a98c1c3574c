"""Anomaly detection on single inputs: a per-event outlier score against the reference."""

from .outliers import OUTLIER_SECTION, OutlierModel, fit_outlier_model

__all__ = ["OUTLIER_SECTION", "OutlierModel", "fit_outlier_model"]
