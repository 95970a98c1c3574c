"""Wasserstein-1 distance normalised by the reference's scale (numerical
features).

``score = W1(cur, ref_sample) / scale_ref`` where ``W1 = ∫ |F_cur(x) - F_ref(x)| dx``
is what ``scipy.stats.wasserstein_distance`` computes, ``ref_sample`` is the
profile's sorted reference sample (the whole reference when it has at most
``drift.reference_sample_size`` rows) and ``scale_ref`` the profile's
``scale``: the population standard deviation (ddof 0) of the *whole*
reference clipped to 20 IQRs beyond its quartiles (:mod:`..reference`; equal to the
plain std unless the reference has extreme outliers).  Dividing by it makes
the score unit-free: 0.1 means the window's mass moved on average by a tenth
of a standard deviation.  W1 itself is summed term by term in units of the
scale, so values near 1e300 do not overflow; a score that still is not
finite is reported as an error, not a verdict (:mod:`..engine`).

Computed with the quantile form ``W1 = ∫_0^1 |Q_cur(t) - Q_ref(t)| dt`` (equal
to the CDF form in one dimension).  With sorted samples both quantile
functions are step functions on the grids ``i/n`` and ``j/m``; when n >= m
each step of the finer grid straddles at most one step boundary of the
coarser one, so the integral is two gathered dot products, O(n) with no
merge and no search (and no BLAS call, see below).  Boundaries are compared in exact integer units of
``1/(n*m)``.

Constant reference (scale 0): there is no unit to measure a move in, so the
score is the share of window values that differ from the reference's value
(the out-of-range share): 0 when unchanged, 0.001 when one value in 1000
moved, 1 when every value moved.  Drift at the same threshold then means
"at least 10 % of the values left the constant".

Drift when ``score >= threshold`` (default 0.1).  The exporter scores it on
windows of at least 1000 values: on 100 values of a lognormal feature
without drift the score reaches 0.1 in about 70 % of windows, on 300 in
about 10 % (docs/drift.md).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..base import CurrentColumn, DriftMethod, DriftResult
from ..reference import NumericalProfile
from ..registry import register


def wasserstein_sorted(u: np.ndarray, v: np.ndarray, unit: float = 1.0) -> float:
    """W1 between two *sorted* samples (any sizes >= 1), in units of ``unit``.

    Differences are divided by ``unit`` and weighted by ``1/(n m)`` before
    summing; when a difference itself overflows (values near 1e308), the
    samples are divided by ``unit`` first and the sum is redone."""
    if len(u) < len(v):
        u, v = v, u
    if len(v) == 0:
        raise ValueError("Wasserstein distance needs two non-empty samples")
    with np.errstate(over="ignore", invalid="ignore"):
        w = _w1(u, v, unit)
        if not math.isfinite(w) and unit != 1.0:
            w = _w1(u / unit, v / unit, 1.0)
    return w


def _w1(u: np.ndarray, v: np.ndarray, unit: float) -> float:
    n, m = len(u), len(v)
    if n == m:  # equal sizes: the quantile steps coincide
        d = np.abs(u - v)
        d /= unit
        d /= n
        return float(np.einsum("i->", d))
    j0, j1, len0, len1 = _grid(n, m) if n <= GRID_CACHE_MAX else _grid.__wrapped__(n, m)
    # einsum, not np.dot: BLAS dot products wake OpenBLAS worker threads that
    # then spin and steal the exporter's cores (6x slower drift on 2 cores).
    # Weights are step lengths / (n*m), so no partial sum exceeds the result.
    scale = 1.0 / (float(n) * float(m)) / unit
    return float(np.einsum("i,i->", np.abs(u - v[j0]), len0 * scale) + np.einsum("i,i->", np.abs(u - v[j1]), len1 * scale))


#: Grids for larger samples (batch runs on big files) are not cached: 32 bytes per value.
GRID_CACHE_MAX = 200_000


@lru_cache(maxsize=4)
def _grid(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where the quantile steps of an n-sample meet those of an m-sample (n >= m).

    Step i of the n-sample covers ``[i*m, (i+1)*m)`` and step j of the
    m-sample ``[j*n, (j+1)*n)``, both in units of ``1/(n*m)``.  Returns, per
    step i, the m-sample steps ``j0`` (where step i starts) and ``j1`` (the
    next one) and the lengths of step i lying in each.  Depends only on the
    sizes, so it is cached: the features of one window usually share n.
    """
    start = np.arange(n, dtype=np.int64) * m
    j0 = start // n
    end = start + m
    b = np.minimum((j0 + 1) * n, end)
    len0 = (b - start).astype(np.float64)
    len1 = (end - b).astype(np.float64)
    j1 = np.minimum(j0 + 1, m - 1)
    for a in (j0, j1, len0, len1):
        a.flags.writeable = False
    return j0, j1, len0, len1


def normalised_wasserstein(u_sorted: np.ndarray, ref: NumericalProfile) -> float:
    if ref.scale > 0:
        return wasserstein_sorted(u_sorted, ref.sample, unit=ref.scale)
    return changed_share(u_sorted, ref)


def changed_share(values: np.ndarray, ref: NumericalProfile) -> float:
    """Share of ``values`` different from a constant reference's value."""
    return float(np.count_nonzero(values != ref.min) / len(values)) if len(values) else 0.0


@register
class Wasserstein(DriftMethod):
    name = "wasserstein"
    feature_types = frozenset({"numerical"})
    default_threshold = 0.1
    needs_values = True
    #: Without drift W1/std ~ c/sqrt(n) with c about 0.6..1.3 (heavier tails:
    #: larger); at 1000 values it stays below 0.1 (docs/drift.md).
    min_values = 1000

    def compute(self, ref: NumericalProfile, cur: CurrentColumn, threshold: float) -> DriftResult:  # type: ignore[override]
        return self.distance_result(normalised_wasserstein(cur.sorted_values(), ref), threshold)
