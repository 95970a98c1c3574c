"""Pearson chi-square test for categorical features.

A test of *homogeneity* on the 2 x K table whose rows are the reference's
and the window's counts per slot (the profile's categories plus
``__other__``):

``X² = Σ_rows Σ_k (O - E)² / E`` with ``E = row total * column total / N``,
p-value from the chi-square distribution with ``K' - 1`` degrees of freedom,
K' the number of slots with at least one value on either side.  No Yates
continuity correction.  This is ``scipy.stats.chi2_contingency(table,
correction=False)`` on the table without its all-zero columns.

Why homogeneity rather than goodness of fit against the reference shares:

- it treats both sides as samples, like the two-sample KS test.  With a
  small reference (the default rule uses chi-square only for references of
  at most ``drift.small_sample_max`` rows) a goodness-of-fit test would take
  the reference's sampling noise for truth and raise false alarms well
  above the nominal rate on large windows; for a reference much larger than
  the window the two tests agree;
- unseen categories need no special case: values in a slot where the
  reference has no mass (``__other__`` when every reference category is
  kept, or a configured category absent from the reference) simply make
  that column's expected count for the window smaller than observed, which
  raises X²; a goodness-of-fit test would divide by a zero expectation.
  A table with fewer than two non-empty slots has ``X² = 0, p = 1``.

Drift when ``p_value < threshold`` (default 0.05).
"""

from __future__ import annotations

import numpy as np

from ..base import CurrentColumn, DriftMethod, DriftResult
from ..reference import CategoricalProfile
from ..registry import register


def chi2_homogeneity(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float, int]:
    """(statistic, p-value, degrees of freedom) for two count vectors."""
    table = np.vstack([np.asarray(ref_counts, dtype=np.float64), np.asarray(cur_counts, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    k = table.shape[1]
    rows = table.sum(axis=1)
    if k < 2 or np.any(rows == 0):
        return 0.0, 1.0, max(k - 1, 0)
    expected = np.outer(rows, table.sum(axis=0)) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    return stat, chi2_sf(stat, k - 1), k - 1


def chi2_sf(stat: float, dof: int) -> float:
    """``scipy.stats.chi2.sf``.  Imported here, not at module level, for
    start-up cost: scipy.stats takes 0.3-1 s to import, and the exporter's
    start-up and ``modelmon --help`` import this module without needing it."""
    from scipy import stats

    return float(stats.chi2.sf(stat, dof))


@register
class ChiSquare(DriftMethod):
    name = "chisquare"
    feature_types = frozenset({"categorical"})
    default_threshold = 0.05
    has_p_value = True

    def compute(self, ref: CategoricalProfile, cur: CurrentColumn, threshold: float) -> DriftResult:  # type: ignore[override]
        stat, p, _ = chi2_homogeneity(ref.counts, cur.counts)
        return self.p_value_result(stat, p, threshold)
