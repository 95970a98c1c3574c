"""The label-free estimators as sections of a reference profile.

``fit_sections`` fits, from the raw reference table, the estimators a model's
config enables and stores them in the profile (``performance_estimation``:
:class:`~.cbpe.CBPEModel`, ``multivariate_drift``:
:class:`~modelmon.drift.multivariate.PCADriftModel`); ``load_estimators``
reads them back, with an error when an enabled one is missing.  The encoders
here are the one place both the exporter's monitor and the batch command
turn raw values into the estimators' inputs, so both give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import PREDICTION_FEATURE, SCORE_FEATURE, ModelConfig
from ..drift.multivariate import PCADriftModel, fit_pca_drift
from ..drift.reference import (
    CategoricalProfile,
    NumericalProfile,
    ReferenceProfile,
    to_float_array,
)
from .cbpe import CBPEModel, fit_cbpe

PERFORMANCE = "performance_estimation"
MULTIVARIATE = "multivariate_drift"
LABEL = "label"
OUTPUT_COLUMNS = (PREDICTION_FEATURE, SCORE_FEATURE, LABEL)


def column_values(col: Any) -> Sequence[Any] | np.ndarray:
    """A table column's raw values: lists and arrays as they are; a typed
    column (``kind`` numerical: float ``values``, NaN missing; categorical:
    ``codes`` into ``dictionary``, -1 missing; empty) as an array or list."""
    kind = getattr(col, "kind", None)
    if kind == "numerical":
        return np.asarray(col.values, dtype=np.float64)
    if kind == "categorical":
        lookup = np.array([*col.dictionary, None], dtype=object)
        codes = np.asarray(col.codes)
        return lookup[np.where(codes >= 0, codes, len(col.dictionary))]
    if kind == "empty":
        return [None] * len(col)
    return col  # type: ignore[no-any-return]


def positive_indicator(values: Sequence[Any] | np.ndarray, positive_class: str) -> np.ndarray:
    """1.0 where the value is the positive class, 0.0 for another class, NaN
    when missing.  Strings are compared as strings (as the exporter codes
    classes); numbers by value when the positive class is a number, so a
    label column read as floats (1.0) still matches ``"1"``."""
    try:
        pos_num: float | None = float(positive_class)
    except ValueError:
        pos_num = None
    values = column_values(values)

    def one(v: Any) -> float:
        if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
            return math.nan
        if pos_num is not None and isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            return float(float(v) == pos_num)
        return float(str(v) == positive_class)

    return np.fromiter((one(v) for v in values), dtype=np.float64, count=len(values))


def scores_array(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Scores as float64, NaN for missing or non-finite."""
    s = to_float_array(column_values(values)).copy()
    s[~np.isfinite(s)] = math.nan
    return s


def encode_features(profile: ReferenceProfile, names: Sequence[str],
                    table: Mapping[str, Sequence[Any] | np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Numerical values (NaN missing) and category slot codes (-1 missing),
    exactly as the monitor stores them in its windows."""
    num: dict[str, np.ndarray] = {}
    codes: dict[str, np.ndarray] = {}
    for name in names:
        prof = profile.features[name]
        col = column_values(table[name])
        if isinstance(prof, NumericalProfile):
            x = to_float_array(col).copy()
            x[~np.isfinite(x)] = math.nan
            num[name] = x
        else:
            assert isinstance(prof, CategoricalProfile)
            vals = [None if v is None or v == "" or (isinstance(v, float) and math.isnan(v)) else v for v in col]
            codes[name] = prof.codes(vals)
    return num, codes


def fit_sections(profile: ReferenceProfile, table: Mapping[str, Sequence[Any] | np.ndarray], model: ModelConfig) -> None:
    """Fit the enabled estimators on the reference ``table`` and store them in
    ``profile``.  Raises ``ValueError`` naming the missing column or the
    reason the reference cannot be used."""
    pe, mv = model.performance_estimation, model.multivariate_drift
    if pe.enabled:
        missing = [c for c in OUTPUT_COLUMNS if c not in table]
        if missing:
            raise ValueError(f"performance estimation needs the column(s) {', '.join(repr(c) for c in missing)} "
                             "in the reference data")
        try:
            cbpe = fit_cbpe(scores_array(table[SCORE_FEATURE]),
                            positive_indicator(table[PREDICTION_FEATURE], model.positive_class),
                            positive_indicator(table[LABEL], model.positive_class),
                            metrics=pe.metrics, calibration=pe.calibration, chunks=pe.reference_chunks,
                            sigmas=pe.sigmas, min_rows=pe.min_samples)
        except ValueError as exc:
            raise ValueError(f"performance estimation: {exc}") from None
        profile.set_section(PERFORMANCE, cbpe.to_dict())
    if mv.enabled:
        names = [f.name for f in model.multivariate_features()]
        absent = [n for n in names if n not in profile.features]
        if absent:
            raise ValueError(f"multivariate drift: the profile has no feature {', '.join(absent)}")
        num, codes = encode_features(profile, names, table)
        slots = {n: profile.features[n].slots for n in codes}
        try:
            pca = fit_pca_drift(num, codes, slots, variance_share=mv.variance_share, chunks=mv.reference_chunks,
                                sigmas=mv.sigmas, min_rows=mv.min_samples)
        except ValueError as exc:
            raise ValueError(f"multivariate drift: {exc}") from None
        profile.set_section(MULTIVARIATE, pca.to_dict())


@dataclass
class Estimators:
    """The fitted estimators a model uses (None when not enabled)."""

    cbpe: CBPEModel | None = None
    multivariate: PCADriftModel | None = None


def load_estimators(profile: ReferenceProfile | None, model: ModelConfig) -> Estimators:
    """The enabled estimators from ``profile``; ``ValueError`` when one is
    enabled and the profile lacks it (rebuild it with the model's config)."""
    out = Estimators()
    wanted = [(PERFORMANCE, model.performance_estimation.enabled), (MULTIVARIATE, model.multivariate_drift.enabled)]
    for key, enabled in wanted:
        if not enabled:
            continue
        section = profile.sections.get(key) if profile is not None else None
        if section is None:
            raise ValueError(f"the reference profile has no {key} section: build it with "
                             "'modelmon reference build --config' from data with the model's outputs")
        try:
            if key == PERFORMANCE:
                out.cbpe = CBPEModel.from_dict(section)
            else:
                out.multivariate = PCADriftModel.from_dict(section)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the reference profile's {key} section is invalid: {exc}") from None
    # Reporting settings come from the config, whatever the profile was built with.
    pe, mv = model.performance_estimation, model.multivariate_drift
    if out.cbpe is not None:
        out.cbpe.sigmas, out.cbpe.min_rows = pe.sigmas, pe.min_samples
        out.cbpe.metrics = [m for m in pe.metrics if m in out.cbpe.row_sigma]
    if out.multivariate is not None:
        out.multivariate.sigmas, out.multivariate.min_rows = mv.sigmas, mv.min_samples
        wanted_features = sorted(f.name for f in model.multivariate_features())
        if sorted(out.multivariate.features) != wanted_features:
            raise ValueError(f"the reference profile's {MULTIVARIATE} section covers features "
                             f"{', '.join(out.multivariate.features)}, the config {', '.join(wanted_features)}: rebuild it")
    return out
