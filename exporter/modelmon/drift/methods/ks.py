"""Two-sample Kolmogorov-Smirnov test (numerical features).

Statistic: ``D = sup_x |F_cur(x) - F_ref(x)|`` between the empirical CDFs of
the window's values and the profile's sorted reference sample (the whole
reference when it has at most ``drift.reference_sample_size`` rows).

Computed from the sorted window ``u`` (n values) and the sample's distinct
values ``w_j`` with their CDF ``c_j`` (precomputed once per profile): between
two consecutive ``w_j`` the reference CDF is flat, and the window CDF is
monotone, so the supremum over that stretch is reached at its ends.  Two
``searchsorted`` calls over the distinct reference values (not over the
window) give every candidate, so the cost after sorting the window is
O(m log n) for m distinct reference values.

P-value: two-sided, following ``scipy.stats.ks_2samp(method="auto")``:

- *exact* when ``max(n1, n2) <= 10000``: the probability that a random
  lattice path from (0, 0) to (n1, n2) leaves the band
  ``|x/n1 - y/n2| < D`` (Hodges 1958), counted here row by row with a
  cumulative sum and a per-row rescaling so it never overflows;
- *asymptotic* otherwise: ``scipy.stats.kstwo.sf(D, round(n1*n2/(n1+n2)))``,
  the same formula scipy uses.

Like scipy, the exact branch first rounds D to a multiple of 1/lcm(n1, n2).
Agreement with scipy is to about 1e-12 absolute (tests check 1e-9).  Deep in
the tail, where the asymptotic p-value is below 1e-20, the exact branch
returns that value instead (both are far below the counting's absolute
accuracy; this also bounds its cost).  With ties (discrete data) the test is
conservative, as for scipy.

Drift when ``p_value < threshold`` (default 0.05).
"""

from __future__ import annotations

import math

import numpy as np

from ..base import CurrentColumn, DriftMethod, DriftResult
from ..reference import NumericalProfile
from ..registry import register

#: Largest sample size for which the p-value is exact (scipy's MAX_AUTO_N).
EXACT_MAX_N = 10_000
#: Exact branch: below this asymptotic p-value the asymptotic value is used.
TAIL_SHORTCUT = 1e-20


def ks_statistic(u: np.ndarray, w: np.ndarray, c: np.ndarray) -> float:
    """D between sorted values ``u`` and a reference step CDF.

    ``w`` are the reference's distinct sorted values and ``c`` its CDF at
    each of them (``c[-1] == 1``).
    """
    n = len(u)
    right = np.searchsorted(u, w, side="right") / n  # F_cur(w_j)
    left = np.searchsorted(u, w, side="left") / n  # F_cur just below w_j
    d = float(np.max(np.abs(right - c)))  # at the reference's own jumps
    d = max(d, float(left[0]))  # window values below the reference minimum
    if len(w) > 1:
        # window values strictly between w_j and w_{j+1}: F_ref = c_j there
        d = max(d, float(np.max(np.abs(left[1:] - c[:-1]))))
    return d


def ks_2samp_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """D between two unsorted samples (convenience for callers and tests)."""
    u = np.sort(np.asarray(a, dtype=np.float64))
    w, cnt = np.unique(np.asarray(b, dtype=np.float64), return_counts=True)
    return ks_statistic(u, w, np.cumsum(cnt) / cnt.sum())


def ks_p_value(d: float, n1: int, n2: int) -> float:
    """Two-sided p-value of statistic ``d`` for sample sizes ``n1``, ``n2``."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("KS needs two non-empty samples")
    big, small = max(n1, n2), min(n1, n2)
    en = big * small / (big + small)
    if big <= EXACT_MAX_N:
        g = math.gcd(n1, n2)
        lcm = (n1 // g) * n2
        h = int(round(d * lcm))
        if h == 0:
            return 1.0
        # Far in the tail the exact value is below the DP's absolute accuracy
        # anyway (about 1e-12): the asymptotic value is as good, and cheaper.
        tail = _kstwo_sf(h / lcm, float(np.round(en)))
        if tail < TAIL_SHORTCUT:
            return tail
        return _exact_sf(n1, n2, g, h)
    return float(np.clip(_kstwo_sf(d, float(np.round(en))), 0.0, 1.0))


def _kstwo_sf(d: float, n: float) -> float:
    """``scipy.stats.kstwo.sf``.  Imported here, not at module level, for
    start-up cost: scipy.stats takes 0.3-1 s to import, and the exporter's
    start-up and ``modelmon --help`` import this module without needing it."""
    from scipy import stats

    return float(stats.kstwo.sf(d, n))


def _exact_sf(n1: int, n2: int, g: int, h: int) -> float:
    """P(D >= h / lcm(n1, n2)) under H0, by counting lattice paths.

    A path from (0, 0) to (m, n) stays inside when every point satisfies
    ``|n*x - m*y| < h*g`` (the scaled form of ``|x/m - y/n| < D``).  Row ``y``
    of the allowed region is one interval of ``x``; the number of inside
    paths reaching each cell of a row is the cumulative sum of the previous
    row over that interval.  Each row is divided by its maximum and the logs
    of those factors, and of C(m+n, n), are added exactly (``math.fsum``), so
    large samples neither overflow nor lose precision in the bookkeeping.
    Cost: O(n * band width) with a Python loop over the smaller sample.
    """
    m, n = max(n1, n2), min(n1, n2)  # x runs over the larger sample
    hg = h * g
    prev = np.zeros(m + 1)
    hi0 = min(m, -((-hg) // n) - 1)
    prev[: hi0 + 1] = 1.0
    logs: list[float] = []
    lo_prev, hi_prev = 0, hi0
    for y in range(1, n + 1):
        lo = max(0, (m * y - hg) // n + 1)
        hi = min(m, -((-(m * y + hg)) // n) - 1)
        if lo > hi:
            return 1.0  # no path stays inside
        row = np.cumsum(prev[lo : hi + 1])
        prev[lo_prev : hi_prev + 1] = 0.0
        top = row[-1]
        if top <= 0.0:
            return 1.0
        prev[lo : hi + 1] = row / top
        logs.append(math.log(top))
        logs.append(-math.log1p(m / y))  # log C(m+n, n) = sum_y log((m + y) / y)
        lo_prev, hi_prev = lo, hi
    inside = prev[m]
    if inside <= 0.0:
        return 1.0
    logs.append(math.log(inside))
    log_inside = math.fsum(logs)
    return float(min(1.0, max(0.0, -math.expm1(min(0.0, log_inside)))))


@register
class KolmogorovSmirnov(DriftMethod):
    name = "ks"
    feature_types = frozenset({"numerical"})
    default_threshold = 0.05
    has_p_value = True
    needs_values = True

    def compute(self, ref: NumericalProfile, cur: CurrentColumn, threshold: float) -> DriftResult:  # type: ignore[override]
        u = cur.sorted_values()
        w, c = ref.sample_steps
        d = ks_statistic(u, w, c)
        return self.p_value_result(d, ks_p_value(d, len(u), len(ref.sample)), threshold)
