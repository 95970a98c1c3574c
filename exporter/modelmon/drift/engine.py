"""Scores one window of one model against its frozen reference profile.

The engine is given a window's columns and running counts (laid out as in
:class:`FeatureLayout`) and returns a :class:`DriftReport`: per feature and
method a :class:`~.base.DriftResult` (or nothing when the window holds fewer
values than the method needs: ``drift.min_samples``, raised for distances to
their noise floor by :meth:`~.base.DriftMethod.required_values`), dataset
drift, and data-quality rates.  The same
engine serves the exporter (:meth:`ModelMonitor.drift` passes a window
snapshot) and the batch ``modelmon drift`` command (:mod:`.batch` encodes a
file the same way), so both report the same numbers for the same data.

Method choice when the config names none (the rule Evidently users know,
applied on the *reference* size so that the method, and hence the ``method``
label, never changes between windows):

- reference <= ``small_sample_max`` rows: KS (numerical) / chi-square
  (categorical), drift at p-value < 0.05;
- larger references: Wasserstein distance normalised by the reference std
  (numerical) / Jensen-Shannon distance (categorical), drift at >= 0.1;
- PSI is always added (0.1 warn; the alert rules use 0.25 as critical).

A statistic or p-value that is not finite (NaN, infinity: values too extreme
for the method) is no verdict: the method's result is None and
``FeatureReport.errors`` says why.

The first method of a feature is its *primary* method: it decides whether the
feature counts as drifted for dataset drift, and a feature's own
``threshold`` setting applies to it (the other methods keep their defaults,
since a p-value bound and a distance bound are not interchangeable).

Cost: binned methods read only the slot counts (O(bins)).  Exact methods
(KS, Wasserstein, mean/std) need the raw values: each numerical column that
needs them is sorted once (NaN sort last, so the missing values are cut off
by the count the window already knows) and the sorted array is shared by
the methods.  Sorting dominates; with ``workers > 1`` the sorts run in a
small thread pool (numpy releases the GIL while sorting).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import DriftConfig, FeatureConfig
from . import registry
from .base import CurrentColumn, DriftMethod, DriftResult
from .reference import CategoricalProfile, NumericalProfile, ReferenceProfile

#: Worker threads sorting window columns (1 = no pool).  Two: on the 2-core
#: machines the exporter targets, the second thread cuts a 100k-row x 20
#: feature recomputation from about 60 ms to about 40 ms at the same CPU
#: cost (``bench/drift.py`` measures both); more gains little, since the
#: methods run on the calling thread.
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))


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
    impls: list[DriftMethod] = field(default_factory=list)
    needs_values: bool = False
    #: Per method: the fewest values the exporter scores it on
    #: (``drift.min_samples`` or the method's own floor, whichever is larger).
    required: list[int] = field(default_factory=list)
    #: Per method: the gate actually applied (``required``, or the explicit
    #: ``min_samples`` of a batch run).
    gate: list[int] = field(default_factory=list)


@dataclass(slots=True)
class FeatureReport:
    name: str
    type: str
    n: int
    missing_ratio: float
    out_of_range_ratio: float | None  # numerical only
    #: Categorical only, and only when the reference kept every category it
    #: saw (no ``__other__`` mass): otherwise a value in ``__other__`` may be
    #: a rare reference category, and the rate is unknown (None).
    new_category_ratio: float | None
    primary: str
    #: None: fewer values than the method requires, or an error (``errors``).
    results: dict[str, DriftResult | None]
    #: Per method: the fewest values the exporter scores it on.
    required: dict[str, int] = field(default_factory=dict)
    #: Per method: why it has no result although enough values were there
    #: (a statistic that is not finite: values too extreme for the method).
    errors: dict[str, str] = field(default_factory=dict)

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


log = logging.getLogger(__name__)

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelmon-drift")
        return _pool


class DriftEngine:
    """Scores windows for one model.  Stateless between calls (thread-safe)."""

    def __init__(
        self,
        features: Sequence[FeatureConfig],
        profile: ReferenceProfile,
        cfg: DriftConfig,
        dataset_share_threshold: float = 0.5,
        force_method: str | None = None,
        min_samples: int | None = None,
        workers: int = DEFAULT_WORKERS,
        log_errors: bool = True,
    ):
        """``force_method`` replaces the methods of every feature it applies to
        (the others keep their configured or default methods).  Each method
        is scored on windows of at least ``max(cfg.min_samples,
        method.required_values(profile))`` values; an explicit ``min_samples``
        replaces both (the batch command passes 1: it scores any file and
        flags small ones instead)."""
        self.cfg = cfg
        self.profile = profile
        self.layout = FeatureLayout(features)
        self.dataset_share_threshold = dataset_share_threshold
        self.min_samples = max(1, cfg.min_samples if min_samples is None else min_samples)
        self.method_floors = min_samples is None
        self.workers = max(1, workers)
        #: Log each feature's first non-finite result (the batch command reports them itself).
        self.log_errors = log_errors
        if force_method is not None:
            registry.get(force_method)  # unknown name: KeyError listing the known ones
        self.plans: list[FeaturePlan] = []
        for f in features:
            if f.name not in profile.features:
                raise ValueError(f"the reference profile has no feature {f.name!r}")
            prof = profile.features[f.name]
            if prof.type != f.type:
                raise ValueError(f"feature {f.name!r} is {f.type} in the config but {prof.type} in the reference profile")
            if force_method is not None and f.type in registry.get(force_method).feature_types:
                names = [force_method]
            else:
                names = list(f.methods) or [m for m in cfg.methods if f.type in registry.get(m).feature_types]
                if not names:
                    names = default_methods(f.type, profile.rows, cfg)
            methods = []
            for k, m in enumerate(names):
                method = registry.get(m)
                thr = f.threshold if (k == 0 and f.threshold is not None) else method.default_threshold
                methods.append((m, thr))
            impls = [registry.get(m) for m, _ in methods]
            required = [max(cfg.min_samples, i.required_values(prof), 1) for i in impls]
            gate = required if self.method_floors else [self.min_samples] * len(impls)
            plan = FeaturePlan(f.name, f.type, self.layout.row[f.name], prof, methods, impls,
                               needs_values=any(i.needs_values for i in impls), required=required, gate=gate)
            self.plans.append(plan)
        self.plans_by_name = {p.name: p for p in self.plans}
        #: (feature, method) pairs whose non-finite result was logged once.
        self._logged_errors: set[tuple[str, str]] = set()
        self.needs_values = any(p.needs_values for p in self.plans)
        #: The window columns :meth:`compute` reads (besides the counts): what
        #: a window snapshot must copy.
        self.window_columns: tuple[str, ...] = tuple(
            c for c, wanted in (
                ("num", any(p.needs_values and p.type == "numerical" for p in self.plans)),
                ("num_bin", any(p.needs_values and p.type == "numerical" for p in self.plans)),
                ("cat", any(p.needs_values and p.type == "categorical" for p in self.plans)),
            ) if wanted
        )

    # ----------------------------------------------------------------- compute
    def compute(self, window: str, size: int, columns: dict[str, np.ndarray], counts: dict[str, np.ndarray]) -> DriftReport:
        """Score a window given its columns and running counts.

        ``columns['num']`` (float, NaN = missing), ``columns['num_bin']`` (the
        values' reference slots, -1 = missing; optional, it speeds up sorting)
        and ``columns['cat']`` (codes, -1 = missing) are only read for methods
        that need raw values (:attr:`window_columns`), and are not modified.
        ``counts['num_bin']`` / ``counts['cat']`` are the per-slot counts.
        """
        t0 = time.perf_counter()
        report = DriftReport(window=window, size=size)
        # Sorting is the only O(n log n) step and numpy releases the GIL while
        # it sorts: sort in the pool, run the (cheap, GIL-bound) methods here as
        # sorted columns arrive.  Methods themselves are not spread over
        # threads: their many short numpy calls only fight over the GIL.
        sorted_cols: dict[str, Any] = {}
        for p in self.plans:
            if p.needs_values and p.type == "numerical":
                n = int(counts["num_bin"][p.row, : p.profile.slots].sum())
                if n and any(n >= g for g, i in zip(p.gate, p.impls) if i.needs_values):
                    codes = columns["num_bin"][p.row] if "num_bin" in columns else None
                    sorted_cols[p.name] = (columns["num"][p.row], n, codes, counts["num_bin"][p.row, : p.profile.slots])
        done: dict[str, FeatureReport] = {}
        if self.workers > 1 and len(sorted_cols) > 1:
            # At most 2 x workers sorted columns exist at once, so memory stays
            # at the snapshot plus a few columns, whatever the feature count.
            pool = _executor(self.workers)
            queue = list(sorted_cols.items())
            ahead = 2 * self.workers
            futures = {k: pool.submit(_sorted_present, *args) for k, args in queue[:ahead]}
            queue = queue[ahead:]
            for p in self.plans:
                fut = futures.pop(p.name, None)
                done[p.name] = self._feature(p, size, columns, counts, fut)
                if fut is not None and queue:
                    k, args = queue.pop(0)
                    futures[k] = pool.submit(_sorted_present, *args)
        else:
            for p in self.plans:
                done[p.name] = self._feature(p, size, columns, counts, sorted_cols.get(p.name))
        for plan in self.plans:  # keep the configured feature order
            fr = done[plan.name]
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

    def _feature(self, plan: FeaturePlan, size: int, columns: dict[str, np.ndarray], counts: dict[str, np.ndarray],
                 pending: Any = None) -> FeatureReport:
        """One feature's report; ``pending`` is its sorted values to come (a
        future from the pool, or the arguments of :func:`_sorted_present` to
        sort here), None when no method will read values."""
        prof = plan.profile
        if plan.type == "numerical":
            slot_counts = counts["num_bin"][plan.row, : prof.slots]
            n = int(slot_counts.sum())
            if isinstance(pending, Future):
                values = pending.result()
            elif pending is not None:
                values = _sorted_present(*pending)
            else:
                values = np.empty(0)
            oor = (int(slot_counts[0]) + int(slot_counts[-1])) / n if n else None
            new_cat = None
            cur = CurrentColumn(values=values, counts=slot_counts, is_sorted=True)
        else:
            slot_counts = counts["cat"][plan.row, : prof.slots]
            n = int(slot_counts.sum())
            values = np.empty(0, dtype=np.int64)
            if plan.needs_values and n:
                raw = columns["cat"][plan.row]
                values = raw[raw >= 0]
            oor = None
            new_cat = (int(slot_counts[-1]) / n if n else None) if prof.counts[-1] == 0 else None
            cur = CurrentColumn(values=values, counts=slot_counts)
        results: dict[str, DriftResult | None] = {}
        errors: dict[str, str] = {}
        for (m, thr), impl, gate in zip(plan.methods, plan.impls, plan.gate):
            res = impl.compute(prof, cur, thr) if n >= gate else None
            if res is not None and not _finite(res):
                errors[m] = (f"{m}: statistic {res.statistic!r}, p-value {res.p_value!r} is not finite "
                             "(values too extreme for this method)")
                if self.log_errors and (plan.name, m) not in self._logged_errors:  # once, not per scrape
                    self._logged_errors.add((plan.name, m))
                    log.warning("drift score not reported", extra={"feature": plan.name, "reason": errors[m]})
                res = None
            results[m] = res
        return FeatureReport(
            name=plan.name, type=plan.type, n=n,
            missing_ratio=((size - n) / size) if size else 0.0,
            out_of_range_ratio=oor, new_category_ratio=new_cat,
            primary=plan.methods[0][0] if plan.methods else "", results=results,
            required={m: r for (m, _), r in zip(plan.methods, plan.required)}, errors=errors,
        )


def _finite(r: DriftResult) -> bool:
    """A result is a verdict only when its numbers are finite (NaN compares
    false, so a NaN statistic would otherwise read as "no drift")."""
    return math.isfinite(r.statistic) and (r.p_value is None or math.isfinite(r.p_value))


def _sorted_present(raw: np.ndarray, n: int, codes: np.ndarray | None = None,
                    slot_counts: np.ndarray | None = None) -> np.ndarray:
    """The ``n`` non-NaN values of ``raw``, sorted.

    With the values' reference slots (``codes``, which the window stores
    anyway) this is a bucket sort: slots are value ranges in increasing
    order, so a stable radix argsort of the small integer codes followed by
    a sort inside each slot orders the values.  The per-slot sorts work on
    about n / bins values each, in cache, about 30 % faster than one sort
    of the column.  Without codes: ``np.sort`` puts NaN last and the
    window's own count cuts them off.
    """
    if codes is not None and slot_counts is not None and len(codes) == len(raw) and int(slot_counts.sum()) == n:
        order = np.argsort(codes, kind="stable")  # -1 (missing) first
        values = raw[order][len(raw) - n:]
        bounds = np.concatenate(([0], np.cumsum(slot_counts)))
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi - lo > 1:
                values[lo:hi].sort()
        if not np.isnan(values).any():
            return values
    s = np.sort(raw)
    if n <= len(s) and not np.isnan(s[n - 1]) and (n == len(s) or np.isnan(s[n])):
        return s[:n]
    return s[~np.isnan(s)]  # counts and values disagree: trust the values
