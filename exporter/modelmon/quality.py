"""Model quality on the labelled part of a window.

Inputs are the labelled window's columns: predictions and labels as numeric
codes (classification: a per-model code per class value; regression: the
values), optional scores, and the fairness group code of each row.  Metrics
that cannot be computed (no labelled rows, a single class for ROC AUC) are
``None`` and are simply not exported, rather than exported as a misleading 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class QualityReport:
    n: int = 0
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    roc_auc: float | None = None
    mae: float | None = None
    rmse: float | None = None
    #: Fairness, per group: positive-prediction rate, accuracy, true-positive rate.
    group_positive_rate: dict[str, float] = field(default_factory=dict)
    group_accuracy: dict[str, float] = field(default_factory=dict)
    group_true_positive_rate: dict[str, float] = field(default_factory=dict)
    group_events: dict[str, int] = field(default_factory=dict)
    demographic_parity_difference: float | None = None
    equal_opportunity_difference: float | None = None


def compute_quality(
    task: str,
    pred: np.ndarray,
    label: np.ndarray,
    score: np.ndarray,
    group: np.ndarray,
    groups: list[str],
    positive: int | None,
    reference_group: str = "",
) -> QualityReport:
    """Quality metrics for one labelled window (see module docs)."""
    ok = ~(np.isnan(pred) | np.isnan(label))
    pred, label, score, group = pred[ok], label[ok], score[ok], group[ok]
    rep = QualityReport(n=int(ok.sum()))
    if rep.n == 0:
        return rep
    if task == "regression":
        err = pred - label
        rep.mae = float(np.mean(np.abs(err)))
        rep.rmse = float(np.sqrt(np.mean(err * err)))
        return rep
    rep.accuracy = float(np.mean(pred == label))
    return rep
