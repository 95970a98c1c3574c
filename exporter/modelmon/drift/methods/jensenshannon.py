"""Jensen-Shannon distance on the frozen reference slots (numerical and
categorical features).

``JS = sqrt( (KL(p || m) + KL(q || m)) / 2 )`` with ``m = (p + q) / 2``,
``p`` the reference's and ``q`` the window's share per slot, logarithms in
**base 2**, so the distance lies in [0, 1] (1: disjoint supports).  This is
``scipy.spatial.distance.jensenshannon(p, q, base=2)``.  Note that Evidently
uses the natural log, whose values are ``sqrt(ln 2) ≈ 0.83`` times ours.

Slots are the same as PSI's: reference quantile bins plus the two
out-of-range slots for numerical features, categories plus ``__other__``
for categorical ones.  No smoothing is needed: ``0 * log 0 = 0`` and ``m``
is positive wherever ``p`` or ``q`` is.

Drift when ``JS >= threshold`` (default 0.1).  The exporter scores it on
windows of at least ``max(500, 50 * (k - 1))`` values, k the reference's
occupied slots (below that, sampling noise alone reaches 0.1; docs/drift.md).
"""

from __future__ import annotations

import numpy as np

from ..base import CurrentColumn, DriftMethod, DriftResult
from ..reference import CategoricalProfile, NumericalProfile
from ..registry import register


def js_distance(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Base-2 Jensen-Shannon distance between two count vectors."""
    p = np.asarray(ref_counts, dtype=np.float64)
    q = np.asarray(cur_counts, dtype=np.float64)
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2.0
    kl_p = np.sum(p[p > 0] * np.log2(p[p > 0] / m[p > 0]))
    kl_q = np.sum(q[q > 0] * np.log2(q[q > 0] / m[q > 0]))
    return float(np.sqrt(max(0.0, (kl_p + kl_q) / 2.0)))


@register
class JensenShannon(DriftMethod):
    name = "jensenshannon"
    feature_types = frozenset({"numerical", "categorical"})
    default_threshold = 0.1
    min_values = 500

    def required_values(self, ref: NumericalProfile | CategoricalProfile) -> int:
        """500, or 50 per degree of freedom for many occupied slots: without
        drift ``JS² ≈ (k - 1) / (8 n ln 2)``, so this keeps JS near 0.05,
        half the default threshold."""
        return max(self.min_values, 50 * (int(np.count_nonzero(ref.counts)) - 1))

    def compute(self, ref: NumericalProfile | CategoricalProfile, cur: CurrentColumn, threshold: float) -> DriftResult:
        return self.distance_result(js_distance(ref.counts, cur.counts), threshold)
