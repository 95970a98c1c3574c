"""Mean/std drift score.

``score = (|mean_cur - mean_ref| + |std_cur - std_ref|) / (2 * scale_ref)``

with population standard deviations (ddof 0) computed without overflow, and
``scale_ref`` the profile's outlier-resistant scale (:mod:`..reference`;
the plain reference std unless it has extreme outliers).  Drift when
``score > threshold`` (default 0.1).  Cheap and intuitive, blind to shape
changes that keep the first two moments.

Constant reference (scale 0): the score is the share of window values that
differ from the reference's value, as for Wasserstein (no tiny floor that
would turn one changed value in 1000 into a score of a million).
"""

from __future__ import annotations

import numpy as np

from ..base import CurrentColumn, DriftMethod, DriftResult
from ..reference import NumericalProfile, safe_moments
from ..registry import register
from .wasserstein import changed_share


def meanstd_score(ref_mean: float, ref_std: float, cur: np.ndarray, scale: float | None = None) -> float:
    """The score for values ``cur`` against reference moments (``scale``
    defaults to ``ref_std``; it must be > 0)."""
    unit = ref_std if scale is None else scale
    mean, std = safe_moments(np.asarray(cur, dtype=np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        return (abs(mean / unit - ref_mean / unit) + abs(std / unit - ref_std / unit)) / 2.0


@register
class MeanStd(DriftMethod):
    name = "meanstd"
    feature_types = frozenset({"numerical"})
    default_threshold = 0.1
    needs_values = True

    def compute(self, ref: NumericalProfile, cur: CurrentColumn, threshold: float) -> DriftResult:  # type: ignore[override]
        if ref.scale > 0:
            score = meanstd_score(ref.mean, ref.std, cur.values, ref.scale)
        else:
            score = changed_share(cur.values, ref)
        return DriftResult(statistic=score, p_value=None, threshold=threshold, drifted=score > threshold)
