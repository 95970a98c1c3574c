"""Model quality on the labelled part of a window.

Inputs are the labelled window's columns: predictions and labels as numeric
codes (classification: a per-model code per class value; regression: the
values), optional scores, and the fairness group code of each row.  Metrics
that cannot be computed (no labelled rows, a single class for ROC AUC, no
positive prediction for precision) are ``None`` and are simply not exported,
rather than exported as a misleading 0.

Definitions follow scikit-learn so numbers match what data scientists get
offline:

- binary (the model has at most two classes): precision, recall and F1 of
  ``positive``; F1 is ``2tp / (2tp + fp + fn)``;
- multi-class: the macro average over the classes present in labels or
  predictions, a class's undefined precision/recall counting as 0 (sklearn's
  ``zero_division=0``);
- ROC AUC (binary, rows that carry a score): the Mann-Whitney statistic with
  ties counted one half, i.e. ``sklearn.metrics.roc_auc_score``;
- fairness (classification): per group the positive-prediction (selection)
  rate, accuracy and true-positive rate; the demographic parity difference and
  the equal-opportunity difference are the largest minus the smallest group
  rate (fairlearn's ``between_groups``), and the disparate-impact ratio of each
  group is its selection rate over the reference group's (the "four-fifths
  rule" compares it with 0.8).
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
    group_disparate_impact: dict[str, float] = field(default_factory=dict)
    demographic_parity_difference: float | None = None
    equal_opportunity_difference: float | None = None


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def binary_scores(pred: np.ndarray, label: np.ndarray, positive: float) -> tuple[float | None, float | None, float | None]:
    """(precision, recall, F1) of the ``positive`` class; ``None`` where undefined."""
    p = pred == positive
    t = label == positive
    tp = int(np.sum(p & t))
    fp = int(np.sum(p & ~t))
    fn = int(np.sum(~p & t))
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)


def macro_scores(pred: np.ndarray, label: np.ndarray) -> tuple[float, float, float]:
    """Macro-averaged (precision, recall, F1) over the classes present (sklearn, zero_division=0)."""
    classes, inv = np.unique(np.concatenate([label, pred]), return_inverse=True)
    k = len(classes)
    n = len(label)
    lab_c, pred_c = inv[:n], inv[n:]
    tp = np.bincount(lab_c[lab_c == pred_c], minlength=k).astype(np.float64)
    pred_n = np.bincount(pred_c, minlength=k).astype(np.float64)
    true_n = np.bincount(lab_c, minlength=k).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(pred_n > 0, tp / pred_n, 0.0)
        rec = np.where(true_n > 0, tp / true_n, 0.0)
        den = pred_n + true_n
        f1 = np.where(den > 0, 2 * tp / den, 0.0)
    return float(prec.mean()), float(rec.mean()), float(f1.mean())


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank: what
    ``scipy.stats.rankdata(x)`` returns, without importing scipy on the
    exporter's start-up path (about 1 s of scipy.stats imports)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    inv = np.empty(len(x), dtype=np.intp)
    inv[order] = np.arange(len(x))
    xs = x[order]
    first = np.concatenate(([True], xs[1:] != xs[:-1]))
    dense = np.cumsum(first)[inv]
    bounds = np.concatenate((np.flatnonzero(first), [len(x)]))
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def roc_auc(score: np.ndarray, is_positive: np.ndarray) -> float | None:
    """Binary ROC AUC (ties count one half); ``None`` unless both classes are present."""
    n_pos = int(is_positive.sum())
    n_neg = int(is_positive.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(score)  # ties count one half
    u = float(ranks[is_positive].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def compute_quality(
    task: str,
    pred: np.ndarray,
    label: np.ndarray,
    score: np.ndarray,
    group: np.ndarray,
    groups: list[str],
    positive: int | None,
    reference_group: str = "",
    binary: bool = True,
) -> QualityReport:
    """Quality metrics for one labelled window (see module docs).

    ``positive`` is the code of the positive class (``None`` when it has not
    been seen yet); ``binary`` says whether the model has at most two classes.
    """
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
    if binary:
        if positive is not None:
            rep.precision, rep.recall, rep.f1 = binary_scores(pred, label, positive)
            has_score = ~np.isnan(score)
            if has_score.any():
                rep.roc_auc = roc_auc(score[has_score], label[has_score] == positive)
    else:
        rep.precision, rep.recall, rep.f1 = macro_scores(pred, label)
    if groups:
        _fairness(rep, pred, label, group, groups, positive, reference_group)
    return rep


def _fairness(
    rep: QualityReport, pred: np.ndarray, label: np.ndarray, group: np.ndarray,
    groups: list[str], positive: int | None, reference_group: str,
) -> None:
    for code, name in enumerate(groups):
        sel = group == code
        n = int(sel.sum())
        if n == 0:
            continue
        p, t = pred[sel], label[sel]
        rep.group_events[name] = n
        rep.group_accuracy[name] = float(np.mean(p == t))
        if positive is None:
            continue
        rep.group_positive_rate[name] = float(np.mean(p == positive))
        actual = t == positive
        if actual.any():
            rep.group_true_positive_rate[name] = float(np.mean(p[actual] == positive))
    rates = rep.group_positive_rate
    if len(rates) >= 2:
        rep.demographic_parity_difference = max(rates.values()) - min(rates.values())
    tprs = rep.group_true_positive_rate
    if len(tprs) >= 2:
        rep.equal_opportunity_difference = max(tprs.values()) - min(tprs.values())
    ref = rates.get(reference_group or groups[0])
    if ref:
        rep.group_disparate_impact = {g: r / ref for g, r in rates.items()}
