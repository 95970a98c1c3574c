"""The mean/std drift score, modelmon's first method.

``score = (|mean_cur - mean_ref| / (std_ref + 1e-8) + |std_cur - std_ref| / (std_ref + 1e-8)) / 2``

with population standard deviations (numpy's default), and
drift when ``score > threshold`` (default 0.1).  Cheap and intuitive, blind to
shape changes that keep the first two moments; kept because
existing dashboards and thresholds rely on it.
"""

from __future__ import annotations

import numpy as np

from ..base import CurrentColumn, DriftMethod, DriftResult
from ..reference import NumericalProfile
from ..registry import register

EPS = 1e-8


def meanstd_score(ref_mean: float, ref_std: float, cur: np.ndarray) -> float:
    """The mean/std score for values ``cur`` against reference moments."""
    mean_diff = abs(float(np.mean(cur)) - ref_mean) / (ref_std + EPS)
    std_diff = abs(float(np.std(cur)) - ref_std) / (ref_std + EPS)
    return (mean_diff + std_diff) / 2.0


@register
class MeanStd(DriftMethod):
    name = "meanstd"
    feature_types = frozenset({"numerical"})
    default_threshold = 0.1
    needs_values = True

    def compute(self, ref: NumericalProfile, cur: CurrentColumn, threshold: float) -> DriftResult:  # type: ignore[override]
        score = meanstd_score(ref.mean, ref.std, cur.values)
        return DriftResult(statistic=score, p_value=None, threshold=threshold, drifted=score > threshold)
