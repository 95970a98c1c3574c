"""Population Stability Index on the frozen reference slots (numerical and
categorical features).

``PSI = Σ_i (q_i - p_i) * ln(q_i / p_i)`` with ``p`` the reference's share
and ``q`` the window's share in each slot:

- numerical: the reference quantile bins plus the two out-of-range slots
  (below the reference minimum, above its maximum), where the reference
  itself has no mass;
- categorical: the profile's categories plus ``__other__``.

Smoothing: every share is floored at ``EPSILON = 1e-4`` (both sides) before
the formula, so empty slots contribute a finite amount and slots empty on
both sides contribute 0.  The floored shares are not renormalised (the
convention of Evidently and most PSI write-ups).  Natural logarithm.

Thresholds: drift at ``PSI >= 0.1`` (default, "moderate shift"); 0.25 is
the usual "significant shift" level, used by the alert rules as critical.
PSI is biased upwards on small windows: with no drift its expectation is
about ``(slots - 1) * (1/n + 1/N)`` (n window values, N reference rows), so
the exporter scores PSI only on windows of at least
``max(300, 30 * (k - 1))`` values, k the reference's occupied slots
(:meth:`PSI.required_values`; docs/drift.md has the measured rates).
"""

from __future__ import annotations

import numpy as np

from ..base import CurrentColumn, DriftMethod, DriftResult
from ..reference import CategoricalProfile, NumericalProfile
from ..registry import register

EPSILON = 1e-4


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float = EPSILON) -> float:
    """PSI between two count vectors over the same slots."""
    p = np.maximum(np.asarray(ref_counts, dtype=np.float64) / np.sum(ref_counts), eps)
    q = np.maximum(np.asarray(cur_counts, dtype=np.float64) / np.sum(cur_counts), eps)
    return float(np.sum((q - p) * np.log(q / p)))


@register
class PSI(DriftMethod):
    name = "psi"
    feature_types = frozenset({"numerical", "categorical"})
    default_threshold = 0.1
    min_values = 300

    def required_values(self, ref: NumericalProfile | CategoricalProfile) -> int:
        """300, or 30 per degree of freedom for many occupied slots: keeps the
        no-drift expectation ``(k - 1) / n`` at or below a third of 0.1."""
        return max(self.min_values, 30 * (int(np.count_nonzero(ref.counts)) - 1))

    def compute(self, ref: NumericalProfile | CategoricalProfile, cur: CurrentColumn, threshold: float) -> DriftResult:
        return self.distance_result(psi(ref.counts, cur.counts), threshold)
