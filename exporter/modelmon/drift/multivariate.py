"""Multivariate drift: PCA reconstruction error (NannyML's data reconstruction drift).

Per-feature methods look at one marginal distribution at a time, so a change
in how features move *together* (two features that used to rise together
now move independently, each with its old distribution) passes all of them.
This detector learns the reference's correlation structure as a few
principal components and measures how badly a window's rows are rebuilt
from them:

1. encode each row: numerical features as they are (missing: the reference
   mean), categorical features as the reference frequency of their category
   (frequency encoding, one column per feature; missing: the most frequent
   category's frequency), then standardise every column with the reference
   mean and standard deviation;
2. fit PCA on the reference by SVD and keep the fewest components whose
   explained variance reaches ``variance_share`` (65 % by default, at most
   all but one component, else nothing would be lost);
3. a row's reconstruction error is the Euclidean distance between the
   standardised row and its projection back from the components; the
   window's statistic is the mean over its rows;
4. the threshold is ``mean +- sigmas * spread`` of the same statistic over
   consecutive reference chunks.  The spread is stored per row
   (chunk standard deviation x ``sqrt(chunk rows)``, or the rows' own
   standard deviation when larger), so a window of ``n``
   rows gets ``row_sigma * sqrt(1/n + 1/m)``: a mean over more rows varies
   less, and ``m``, the rows the reference mean was measured on, bounds how
   precisely "no change" is known at all.

The reference is split in two, interleaved (even rows, odd rows): PCA is
fitted on one half and the threshold measured on the other.  Measured on the
rows it was fitted on, the error is biased low (PCA picks the directions
that *happen* to hold most variance in that sample; with weakly correlated
features that bias is several standard errors), so fresh data without drift
would look drifted.

Each feature's *share* of the error is its share of the window's squared
residuals: which features the broken relation runs through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..chunking import split_even

#: Largest standardised value used: its square (1e100) summed over any window stays finite.
Z_LIMIT = 1e50


@dataclass
class MultivariateResult:
    n: int
    #: None below the model's ``min_rows``.
    reconstruction_error: float | None = None
    lower: float | None = None
    upper: float | None = None
    drifted: bool = False
    feature_share: dict[str, float] = field(default_factory=dict)


@dataclass
class PCADriftModel:
    """The fitted detector (a section of the reference profile)."""

    numerical: list[str]
    categorical: list[str]
    #: Missing numerical value -> this (the reference mean).
    num_fill: list[float]
    #: Per categorical feature, the reference frequency of each category slot
    #: (the profile's categories, then ``__other__``) and the missing fill.
    cat_freq: list[list[float]]
    cat_fill: list[float]
    center: np.ndarray
    scale: np.ndarray
    #: (k, d) principal axes.
    components: np.ndarray
    variance_share: float
    explained_share: float
    mean_error: float
    row_sigma: float
    reference_rows: int
    chunk_rows: int
    #: Held-out reference rows the mean error was measured on.
    calibration_rows: int = 0
    sigmas: float = 3.0
    min_rows: int = 100

    @property
    def features(self) -> list[str]:
        return self.numerical + self.categorical

    def encode(self, numerical: Mapping[str, np.ndarray], codes: Mapping[str, np.ndarray]) -> np.ndarray:
        """Columns ``(d, n)`` (one row per feature, contiguous: the window's
        own layout), unstandardised: ``numerical[name]`` float values (NaN
        missing), ``codes[name]`` category slots of the profile (-1 missing)."""
        cols = []
        for name, fill in zip(self.numerical, self.num_fill):
            x = np.asarray(numerical[name], dtype=np.float64)
            cols.append(np.where(np.isfinite(x), x, fill))
        for name, freq, fill in zip(self.categorical, self.cat_freq, self.cat_fill):
            c = np.asarray(codes[name], dtype=np.int64)
            table = np.asarray(freq, dtype=np.float64)
            ok = (c >= 0) & (c < table.size)
            cols.append(np.where(ok, table[np.clip(c, 0, table.size - 1)], fill))
        return np.stack(cols, axis=0) if cols else np.zeros((0, 0))

    def residuals(self, cols: np.ndarray) -> np.ndarray:
        """Standardised values minus their reconstruction, ``(d, n)``.

        Standardised values are clipped to +-:data:`Z_LIMIT`: a value like 1e300
        in a feature whose reference is constant (scale 1) would otherwise
        overflow the squared residuals to inf (an infinite statistic, NaN
        feature shares, a JSON report that cannot be written).  Anything that
        far out is drifted either way."""
        with np.errstate(over="ignore", invalid="ignore"):
            z = np.clip((cols - self.center[:, None]) / self.scale[:, None], -Z_LIMIT, Z_LIMIT)
        return z - self.components.T @ (self.components @ z)

    def evaluate(self, numerical: Mapping[str, np.ndarray], codes: Mapping[str, np.ndarray]) -> MultivariateResult:
        cols = self.encode(numerical, codes)
        res = MultivariateResult(n=int(cols.shape[1]) if cols.size else 0)
        if res.n < self.min_rows or res.n == 0:
            return res
        r = self.residuals(cols)
        sq = r * r
        res.reconstruction_error = float(np.sqrt(sq.sum(axis=0)).mean())
        res.lower, res.upper = self.bounds(res.n)
        res.drifted = not (res.lower <= res.reconstruction_error <= res.upper)
        per = sq.sum(axis=1)
        total = float(per.sum())
        res.feature_share = {f: (float(v) / total if total > 0 else 0.0) for f, v in zip(self.features, per)}
        return res

    def bounds(self, n: int) -> tuple[float, float]:
        """(lower, upper) threshold for a window of ``n`` rows."""
        extra = 1.0 / self.calibration_rows if self.calibration_rows else 0.0
        half = self.sigmas * self.row_sigma * np.sqrt(1.0 / n + extra)
        return float(max(0.0, self.mean_error - half)), float(self.mean_error + half)

    def to_dict(self) -> dict[str, Any]:
        return {"numerical": self.numerical, "categorical": self.categorical, "num_fill": self.num_fill,
                "cat_freq": self.cat_freq, "cat_fill": self.cat_fill, "center": self.center.tolist(),
                "scale": self.scale.tolist(), "components": self.components.tolist(),
                "variance_share": self.variance_share, "explained_share": self.explained_share,
                "mean_error": self.mean_error, "row_sigma": self.row_sigma, "reference_rows": self.reference_rows,
                "chunk_rows": self.chunk_rows, "calibration_rows": self.calibration_rows,
                "sigmas": self.sigmas, "min_rows": self.min_rows}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PCADriftModel:
        d = dict(d)
        d["center"] = np.asarray(d["center"], dtype=np.float64)
        d["scale"] = np.asarray(d["scale"], dtype=np.float64)
        d["components"] = np.asarray(d["components"], dtype=np.float64).reshape(-1, len(d["center"]))
        return cls(**d)


def fit_pca_drift(numerical: Mapping[str, np.ndarray], codes: Mapping[str, np.ndarray], slots: Mapping[str, int], *,
                  variance_share: float = 0.65, chunks: int = 50, min_chunk_rows: int = 20, sigmas: float = 3.0,
                  min_rows: int = 100) -> PCADriftModel:
    """Fit on reference rows in the reference's order (see the module docs
    for the split into a fitting and a threshold half).  ``slots[name]`` is
    the number of category slots of each categorical feature.  Raises
    ``ValueError`` when fewer than two features are given or the reference
    is too small for two chunks."""
    num_names, cat_names = list(numerical), list(codes)
    if len(num_names) + len(cat_names) < 2:
        raise ValueError("multivariate drift needs at least two features")
    num_fill = []
    for name in num_names:
        x = np.asarray(numerical[name], dtype=np.float64)
        finite = x[np.isfinite(x)]
        if finite.size == 0:
            raise ValueError(f"feature {name!r}: no numerical values in the reference")
        num_fill.append(float(finite.mean()))
    cat_freq, cat_fill = [], []
    for name in cat_names:
        c = np.asarray(codes[name], dtype=np.int64)
        valid = c[c >= 0]
        if valid.size == 0:
            raise ValueError(f"feature {name!r}: no values in the reference")
        freq = np.bincount(valid, minlength=slots[name]).astype(np.float64) / valid.size
        cat_freq.append(freq.tolist())
        cat_fill.append(float(freq.max()))
    model = PCADriftModel(num_names, cat_names, num_fill, cat_freq, cat_fill, center=np.zeros(0), scale=np.ones(0),
                          components=np.zeros((0, 0)), variance_share=variance_share, explained_share=0.0,
                          mean_error=0.0, row_sigma=0.0, reference_rows=0, chunk_rows=0, sigmas=sigmas,
                          min_rows=min_rows)
    cols = model.encode(numerical, codes)
    fit, held = cols[:, 0::2], cols[:, 1::2]
    bounds = split_even(held.shape[1], chunks, min_chunk_rows)
    d = cols.shape[0]
    model.center = fit.mean(axis=1)
    std = fit.std(axis=1)
    model.scale = np.where(std > 0, std, 1.0)
    z = (fit - model.center[:, None]) / model.scale[:, None]
    _, sing, vt = np.linalg.svd(z.T, full_matrices=False)
    var = sing ** 2
    share = np.cumsum(var) / var.sum() if var.sum() > 0 else np.ones_like(var)
    k = int(min(np.searchsorted(share, variance_share - 1e-12) + 1, d - 1))
    model.components = vt[:k]
    model.explained_share = float(share[k - 1])
    err = np.sqrt((model.residuals(held) ** 2).sum(axis=0))
    per_chunk = np.array([err[a:b].mean() for a, b in bounds])
    model.chunk_rows = held.shape[1] // len(bounds)
    model.mean_error = float(err.mean())
    # The larger of the chunks' spread (which sees slow change inside the
    # reference) and the rows' own (precise when rows are independent: a
    # spread over a few dozen chunks of heavy-tailed errors is often 15 %
    # low, which doubles or triples the false alarms).
    model.row_sigma = float(max(per_chunk.std(ddof=1) * np.sqrt(model.chunk_rows), err.std(ddof=1)))
    model.reference_rows = int(cols.shape[1])
    model.calibration_rows = int(held.shape[1])
    return model
