"""Per-model state: serving counters, sliding windows, cached drift and quality.

A :class:`ModelMonitor` receives :class:`~modelmon.events.EventBatch` objects
from the pipeline and keeps

- cumulative serving counters per version (requests, errors by reason, the
  latency histogram) and per-bin / per-category counters for fleet-wide drift;
- one feature :class:`~modelmon.windows.TimeWindow` per configured window
  (feature values, their reference bin or category code, error flags);
- one labelled :class:`~modelmon.windows.TimeWindow` per configured window
  (prediction, label, score, fairness group) for quality metrics.

Drift and quality are computed lazily when a scrape asks and cached for
``drift.recompute_interval`` seconds, as the Prometheus exporter guide allows
for expensive metrics.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from .config import PREDICTION_FEATURE, SCORE_FEATURE, Config, ModelConfig
from .drift.engine import DriftEngine, DriftReport
from .drift.multivariate import MultivariateResult
from .drift.reference import BinSet, CategoricalProfile, NumericalProfile, ReferenceProfile, to_float_array
from .estimation.cbpe import CBPEResult
from .estimation.sections import load_estimators, positive_indicator, scores_array
from .events import EventBatch
from .explain import ImportanceComparison, compare_importance
from .profile_sections import importance_profile, outlier_model
from .quality import QualityReport, compute_quality
from .windows import ColumnSpec, TimeWindow

#: Latency buckets for model serving, in seconds.  Dense between 50 ms and
#: 500 ms where online models live and where the default 200 ms threshold sits
#: (0.2 is a bucket bound, so ``histogram_quantile`` is exact there).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
#: Label delay buckets (event to its label), in seconds: 1 s .. 1 week, since
#: labels come from a click a second later or from a chargeback weeks later.
LABEL_DELAY_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 3 * 3600.0, 12 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0)
OTHER_VERSION = "other"
OTHER_REASON = "other"
_Profile = TypeVar("_Profile", NumericalProfile, CategoricalProfile)
#: Cap on distinct class values remembered per model (never exported as labels).
MAX_CLASSES = 1000


def _profile_of(profile: ReferenceProfile, name: str, kind: type[_Profile]) -> _Profile:
    """The reference profile of feature ``name``, which the config says is of ``kind``."""
    prof = profile.features[name]
    if not isinstance(prof, kind):
        raise ValueError(f"feature {name!r}: the reference profile is {prof.type}, the config says otherwise")
    return prof


@dataclass
class VersionStats:
    """Cumulative serving counters of one model version."""

    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    bucket_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(LATENCY_BUCKETS) + 1, dtype=np.int64))
    latency_sum: float = 0.0
    latency_count: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0


class ModelMonitor:
    """Everything the exporter knows about one model."""

    def __init__(self, cfg: ModelConfig, config: Config, profile: ReferenceProfile | None,
                 clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.name = cfg.name
        self.clock = clock
        self.profile = profile
        self.recompute_interval = cfg.drift.recompute_interval_seconds
        #: Held while the windows and counters change; collectors hold it while they read them.
        self.lock = threading.Lock()
        self.versions: dict[str, VersionStats] = {}
        self.classes: dict[str, int] = {}
        #: Cumulative [labelled, correct] predictions per bounded version
        #: (fleet-mergeable accuracy, and canary vs stable accuracy).
        self.quality_counts: dict[str, list[int]] = {}
        #: Cumulative label-delay histogram (per LABEL_DELAY_BUCKETS, plus +Inf).
        self.label_delay_counts = np.zeros(len(LABEL_DELAY_BUCKETS) + 1, dtype=np.int64)
        self.label_delay_sum = 0.0
        self.drift_engine: DriftEngine | None = None
        self.num_names: list[str] = []
        self.cat_names: list[str] = []
        if profile is not None and cfg.monitored_features():
            self.drift_engine = DriftEngine(cfg.monitored_features(), profile, cfg.drift, cfg.thresholds.dataset_drift_share)
            self.num_names = self.drift_engine.layout.numerical
            self.cat_names = self.drift_engine.layout.categorical
        self.num_profiles = [_profile_of(profile, n, NumericalProfile) for n in self.num_names] if profile else []
        self.cat_profiles = [_profile_of(profile, n, CategoricalProfile) for n in self.cat_names] if profile else []
        num_slots = max((p.slots for p in self.num_profiles), default=1)
        self._binner = BinSet(self.num_profiles)  # the layout's numerical features
        cat_slots = max((p.slots for p in self.cat_profiles), default=1)
        #: Cumulative (fleet-mergeable) counts per reference bin / category.
        self.num_bin_totals = np.zeros((len(self.num_names), num_slots), dtype=np.int64)
        self.cat_totals = np.zeros((len(self.cat_names), cat_slots), dtype=np.int64)
        #: Per-event outlier scoring (None without a reference or when ``outliers.enabled`` is off).
        self.outlier_model = outlier_model(profile, cfg) if self.drift_engine is not None else None
        self.outlier_events = 0
        self.scored_events = 0
        if self.outlier_model is not None:
            self._outlier_num = np.array([self.num_names.index(n) for n in self.outlier_model.numerical], dtype=np.intp)
            self._outlier_cat = np.array([self.cat_names.index(n) for n in self.outlier_model.categorical], dtype=np.intp)
        #: Attribution monitoring: the features whose attributions windows keep, and the reference importance.
        self.attribution_features = [f.name for f in cfg.features] if cfg.attributions.enabled else []
        self.importance_profile = importance_profile(profile, cfg)
        self._importance_cache: dict[str, tuple[float, ImportanceComparison]] = {}
        #: Label-free estimators fitted on the reference (None unless enabled).
        self.estimators = load_estimators(profile, cfg)
        self.groups = list(cfg.fairness.groups)
        self._group_index = {g: i for i, g in enumerate(self.groups)}
        fcols = {
            "num": ColumnSpec(np.float64, max(len(self.num_names), 1), fill=math.nan),
            "num_bin": ColumnSpec(np.int16, max(len(self.num_names), 1), codes=num_slots, fill=-1),
            "cat": ColumnSpec(np.int16, max(len(self.cat_names), 1), codes=cat_slots, fill=-1),
            "error": ColumnSpec(np.int8, 1, codes=2),
        }
        if self.outlier_model is not None:
            fcols["outlier"] = ColumnSpec(np.int8, 1, codes=2, fill=-1)
        if self.attribution_features:
            fcols["attr"] = ColumnSpec(np.float64, len(self.attribution_features), fill=math.nan)
        if self.estimators.cbpe is not None:
            # Every served prediction, labelled or not: what CBPE estimates from.
            fcols["pred_pos"] = ColumnSpec(np.float64, 1, fill=math.nan)
            fcols["score"] = ColumnSpec(np.float64, 1, fill=math.nan)
        qcols = {
            "pred": ColumnSpec(np.float64, 1, fill=math.nan),
            "label": ColumnSpec(np.float64, 1, fill=math.nan),
            "score": ColumnSpec(np.float64, 1, fill=math.nan),
            "group": ColumnSpec(np.int16, 1, codes=max(len(self.groups), 1), fill=-1),
            "delay": ColumnSpec(np.float64, 1, fill=0.0),
        }
        self.windows = {w.name: TimeWindow(w.name, w.duration_seconds, w.max_events, fcols) for w in config.windows}
        self.labelled = {w.name: TimeWindow(w.name, w.duration_seconds, w.max_events, qcols) for w in config.windows}
        self._drift_cache: dict[str, DriftReport] = {}
        self._quality_cache: dict[str, tuple[float, QualityReport]] = {}
        self._estimate_cache: dict[str, tuple[float, CBPEResult]] = {}
        self._multivariate_cache: dict[str, tuple[float, MultivariateResult]] = {}
        self._drift_lock = threading.Lock()

    # ------------------------------------------------------------------ intake
    def version_key(self, version: str) -> str:
        """Bounded version label: the first ``max_versions`` seen, then ``other``."""
        version = version or self.cfg.version or "unknown"
        if version in self.versions or len(self.versions) < self.cfg.max_versions:
            return version
        return OTHER_VERSION

    def reason_key(self, reason: str) -> str:
        return reason if reason in self.cfg.error_reasons else OTHER_REASON

    def class_code(self, value: Any) -> float:
        """Classification: a stable numeric code per class value (bounded)."""
        if value is None:
            return math.nan
        key = str(value)
        code = self.classes.get(key)
        if code is None:
            if len(self.classes) >= MAX_CLASSES:
                return -1.0
            code = self.classes[key] = len(self.classes)
        return float(code)

    def observe(self, batch: EventBatch) -> None:
        """Account a batch of events (already validated by its source)."""
        n = len(batch)
        if n == 0:
            return
        now = self.clock()
        lat = np.array(batch.latency_seconds, dtype=np.float64)  # None becomes NaN
        errors = batch.errors
        if errors.count(None) == n:
            err = np.zeros(n, dtype=np.int8)
        else:
            err = np.array([e is not None for e in errors], dtype=np.int8)
        features = self._monitored_columns(batch)
        with self.lock:
            self._count_serving(batch, lat, now)
            num = np.full((max(len(self.num_names), 1), n), math.nan)
            num_bin = np.full((max(len(self.num_names), 1), n), -1, dtype=np.int16)
            if self.num_names:
                for i, name in enumerate(self.num_names):
                    col = features.get(name)
                    if col is not None:
                        num[i] = to_float_array(col)
                # All features binned and counted at once (a feature the batch lacks stays NaN: slot -1).
                x = num[: len(self.num_names)]
                x[~np.isfinite(x)] = math.nan
                idx = self._binner.bin_matrix(x)
                num_bin[: len(self.num_names)] = idx
                slots = self.num_bin_totals.shape[1]
                valid = idx >= 0
                flat = (idx + (np.arange(len(self.num_names), dtype=np.int32) * slots)[:, None])[valid]
                if flat.size:
                    self.num_bin_totals += np.bincount(flat, minlength=self.num_bin_totals.size).reshape(
                        self.num_bin_totals.shape)
            cat = np.full((max(len(self.cat_names), 1), n), -1, dtype=np.int16)
            for i, (name, cprof) in enumerate(zip(self.cat_names, self.cat_profiles, strict=True)):
                col = features.get(name)
                if col is None:
                    continue
                codes = cprof.codes(col)
                cat[i] = codes
                valid = codes[codes >= 0]
                if valid.size:
                    self.cat_totals[i, : cprof.slots] += np.bincount(valid, minlength=cprof.slots)
        cols = {"num": num, "num_bin": num_bin, "cat": cat, "error": err}
        if self.outlier_model is not None:
            cols["outlier"] = self._score_outliers(batch, num, cat)
        if self.attribution_features:
            cols["attr"] = self._attribution_rows(batch, n)
        if self.estimators.cbpe is not None:
            cols["pred_pos"] = positive_indicator(batch.predictions, self.cfg.positive_class)
            cols["score"] = scores_array(batch.scores)
        for w in self.windows.values():
            w.append(now, cols, now=now)
        # Events that carry their label are labelled at once.
        has_label = [i for i, lab in enumerate(batch.labels) if lab is not None]
        if has_label:
            self.observe_labels(
                predictions=[batch.predictions[i] for i in has_label],
                labels=[batch.labels[i] for i in has_label],
                scores=[batch.scores[i] for i in has_label],
                groups=self.groups_of(batch, has_label),
                delays=[0.0] * len(has_label),
                versions=[batch.versions[i] for i in has_label],
            )

    def _score_outliers(self, batch: EventBatch, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Score every event of the batch, mark it on the batch for listeners, count the outlying ones."""
        om = self.outlier_model
        assert om is not None
        scores = om.score(num[self._outlier_num], cat[self._outlier_cat] if om.categorical else None)
        flags = om.outlying(scores)
        batch.outlier_scores = scores
        batch.outlying = flags
        with self.lock:
            self.scored_events += len(flags)
            self.outlier_events += int(flags.sum())
        return flags.astype(np.int8)

    def _attribution_rows(self, batch: EventBatch, n: int) -> np.ndarray:
        """(features x n) attributions of the batch, NaN where an event sent none."""
        out = np.full((len(self.attribution_features), n), math.nan)
        for i, name in enumerate(self.attribution_features):
            col = batch.attributions.get(name)
            if col is not None:
                x = to_float_array(col)
                x[~np.isfinite(x)] = math.nan
                out[i] = x
        return out

    def _monitored_columns(self, batch: EventBatch) -> Any:
        """The batch's feature columns plus the outputs (prediction drift) and
        attributions (attribution drift) watched like features."""
        pd = self.cfg.prediction_drift
        attr_drift = self.cfg.attributions.enabled and self.cfg.attributions.drift and batch.attributions
        if not (pd.prediction or pd.score or attr_drift):
            return batch.features
        cols: dict[str, Sequence[Any]] = dict(batch.features)
        if attr_drift:
            for feature, column in self.cfg.attribution_columns().items():
                if feature in batch.attributions:
                    cols[column] = batch.attributions[feature]
        if pd.prediction:
            cols[PREDICTION_FEATURE] = batch.predictions
        if pd.score:
            cols[SCORE_FEATURE] = batch.scores
        return cols

    def groups_of(self, batch: EventBatch, rows: Sequence[int]) -> list[str | None]:
        attr = self.cfg.fairness.attribute
        if not attr:
            return [None] * len(rows)
        col = batch.attributes.get(attr) or batch.features.get(attr)
        if col is None:
            return [None] * len(rows)
        return [None if col[i] is None else str(col[i]) for i in rows]

    def _count_serving(self, batch: EventBatch, lat: np.ndarray, now: float) -> None:
        versions = batch.versions
        groups: dict[str, slice | np.ndarray]
        if len(set(versions)) == 1:
            groups = {versions[0]: slice(None)}
        else:
            idx: dict[str, list[int]] = {}
            for i, v in enumerate(versions):
                idx.setdefault(v, []).append(i)
            groups = {v: np.array(ix) for v, ix in idx.items()}
        errors = batch.errors
        for version, sel in groups.items():
            key = self.version_key(version)
            st = self.versions.get(key)
            if st is None:
                st = self.versions[key] = VersionStats(first_seen=now)
            st.last_seen = now
            seconds = lat[sel]
            st.requests += len(seconds)
            seconds = seconds[~np.isnan(seconds)]
            if seconds.size:
                st.bucket_counts += np.bincount(np.searchsorted(LATENCY_BUCKETS, seconds, side="left"),
                                                minlength=len(LATENCY_BUCKETS) + 1)
                st.latency_sum += float(seconds.sum())
                st.latency_count += int(seconds.size)
            errs = errors if isinstance(sel, slice) else [errors[i] for i in sel]
            if errs.count(None) == len(errs):
                continue
            for e in errs:
                if e is not None:
                    r = self.reason_key(e)
                    st.errors[r] = st.errors.get(r, 0) + 1

    def observe_labels(
        self,
        predictions: list[Any],
        labels: list[Any],
        scores: list[float | None],
        groups: list[str | None],
        delays: list[float],
        versions: list[str] | None = None,
    ) -> None:
        """Account predictions whose ground truth is now known."""
        now = self.clock()
        if self.cfg.task == "classification":
            with self.lock:
                pred = np.array([self.class_code(p) for p in predictions])
                lab = np.array([self.class_code(v) for v in labels])
        else:
            pred = to_float_array(predictions)
            lab = to_float_array(labels)
        known = ~(np.isnan(pred) | np.isnan(lab))
        delay = np.maximum(np.asarray(delays, dtype=np.float64), 0.0)
        correct = (pred == lab) & known
        with self.lock:
            groups_by_version: dict[str, slice | np.ndarray]
            if versions is None or len(set(versions)) <= 1:
                groups_by_version = {(versions[0] if versions else ""): slice(None)}
            else:
                idx: dict[str, list[int]] = {}
                for k, v in enumerate(versions):
                    idx.setdefault(v, []).append(k)
                groups_by_version = {v: np.array(ix) for v, ix in idx.items()}
            for version, sel in groups_by_version.items():
                counts = self.quality_counts.setdefault(self.version_key(version), [0, 0])
                counts[0] += int(known[sel].sum())
                if self.cfg.task == "classification":
                    counts[1] += int(correct[sel].sum())
            self.label_delay_counts += np.bincount(
                np.searchsorted(LABEL_DELAY_BUCKETS, delay, side="left"), minlength=len(LABEL_DELAY_BUCKETS) + 1
            )
            self.label_delay_sum += float(delay.sum())
        score = np.array([math.nan if s is None else s for s in scores], dtype=np.float64)
        group = np.array([self._group_index.get(g, -1) if g is not None else -1 for g in groups], dtype=np.int16)
        cols = {"pred": pred, "label": lab, "score": score, "group": group, "delay": delay}
        for w in self.labelled.values():
            w.append(now, cols, now=now)

    # ------------------------------------------------------------------- reads
    def window_sizes(self) -> dict[str, int]:
        """Rows held per feature window: the sample drift is computed on."""
        now = self.clock()
        out = {}
        for name, w in self.windows.items():
            w.evict(now)
            out[name] = len(w)
        return out

    def labelled_sizes(self) -> dict[str, int]:
        """Rows held per labelled window: the sample quality is computed on."""
        now = self.clock()
        out = {}
        for name, w in self.labelled.items():
            w.evict(now)
            out[name] = len(w)
        return out

    def label_coverage(self) -> dict[str, float]:
        """Labelled / served predictions per window, from the windows' arrival
        estimates (both windows may sample at different rates under load)."""
        now = self.clock()
        out = {}
        for name, w in self.windows.items():
            events = w.estimated_count(now)
            if events > 0:
                out[name] = min(1.0, self.labelled[name].estimated_count(now) / events)
        return out

    def drift(self, window: str) -> DriftReport | None:
        """The cached drift report of a window, recomputed when stale."""
        if self.drift_engine is None:
            return None
        now = self.clock()
        with self._drift_lock:
            cached = self._drift_cache.get(window)
            if cached is not None and now - cached.timestamp < self.recompute_interval:
                return cached
            w = self.windows[window]
            cols = self.drift_engine.window_columns
            snap = w.snapshot(now=now, columns=cols)
            report = self.drift_engine.compute(window, snap.size, snap.columns, snap.counts)
            report.timestamp = now
            self._drift_cache[window] = report
            return report

    def outlier_totals(self) -> tuple[int, int]:
        """Cumulative (outlying, scored) events."""
        with self.lock:
            return self.outlier_events, self.scored_events

    def outlier_share(self, window: str) -> tuple[float, int] | None:
        """(share of outlying events, scored events) in the window; None when not scoring or empty."""
        if self.outlier_model is None:
            return None
        counts = self.windows[window].counts("outlier", now=self.clock())[0]
        total = int(counts.sum())
        return (float(counts[1]) / total, total) if total else None

    def importance(self, window: str) -> ImportanceComparison | None:
        """The window's feature importance against the reference's, cached like drift."""
        if self.importance_profile is None:
            return None
        now = self.clock()
        with self._drift_lock:
            cached = self._importance_cache.get(window)
            if cached is not None and now - cached[0] < self.recompute_interval:
                return cached[1]
            snap = self.windows[window].snapshot(now=now, columns=("attr",))
            rep = compare_importance(snap.columns["attr"], self.importance_profile,
                                     self.cfg.attributions.min_rank_correlation, self.cfg.drift.min_samples)
            self._importance_cache[window] = (now, rep)
            return rep

    def quality(self, window: str) -> QualityReport:
        now = self.clock()
        with self._drift_lock:
            cached = self._quality_cache.get(window)
            if cached is not None and now - cached[0] < self.recompute_interval:
                return cached[1]
            snap = self.labelled[window].snapshot(now=now)
            positive = self.classes.get(self.cfg.positive_class)
            rep = compute_quality(
                task=self.cfg.task,
                pred=snap.columns["pred"][0],
                label=snap.columns["label"][0],
                score=snap.columns["score"][0],
                group=snap.columns["group"][0],
                groups=self.groups,
                positive=positive,
                reference_group=self.cfg.fairness.reference_group or (self.groups[0] if self.groups else ""),
                binary=len(self.classes) <= 2,
            )
            self._quality_cache[window] = (now, rep)
            return rep

    def estimated_performance(self, window: str) -> CBPEResult | None:
        """Label-free metric estimates of a window (cached like drift)."""
        cbpe = self.estimators.cbpe
        if cbpe is None:
            return None
        now = self.clock()
        with self._drift_lock:
            cached = self._estimate_cache.get(window)
            if cached is not None and now - cached[0] < self.recompute_interval:
                return cached[1]
            snap = self.windows[window].snapshot(now=now, columns=("pred_pos", "score"))
            res = cbpe.estimate(snap.columns["score"][0], snap.columns["pred_pos"][0])
            self._estimate_cache[window] = (now, res)
            return res

    def multivariate(self, window: str) -> MultivariateResult | None:
        """PCA reconstruction error of a window's rows (cached like drift)."""
        model = self.estimators.multivariate
        if model is None:
            return None
        now = self.clock()
        with self._drift_lock:
            cached = self._multivariate_cache.get(window)
            if cached is not None and now - cached[0] < self.recompute_interval:
                return cached[1]
            snap = self.windows[window].snapshot(now=now, columns=("num", "cat"))
            num = {n: snap.columns["num"][i] for i, n in enumerate(self.num_names) if n in model.numerical}
            codes = {n: snap.columns["cat"][i] for i, n in enumerate(self.cat_names) if n in model.categorical}
            res = model.evaluate(num, codes)
            self._multivariate_cache[window] = (now, res)
            return res
