"""Score calibration for confidence-based performance estimation.

CBPE reads a model's score as the probability that the row is positive, so
the scores must be calibrated: among rows scored 0.8, 80 % positive.  Many
models' scores are not (boosted trees, anything trained with class weights).
:func:`fit_calibration` learns an isotonic map from raw score to observed
positive rate on the reference (``scipy.optimize.isotonic_regression``) and,
in ``auto`` mode, keeps it only when it lowers the *expected calibration
error* on held-out folds of the reference, as NannyML does: a well calibrated
model is then left alone instead of being coarsened by the step function.

The map is stored as the corners of the isotonic step function (the first
and last score of each plateau) and applied by linear interpolation between
them, clipped to the end values outside the reference's score range
(scikit-learn's ``IsotonicRegression(out_of_bounds="clip")``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CALIBRATION_MODES = ("auto", "always", "never")


def expected_calibration_error(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE with equal-frequency bins: ``sum_b n_b/n * |mean(label_b) - mean(score_b)|``.

    ``labels`` are 0/1.  Equal-frequency bins (not equal-width) so every bin
    holds enough rows when scores crowd near 0 or 1."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    n = s.size
    if n == 0:
        raise ValueError("no rows")
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    edges = np.unique(np.linspace(0, n, min(bins, n) + 1).round().astype(np.int64))
    total = 0.0
    for a, b in itertools.pairwise(edges):
        total += (b - a) * abs(float(y[a:b].mean()) - float(s[a:b].mean()))
    return total / n


@dataclass
class Calibration:
    """A fitted score -> probability map (identity when ``applied`` is false)."""

    applied: bool = False
    #: Increasing raw scores and the calibrated probability at each.
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mode: str = "auto"
    #: Mean held-out ECE of the raw and of the calibrated scores (None when not measured).
    ece_raw: float | None = None
    ece_calibrated: float | None = None

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (NaN stays NaN)."""
        s = np.asarray(scores, dtype=np.float64)
        if not self.applied:
            return s
        return np.interp(s, self.x, self.y)

    def to_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "x": self.x.tolist(), "y": self.y.tolist(), "mode": self.mode,
                "ece_raw": self.ece_raw, "ece_calibrated": self.ece_calibrated}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(applied=bool(d["applied"]), x=np.asarray(d["x"], dtype=np.float64),
                   y=np.asarray(d["y"], dtype=np.float64), mode=str(d.get("mode", "auto")),
                   ece_raw=d.get("ece_raw"), ece_calibrated=d.get("ece_calibrated"))


def fit_isotonic(scores: np.ndarray, labels: np.ndarray) -> Calibration:
    """The non-decreasing step function closest (least squares) to the labels
    as a function of the score, reduced to its plateau corners."""
    # Imported here, not at module level, for start-up cost (as the drift
    # methods' scipy.stats): importing the exporter stays numpy-only.
    from scipy.optimize import isotonic_regression

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    ux, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    mean = np.bincount(inv, weights=y) / counts
    fitted = isotonic_regression(mean, weights=counts.astype(np.float64), increasing=True).x
    if ux.size > 2:
        # Keep a point where the value changes on either side: the corners.
        change = np.diff(fitted) != 0
        keep = np.ones(ux.size, dtype=bool)
        keep[1:-1] = change[:-1] | change[1:]
        ux, fitted = ux[keep], fitted[keep]
    return Calibration(applied=True, x=ux, y=np.clip(fitted, 0.0, 1.0))


def fit_calibration(scores: np.ndarray, labels: np.ndarray, mode: str = "auto", folds: int = 10,
                    bins: int = 10, seed: int = 0) -> Calibration:
    """Decide on and fit the calibration of ``scores`` (0/1 ``labels``).

    ``never``: identity.  ``always``: isotonic on all rows.  ``auto``: the
    isotonic map fitted on the other folds must lower the ECE of each
    held-out fold on average, else identity.  The held-out ECEs are kept
    either way (the profile shows why calibration was or was not applied)."""
    if mode not in CALIBRATION_MODES:
        raise ValueError(f"calibration mode must be one of {', '.join(CALIBRATION_MODES)}")
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if mode == "never":
        return Calibration(applied=False, mode=mode)
    ece_raw = ece_cal = None
    folds = min(folds, s.size // max(bins, 1))
    if folds >= 2:
        perm = np.random.default_rng(seed).permutation(s.size)
        raw, cal = [], []
        for held in np.array_split(perm, folds):
            train = np.ones(s.size, dtype=bool)
            train[held] = False
            iso = fit_isotonic(s[train], y[train])
            raw.append(expected_calibration_error(s[held], y[held], bins))
            cal.append(expected_calibration_error(iso.apply(s[held]), y[held], bins))
        ece_raw, ece_cal = float(np.mean(raw)), float(np.mean(cal))
    if mode == "auto" and (ece_raw is None or ece_cal is None or ece_cal >= ece_raw):
        return Calibration(applied=False, mode=mode, ece_raw=ece_raw, ece_calibrated=ece_cal)
    fitted = fit_isotonic(s, y)
    fitted.mode, fitted.ece_raw, fitted.ece_calibrated = mode, ece_raw, ece_cal
    return fitted
