"""Global feature importance from per-event attributions, and how its ranking moved.

The model service computes attributions (SHAP values, integrated gradients,
LIME weights...) and sends them with each event; modelmon only watches them.
For a set of events the *importance* of feature ``f`` is its mean absolute
attribution ``I_f = mean(|a_f|)`` over the events that carry one, and its
*share* is ``I_f / sum_g I_g``.

The ranking of the window's importances is compared with the reference's by
Spearman's rank correlation: the Pearson correlation of the two rank vectors,
ties given their average rank (as ``scipy.stats.spearmanr``).  1 means the same
order, 0 no relation, -1 the order reversed.  It is undefined (``None``) for
fewer than two features or when either side gives every feature the same
importance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Name of the reference profile section holding the importance profile.
IMPORTANCE_SECTION = "attribution_importance"


def mean_abs_attribution(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``values`` (features x events, NaN = no attribution): the mean
    absolute attribution (NaN when the row has none) and the count of values."""
    a = np.abs(np.asarray(values, dtype=np.float64))
    if a.ndim == 1:
        a = a[None, :]
    present = ~np.isnan(a)
    counts = present.sum(axis=1)
    sums = np.where(present, a, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), math.nan)
    return means, counts


def shares(importance: np.ndarray) -> np.ndarray:
    """Each importance over their total (NaN entries count as 0); all NaN when the total is 0."""
    imp = np.nan_to_num(np.asarray(importance, dtype=np.float64), nan=0.0)
    total = imp.sum()
    if total <= 0:
        return np.full(imp.shape, math.nan)
    return imp / total


def rank_average(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, tied values sharing their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    # Start index of each run of equal values.
    new = np.r_[True, sx[1:] != sx[:-1]]
    run = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = avg[run]
    return ranks


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float | None:
    """Spearman's rank correlation of two importance vectors (``None`` when undefined)."""
    a = np.nan_to_num(np.asarray(a, dtype=np.float64), nan=0.0)
    b = np.nan_to_num(np.asarray(b, dtype=np.float64), nan=0.0)
    if a.shape != b.shape or a.size < 2:
        return None
    ra, rb = rank_average(a), rank_average(b)
    da, db = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(da @ da) * float(db @ db))
    if denom == 0.0:
        return None
    return max(-1.0, min(1.0, float(da @ db) / denom))


@dataclass
class ImportanceProfile:
    """The reference's importance per feature (frozen with the profile)."""

    features: list[str]
    importance: np.ndarray
    #: Reference rows carrying an attribution, per feature.
    counts: np.ndarray

    @classmethod
    def fit(cls, attributions: Mapping[str, np.ndarray]) -> ImportanceProfile:
        """From reference attribution columns keyed by feature name."""
        names = list(attributions)
        if not names:
            raise ValueError("no attribution columns")
        mat = np.vstack([np.asarray(attributions[n], dtype=np.float64) for n in names])
        mat[~np.isfinite(mat)] = math.nan
        imp, counts = mean_abs_attribution(mat)
        empty = [n for n, c in zip(names, counts) if c == 0]
        if empty:
            raise ValueError(f"attribution column of {', '.join(empty)} has no finite values")
        return cls(features=names, importance=imp, counts=counts.astype(np.int64))

    def shares(self) -> np.ndarray:
        return shares(self.importance)

    def to_section(self) -> dict[str, Any]:
        return {"features": list(self.features), "importance": self.importance.tolist(),
                "counts": self.counts.tolist()}

    @classmethod
    def from_section(cls, data: Mapping[str, Any], where: str = IMPORTANCE_SECTION) -> ImportanceProfile:
        try:
            feats = [str(f) for f in data["features"]]
            imp = np.asarray(data["importance"], dtype=np.float64)
            counts = np.asarray(data["counts"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: expected features, importance and counts ({exc})") from None
        if not (len(feats) == imp.size == counts.size) or not np.all(np.isfinite(imp)) or np.any(imp < 0):
            raise ValueError(f"{where}: features, importance and counts must have one finite, non-negative entry each")
        return cls(features=feats, importance=imp, counts=counts)


@dataclass
class ImportanceComparison:
    """A window's importance next to the reference's."""

    features: list[str]
    importance: np.ndarray
    shares: np.ndarray
    reference_importance: np.ndarray
    reference_shares: np.ndarray
    #: Events of the window carrying any attribution.
    n: int
    rank_correlation: float | None
    threshold: float
    #: ``None`` while the correlation is undefined or the window too small.
    drifted: bool | None


def compare_importance(window: np.ndarray, reference: ImportanceProfile, threshold: float,
                       min_samples: int = 1) -> ImportanceComparison:
    """Importance of ``window`` (features x events in ``reference.features`` order, NaN = none)
    against ``reference``; ranking changed when the rank correlation is below ``threshold``."""
    imp, counts = mean_abs_attribution(window)
    n = int(counts.max()) if counts.size else 0
    rc = spearman(imp, reference.importance) if n > 0 else None
    drifted = None if rc is None or n < min_samples else rc < threshold
    return ImportanceComparison(
        features=list(reference.features), importance=imp, shares=shares(imp),
        reference_importance=reference.importance, reference_shares=reference.shares(),
        n=n, rank_correlation=rc, threshold=threshold, drifted=drifted,
    )
