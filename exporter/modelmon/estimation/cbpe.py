"""Confidence-based performance estimation (CBPE) for binary classifiers.

Without labels, a calibrated score ``p`` (the positive class's probability)
is the expected value of the label.  So over a window's rows the confusion
matrix has the expected cells (NannyML's CBPE)::

    TP = sum(p)      over predicted positives     FP = sum(1 - p) there
    FN = sum(p)      over predicted negatives     TN = sum(1 - p) there

and accuracy ``(TP + TN) / n``, precision ``TP / (TP + FP)``, recall
``TP / (TP + FN)`` and F1 ``2TP / (2TP + FP + FN)`` follow.  ROC AUC is
estimated from the raw scores' order: walking the thresholds from the highest
score down, the expected true- and false-positive counts grow by ``p`` and
``1 - p``; the area under that expected curve is the estimate (with 0/1
labels in place of ``p`` it is exactly the realized, ties-count-half AUC).

Each estimate carries a band for its sampling error, taken from the
reference as NannyML does: the realized metric is computed on consecutive
reference chunks, its standard deviation over the chunks scaled by
``sqrt(chunk rows)`` gives a per-row spread ``s``, and a window of ``n`` rows
gets ``value +- sigmas * s / sqrt(n)``, clipped to [0, 1].  The band is where
the realized metric of a window of that size would be expected to fall if
nothing but sampling differed from the reference.

Assumptions: the scores are calibrated (see :mod:`.calibration`) and the
relation between inputs and label is unchanged (no concept drift): CBPE sees
covariate shift, not a change in what the label means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..chunking import split_even
from ..quality import binary_scores, roc_auc
from .calibration import Calibration, fit_calibration

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den > 0 else None


def expected_confusion(p: np.ndarray, pred_positive: np.ndarray) -> tuple[float, float, float, float]:
    """Expected (TP, FP, FN, TN) from calibrated probabilities and the 0/1 predictions."""
    pos = np.asarray(pred_positive, dtype=bool)
    p = np.asarray(p, dtype=np.float64)
    tp = float(p[pos].sum())
    fp = float(pos.sum() - tp)
    fn = float(p[~pos].sum())
    tn = float((~pos).sum() - fn)
    return tp, fp, fn, tn


def expected_roc_auc(p: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the expected ROC curve: rows ordered by ``score`` (ties as
    one threshold), expected positives ``p``; ``None`` when the expected
    positives or negatives are zero."""
    p = np.asarray(p, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    total_pos = float(p.sum())
    total_neg = float(p.size - total_pos)
    if total_pos <= 0 or total_neg <= 0:
        return None
    uniq, inv = np.unique(-s, return_inverse=True)  # descending score
    tp = np.concatenate([[0.0], np.cumsum(np.bincount(inv, weights=p, minlength=uniq.size))]) / total_pos
    fp = np.concatenate([[0.0], np.cumsum(np.bincount(inv, weights=1.0 - p, minlength=uniq.size))]) / total_neg
    return float(np.sum(np.diff(fp) * (tp[1:] + tp[:-1]) / 2.0))


def estimate_metrics(p: np.ndarray, pred_positive: np.ndarray, score: np.ndarray) -> dict[str, float | None]:
    """The estimated metrics (``None`` where undefined, e.g. precision with
    no predicted positive)."""
    n = p.size
    if n == 0:
        return dict.fromkeys(METRICS)
    tp, fp, fn, tn = expected_confusion(p, pred_positive)
    return {
        "accuracy": (tp + tn) / n,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": expected_roc_auc(p, score),
    }


def realized_metrics(label_positive: np.ndarray, pred_positive: np.ndarray, score: np.ndarray) -> dict[str, float | None]:
    """The same metrics on known labels, with the exporter's quality definitions."""
    lab = np.asarray(label_positive, dtype=np.float64)
    pred = np.asarray(pred_positive, dtype=np.float64)
    if lab.size == 0:
        return dict.fromkeys(METRICS)
    precision, recall, f1 = binary_scores(pred, lab, 1.0)
    return {"accuracy": float(np.mean(pred == lab)), "precision": precision, "recall": recall, "f1": f1,
            "roc_auc": roc_auc(np.asarray(score, dtype=np.float64), lab == 1.0)}


@dataclass
class Estimate:
    value: float
    lower: float
    upper: float
    sampling_error: float


@dataclass
class CBPEResult:
    """Estimates of one window (empty below ``min_rows``)."""

    #: Rows with a prediction and a score (what the estimate used).
    n: int
    estimates: dict[str, Estimate] = field(default_factory=dict)


@dataclass
class CBPEModel:
    """What CBPE keeps from the reference (a section of the reference profile)."""

    calibration: Calibration
    metrics: list[str]
    #: Per-row spread of each realized metric: its sampling error in a window
    #: of n rows is ``row_sigma / sqrt(n)``.
    row_sigma: dict[str, float]
    #: Realized metric on the whole reference (what "no change" looks like).
    reference_value: dict[str, float]
    reference_rows: int
    chunk_rows: int
    sigmas: float = 3.0
    min_rows: int = 100

    def estimate(self, score: np.ndarray, pred_positive: np.ndarray) -> CBPEResult:
        """Estimate the metrics of a window from its raw scores and 0/1
        predictions (rows where either is NaN are skipped)."""
        s = np.asarray(score, dtype=np.float64)
        pred = np.asarray(pred_positive, dtype=np.float64)
        ok = np.isfinite(s) & np.isfinite(pred)
        s, pred = s[ok], pred[ok]
        res = CBPEResult(n=int(s.size))
        if res.n < self.min_rows or res.n == 0:
            return res
        # A score outside [0, 1] is not a probability: clipped, so no
        # estimate leaves [0, 1] whatever a client sends.
        values = estimate_metrics(np.clip(self.calibration.apply(s), 0.0, 1.0), pred == 1.0, s)
        for m in self.metrics:
            v = values.get(m)
            if v is None:
                continue
            se = self.row_sigma.get(m, 0.0) / np.sqrt(res.n)
            res.estimates[m] = Estimate(value=float(v), lower=float(max(0.0, v - self.sigmas * se)),
                                        upper=float(min(1.0, v + self.sigmas * se)), sampling_error=float(se))
        return res

    def to_dict(self) -> dict[str, Any]:
        return {"calibration": self.calibration.to_dict(), "metrics": list(self.metrics),
                "row_sigma": dict(self.row_sigma), "reference_value": dict(self.reference_value),
                "reference_rows": self.reference_rows, "chunk_rows": self.chunk_rows,
                "sigmas": self.sigmas, "min_rows": self.min_rows}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CBPEModel:
        return cls(calibration=Calibration.from_dict(d["calibration"]), metrics=list(d["metrics"]),
                   row_sigma={k: float(v) for k, v in d["row_sigma"].items()},
                   reference_value={k: float(v) for k, v in d["reference_value"].items()},
                   reference_rows=int(d["reference_rows"]), chunk_rows=int(d["chunk_rows"]),
                   sigmas=float(d["sigmas"]), min_rows=int(d["min_rows"]))


def fit_cbpe(score: np.ndarray, pred_positive: np.ndarray, label_positive: np.ndarray, *,
             metrics: list[str] | tuple[str, ...] = METRICS, calibration: str = "auto",
             chunks: int = 50, min_chunk_rows: int = 20, sigmas: float = 3.0, min_rows: int = 100,
             seed: int = 0) -> CBPEModel:
    """Fit CBPE on reference rows (raw scores, 0/1 predictions, 0/1 labels, in
    the reference's order; rows missing any of the three are dropped).
    Raises ``ValueError`` on a reference it cannot learn from."""
    s = np.asarray(score, dtype=np.float64)
    pred = np.asarray(pred_positive, dtype=np.float64)
    lab = np.asarray(label_positive, dtype=np.float64)
    ok = np.isfinite(s) & np.isfinite(pred) & np.isfinite(lab)
    s, pred, lab = s[ok], pred[ok], lab[ok]
    if s.size == 0:
        raise ValueError("no reference row has a score, a prediction and a label")
    if s.min() < 0 or s.max() > 1:
        raise ValueError("scores must be probabilities in [0, 1]")
    if lab.min() == lab.max():
        raise ValueError("the reference labels hold a single class")
    bounds = split_even(s.size, chunks, min_chunk_rows)
    cal = fit_calibration(s, lab, mode=calibration, seed=seed)
    per_chunk: dict[str, list[float]] = {m: [] for m in metrics}
    for a, b in bounds:
        r = realized_metrics(lab[a:b], pred[a:b], s[a:b])
        for m in metrics:
            if r[m] is not None:
                per_chunk[m].append(float(r[m]))  # type: ignore[arg-type]
    chunk_rows = s.size // len(bounds)
    whole = realized_metrics(lab, pred, s)
    row_sigma = {m: float(np.std(v, ddof=1) * np.sqrt(chunk_rows)) for m, v in per_chunk.items() if len(v) >= 2}
    return CBPEModel(calibration=cal, metrics=[m for m in metrics if m in row_sigma], row_sigma=row_sigma,
                     reference_value={m: float(v) for m, v in whole.items() if v is not None and m in row_sigma},
                     reference_rows=int(s.size), chunk_rows=int(chunk_rows), sigmas=sigmas, min_rows=min_rows)
