"""Per-event outlier score against the reference, vectorised per batch.

The score of an event is a sum of two parts, both on the scale of
``-2 log likelihood`` so they add up:

* numerical features, standardised by the reference mean and standard
  deviation (``z = (x - mean) / sd``; a missing value gives ``z = 0``), enter
  through the squared Mahalanobis distance ``d^2 = z' P z`` where ``P`` is the
  inverse of the reference correlation matrix shrunk towards the identity,
  ``C_reg = (1 - s) C + s I`` (``s`` = ``shrinkage``): shrinkage keeps ``P``
  finite for collinear or constant features and damps directions the
  reference barely spans;
* each categorical feature adds ``2 (log p_max - log p_c)``, where ``p_c`` is
  the reference share of the event's category slot (add-one-half smoothed,
  unseen categories fall in the ``__other__`` slot, which may have no
  reference count at all) and ``p_max`` that of the most common one: the most
  common category adds 0, rare and unseen ones add more.

An event is *outlying* when its score exceeds ``threshold``, the configured
quantile (default 99.5 %) of the reference's own scores, so about
``1 - quantile`` of clean data is flagged; ``reference_share`` is that share as
measured on the reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..drift.reference import FENCE_IQRS, safe_moments, sorted_quantiles

#: Standardised values are capped here when scoring: an event this far out is an
#: outlier whatever the covariance says, and squaring 1e300 would overflow.
Z_CAP = 1e6

#: Name of the reference profile section holding the outlier model.
OUTLIER_SECTION = "outlier_model"


@dataclass
class OutlierModel:
    numerical: list[str]
    mean: np.ndarray
    scale: np.ndarray
    #: Inverse of the shrunk reference correlation matrix, ``len(numerical)`` square.
    precision: np.ndarray
    categorical: list[str]
    #: Per categorical feature, the score added by each category slot (last = ``__other__``).
    penalties: list[np.ndarray]
    quantile: float
    threshold: float
    reference_share: float
    shrinkage: float

    def score(self, num: np.ndarray, cat: np.ndarray | None = None) -> np.ndarray:
        """Scores of ``n`` events: ``num`` is (numerical x n) float with NaN for missing, in
        :attr:`numerical` order; ``cat`` is (categorical x n) slot codes, -1 for missing."""
        num = np.asarray(num, dtype=np.float64)
        n = num.shape[-1] if num.size or cat is None else np.asarray(cat).shape[-1]
        out = np.zeros(n)
        if self.numerical:
            num = num.reshape(len(self.numerical), n)
            with np.errstate(over="ignore", invalid="ignore"):
                z = (num - self.mean[:, None]) / self.scale[:, None]
            z[np.isnan(z)] = 0.0
            # Far beyond any threshold already; the cap keeps the quadratic form finite.
            np.clip(z, -Z_CAP, Z_CAP, out=z)
            out += np.einsum("in,in->n", z, self.precision @ z)
        if self.categorical and cat is not None:
            cat = np.asarray(cat).reshape(len(self.categorical), -1)
            for pen, codes in zip(self.penalties, cat):
                ok = (codes >= 0) & (codes < len(pen))
                out[ok] += pen[codes[ok]]
        return out

    def outlying(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    # ------------------------------------------------------------ persistence
    def to_section(self) -> dict[str, Any]:
        return {
            "numerical": list(self.numerical), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
            "precision": self.precision.tolist(), "categorical": list(self.categorical),
            "penalties": [p.tolist() for p in self.penalties], "quantile": self.quantile,
            "threshold": self.threshold, "reference_share": self.reference_share, "shrinkage": self.shrinkage,
        }

    @classmethod
    def from_section(cls, d: Mapping[str, Any], where: str = OUTLIER_SECTION) -> OutlierModel:
        try:
            num = [str(x) for x in d["numerical"]]
            k = len(num)
            model = cls(
                numerical=num,
                mean=np.asarray(d["mean"], dtype=np.float64).reshape(k),
                scale=np.asarray(d["scale"], dtype=np.float64).reshape(k),
                precision=np.asarray(d["precision"], dtype=np.float64).reshape(k, k),
                categorical=[str(x) for x in d["categorical"]],
                penalties=[np.asarray(p, dtype=np.float64) for p in d["penalties"]],
                quantile=float(d["quantile"]), threshold=float(d["threshold"]),
                reference_share=float(d["reference_share"]), shrinkage=float(d["shrinkage"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: malformed outlier model ({exc})") from None
        arrays = [model.mean, model.scale, model.precision, *model.penalties]
        if len(model.penalties) != len(model.categorical) or not all(np.all(np.isfinite(a)) for a in arrays) \
                or np.any(model.scale <= 0) or not math.isfinite(model.threshold):
            raise ValueError(f"{where}: outlier model has non-finite values or mismatched lengths")
        return model


def winsorised(x: np.ndarray) -> np.ndarray:
    """``x`` (NaN for missing) with finite values clipped to the IQR fences the
    reference profile uses for its robust scale."""
    finite = np.sort(x[np.isfinite(x)])
    if len(finite) < 2:
        return x
    q1, q3 = sorted_quantiles(finite, np.array([0.25, 0.75]))
    iqr = float(q3 - q1)
    if not math.isfinite(iqr) or iqr <= 0:
        return x
    return np.clip(x, q1 - FENCE_IQRS * iqr, q3 + FENCE_IQRS * iqr)


def category_penalties(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """``2 (log p_max - log p_c)`` per category slot, shares add-one-half smoothed."""
    c = np.asarray(counts, dtype=np.float64)
    p = (c + 0.5) / (c.sum() + 0.5 * len(c))
    return 2.0 * (math.log(p.max()) - np.log(p))


def fit_outlier_model(
    numerical: Mapping[str, np.ndarray],
    categorical: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    quantile: float = 0.995,
    shrinkage: float = 0.01,
) -> OutlierModel:
    """Fit on reference rows.

    ``numerical``: name -> float column (NaN for missing).  ``categorical``:
    name -> (slot codes of each reference row, -1 for missing; reference count
    per slot).  All columns have the reference's row count.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError("quantile must be between 0 and 1")
    if not 0.0 < shrinkage <= 1.0:
        raise ValueError("shrinkage must be in (0, 1]")
    categorical = dict(categorical or {})
    names = list(numerical)
    if names:
        x = np.vstack([np.asarray(numerical[n], dtype=np.float64) for n in names])
        x[~np.isfinite(x)] = math.nan
        # Location, scale and correlation come from the reference winsorised at
        # the profile's IQR fences, so one extreme value (1e300) neither
        # overflows the moments nor swamps the correlation matrix.
        w = np.vstack([winsorised(r) for r in x])
        mean = np.zeros(len(names))
        sd = np.zeros(len(names))
        for i, r in enumerate(w):
            finite = r[np.isfinite(r)]
            if len(finite):
                mean[i], sd[i] = safe_moments(finite)
        # A constant feature keeps a tiny scale: any other value is then far out.
        scale = np.where(sd > 0, sd, 1e-6 * np.maximum(1.0, np.abs(mean)))
        z = (w - mean[:, None]) / scale[:, None]
        z[np.isnan(z)] = 0.0
        corr = (z @ z.T) / max(z.shape[1], 1)
        reg = (1.0 - shrinkage) * corr + shrinkage * np.eye(len(names))
        precision = np.linalg.inv(reg)
        precision = (precision + precision.T) / 2.0
        rows = x.shape[1]
    else:
        mean = scale = np.zeros(0)
        precision = np.zeros((0, 0))
        rows = len(next(iter(categorical.values()))[0]) if categorical else 0
    model = OutlierModel(
        numerical=names, mean=mean, scale=scale, precision=precision,
        categorical=list(categorical), penalties=[category_penalties(c) for _, c in categorical.values()],
        quantile=quantile, threshold=math.inf, reference_share=0.0, shrinkage=shrinkage,
    )
    if rows == 0:
        raise ValueError("no reference rows to fit the outlier model on")
    cat = np.vstack([np.asarray(codes) for codes, _ in categorical.values()]) if categorical else None
    scores = model.score(x if names else np.zeros((0, rows)), cat)
    model.threshold = float(np.quantile(scores, quantile))
    model.reference_share = float(np.mean(scores > model.threshold))
    return model
