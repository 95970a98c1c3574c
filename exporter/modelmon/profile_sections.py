"""The optional reference profile sections of a model, fitted from reference columns.

``outlier_model`` (:mod:`modelmon.anomaly`) holds the per-event outlier score's
parameters and threshold; ``attribution_importance`` (:mod:`modelmon.explain`)
the reference's importance per feature.  Both are frozen with the profile, so
the exporter, its replicas and ``modelmon drift`` flag the same events and
compare with the same ranking.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .anomaly import OUTLIER_SECTION, OutlierModel, fit_outlier_model
from .config import ModelConfig
from .drift.reference import (
    CategoricalProfile,
    NumericalProfile,
    ProfileError,
    ReferenceProfile,
    register_section,
    to_float_array,
)
from .estimation.sections import column_values
from .explain import IMPORTANCE_SECTION, ImportanceProfile

log = logging.getLogger(__name__)


def _validator(load: Any) -> Any:
    def validate(value: Any, where: str) -> None:
        try:
            load(value, where)
        except ValueError as exc:
            raise ProfileError(str(exc)) from None
    return validate


# A malformed section is refused when the profile is loaded, naming the file.
register_section(OUTLIER_SECTION, _validator(OutlierModel.from_section))
register_section(IMPORTANCE_SECTION, _validator(ImportanceProfile.from_section))


def fit_explain_sections(profile: ReferenceProfile, columns: Mapping[str, Any], model: ModelConfig) -> None:
    """Store in ``profile`` the sections ``model`` asks for, fitted on the reference ``columns``.

    Raises ``ValueError`` naming the column when the reference lacks an attribution column.
    """
    sections: dict[str, Any] = {}
    if model.outliers.enabled:
        num = {f.name: to_float_array(column_values(columns[f.name])) for f in model.features
               if isinstance(profile.features.get(f.name), NumericalProfile)}
        cat = {}
        for f in model.features:
            prof = profile.features.get(f.name)
            if isinstance(prof, CategoricalProfile):
                cat[f.name] = (prof.codes(column_values(columns[f.name])), prof.counts)
        if num or cat:
            sections[OUTLIER_SECTION] = fit_outlier_model(
                num, cat, quantile=model.outliers.quantile, shrinkage=model.outliers.shrinkage).to_section()
    if model.attributions.enabled:
        cols = model.attribution_columns()
        missing = [c for c in cols.values() if c not in columns]
        if missing:
            raise ValueError(f"attributions.enabled needs reference columns {', '.join(missing)}")
        sections[IMPORTANCE_SECTION] = ImportanceProfile.fit(
            {f: to_float_array(column_values(columns[c])) for f, c in cols.items()}).to_section()
    for name, content in sections.items():
        profile.set_section(name, content)


def outlier_model(profile: ReferenceProfile | None, model: ModelConfig) -> OutlierModel | None:
    """The profile's outlier model when ``model`` enables it (a profile built without one logs why)."""
    if profile is None or not model.outliers.enabled:
        return None
    data = profile.sections.get(OUTLIER_SECTION)
    if data is None:
        log.warning("reference profile has no outlier model: outlier monitoring is off for this model "
                    "(rebuild it with modelmon reference build)", extra={"model": model.name})
        return None
    return OutlierModel.from_section(data, f"model {model.name}: sections[{OUTLIER_SECTION!r}]")


def importance_profile(profile: ReferenceProfile | None, model: ModelConfig) -> ImportanceProfile | None:
    """The profile's importance profile when ``model`` enables attributions."""
    if profile is None or not model.attributions.enabled:
        return None
    data = profile.sections.get(IMPORTANCE_SECTION)
    if data is None:
        raise ValueError(f"model {model.name}: attributions.enabled but the reference profile has no "
                         f"{IMPORTANCE_SECTION!r} section (rebuild it from data with attribution columns)")
    imp = ImportanceProfile.from_section(data, f"model {model.name}: sections[{IMPORTANCE_SECTION!r}]")
    expected = [f.name for f in model.features]
    if imp.features != expected:
        raise ValueError(f"model {model.name}: the profile's importance covers {imp.features}, the model has {expected}")
    return imp
