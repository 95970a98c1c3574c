"""Scores one window of one model against its frozen reference profile.

The engine is given a :class:`~modelmon.windows.WindowSnapshot` whose columns
follow :class:`FeatureLayout` and returns a :class:`DriftReport`: per feature
and method a :class:`~.base.DriftResult` (or nothing when the window holds
fewer than ``min_samples`` values), dataset drift, and data-quality rates.
The same engine serves the exporter and the batch ``modelmon drift`` command,
so both report the same numbers for the same data.

Method choice when the config names none (the rule Evidently users know,
applied on the *reference* size so that the method, and hence the ``method``
label, never changes between windows):

- reference <= ``small_sample_max`` rows: KS (numerical) / chi-square
  (categorical), drift at p-value < 0.05;
- larger references: Wasserstein distance normalised by the reference std
  (numerical) / Jensen-Shannon distance (categorical), drift at >= 0.1;
- PSI is always added (0.1 warn; the alert rules use 0.25 as critical).

The first method of a feature is its *primary* method: it decides whether the
feature counts as drifted for dataset drift.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..config import DriftConfig, FeatureConfig
from . import registry
from .base import CurrentColumn, DriftResult
from .reference import CategoricalProfile, NumericalProfile, ReferenceProfile


def default_methods(ftype: str, reference_rows: int, cfg: DriftConfig) -> list[str]:
    """The default rule (module docs); only methods that are registered."""
    small = reference_rows <= cfg.small_sample_max
    if ftype == "numerical":
        wanted = ["ks" if small else "wasserstein", "psi"]
    else:
        wanted = ["chisquare" if small else "jensenshannon", "psi"]
    known = set(registry.names())
    chosen = [m for m in wanted if m in known and ftype in registry.get(m).feature_types]
    if not chosen:
        chosen = [m for m in ("meanstd",) if ftype in registry.get(m).feature_types]
    return chosen


@dataclass(slots=True)
class FeaturePlan:
    name: str
    type: str
    #: Row of this feature in the window's ``num``/``num_bin`` or ``cat`` column.
    row: int
    profile: NumericalProfile | CategoricalProfile
    methods: list[tuple[str, float]]  # (method name, threshold)


@dataclass(slots=True)
class FeatureReport:
    name: str
    type: str
    n: int
    missing_ratio: float
    out_of_range_ratio: float | None  # numerical only
    new_category_ratio: float | None  # categorical only
    primary: str
    results: dict[str, DriftResult | None]  # None: fewer than min_samples values

    @property
    def drifted(self) -> bool | None:
        r = self.results.get(self.primary)
        return None if r is None else r.drifted


@dataclass(slots=True)
class DriftReport:
    window: str
    size: int
    features: dict[str, FeatureReport] = field(default_factory=dict)
    drifted_features: int = 0
    evaluated_features: int = 0
    drifted_share: float | None = None
    dataset_drifted: bool | None = None
    duration_seconds: float = 0.0
    timestamp: float = 0.0


class FeatureLayout:
    """Which window row each feature occupies."""

    def __init__(self, features: Sequence[FeatureConfig]):
        self.numerical = [f.name for f in features if f.type == "numerical"]
        self.categorical = [f.name for f in features if f.type == "categorical"]
        self.row = {name: i for i, name in enumerate(self.numerical)}
        self.row.update({name: i for i, name in enumerate(self.categorical)})


class DriftEngine:
    """Scores windows for one model.  Stateless between calls (thread-safe)."""

    def __init__(
        self,
        features: Sequence[FeatureConfig],
        profile: ReferenceProfile,
        cfg: DriftConfig,
        dataset_share_threshold: float = 0.5,
        force_method: str | None = None,
    ):
        self.cfg = cfg
        self.profile = profile
        self.layout = FeatureLayout(features)
        self.dataset_share_threshold = dataset_share_threshold
        self.plans: list[FeaturePlan] = []
        for f in features:
            prof = profile.features[f.name]
            if force_method is not None:
                names = [force_method] if f.type in registry.get(force_method).feature_types else []
            else:
                names = list(f.methods) or [m for m in cfg.methods if f.type in registry.get(m).feature_types]
                if not names:
                    names = default_methods(f.type, profile.rows, cfg)
            methods = []
            for m in names:
                method = registry.get(m)
                thr = f.threshold if f.threshold is not None else method.default_threshold
                methods.append((m, thr))
            self.plans.append(FeaturePlan(f.name, f.type, self.layout.row[f.name], prof, methods))
        self.plans_by_name = {p.name: p for p in self.plans}
        self.needs_values = any(registry.get(m).needs_values for p in self.plans for m, _ in p.methods)

    def compute(self, window: str, size: int, columns: dict[str, np.ndarray], counts: dict[str, np.ndarray]) -> DriftReport:
        """Score a window given its columns and running counts.

        ``columns['num']`` (float, NaN = missing) and ``columns['cat']`` (codes,
        -1 = missing) are only read by methods that need raw values.
        ``counts['num_bin']`` / ``counts['cat']`` are the per-slot counts.
        """
        t0 = time.perf_counter()
        report = DriftReport(window=window, size=size)
        for plan in self.plans:
            if plan.type == "numerical":
                slot_counts = counts["num_bin"][plan.row, : plan.profile.slots]
                n = int(slot_counts.sum())
                values = None
                if any(registry.get(m).needs_values for m, _ in plan.methods) and n:
                    raw = columns["num"][plan.row]
                    values = raw[~np.isnan(raw)]
                oor = (int(slot_counts[0]) + int(slot_counts[-1])) / n if n else None
                new_cat = None
            else:
                slot_counts = counts["cat"][plan.row, : plan.profile.slots]
                n = int(slot_counts.sum())
                values = None
                if any(registry.get(m).needs_values for m, _ in plan.methods) and n:
                    raw = columns["cat"][plan.row]
                    values = raw[raw >= 0]
                oor = None
                new_cat = int(slot_counts[-1]) / n if n and plan.profile.counts[-1] == 0 else (0.0 if n else None)
            cur = CurrentColumn(values=values if values is not None else np.empty(0), counts=slot_counts)
            results: dict[str, DriftResult | None] = {}
            for m, thr in plan.methods:
                if n < self.cfg.min_samples:
                    results[m] = None
                else:
                    results[m] = registry.get(m).compute(plan.profile, cur, thr)
            missing = size - n
            fr = FeatureReport(
                name=plan.name, type=plan.type, n=n,
                missing_ratio=(missing / size) if size else 0.0,
                out_of_range_ratio=oor, new_category_ratio=new_cat,
                primary=plan.methods[0][0] if plan.methods else "", results=results,
            )
            report.features[plan.name] = fr
            if fr.drifted is not None:
                report.evaluated_features += 1
                report.drifted_features += int(fr.drifted)
        if report.evaluated_features:
            report.drifted_share = report.drifted_features / report.evaluated_features
            report.dataset_drifted = report.drifted_share >= self.dataset_share_threshold
        report.duration_seconds = time.perf_counter() - t0
        report.timestamp = time.time()
        return report
