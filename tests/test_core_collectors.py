"""Collectors read back through a private registry, checked against values
computed by hand from the events that went in."""

from __future__ import annotations

import numpy as np
import pytest

from modelmon.collectors import build_registry
from modelmon.config import Config, FeatureConfig, ModelConfig, WindowConfig
from modelmon.drift.reference import build_profile
from modelmon.events import Event, EventBatch
from modelmon.monitor import LATENCY_BUCKETS
from modelmon.pipeline import Pipeline


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def make(max_versions: int = 10, windows: list[WindowConfig] | None = None):
    model = ModelConfig(
        name="m", max_versions=max_versions,
        features=[FeatureConfig(name="x"), FeatureConfig(name="c", type="categorical", categories=["a", "b"])],
    )
    model.drift.min_samples = 10
    model.drift.recompute_interval_seconds = 0
    cfg = Config(models=[model], windows=windows or [WindowConfig(name="1m", duration_seconds=60)])
    rng = np.random.default_rng(0)
    profile = build_profile({"x": rng.normal(size=2000), "c": ["a", "b"] * 1000}, model.features)
    clock = Clock()
    pipeline = Pipeline(cfg, {"m": profile}, clock=clock)
    return pipeline, build_registry(pipeline), clock


def events(n: int, version: str = "v1", latency: float = 0.1, error_every: int = 0, x: float = 0.0, label_ok: bool = True) -> list[Event]:
    out = []
    for i in range(n):
        err = "timeout" if error_every and i % error_every == 0 else None
        out.append(Event(model="m", timestamp=0, version=version, latency_seconds=latency, error=err,
                         features={"x": x + (i % 7) / 7, "c": "ab"[i % 2]}, prediction="1",
                         label="1" if label_ok or i % 2 else "0", source="api"))
    return out


def test_requests_errors_and_histogram() -> None:
    pipeline, reg, _ = make()
    pipeline.submit_events(events(100, latency=0.12, error_every=10))
    pipeline.submit_events(events(50, latency=0.3))
    get = reg.get_sample_value
    assert get("modelmon_requests_total", {"model": "m", "version": "v1"}) == 150
    assert get("modelmon_request_errors_total", {"model": "m", "version": "v1", "reason": "timeout"}) == 10
    assert get("modelmon_request_duration_seconds_count", {"model": "m", "version": "v1"}) == 150
    assert get("modelmon_request_duration_seconds_sum", {"model": "m", "version": "v1"}) == pytest.approx(100 * 0.12 + 50 * 0.3)
    # le is inclusive: 0.12 falls in le=0.125, 0.3 in le=0.3
    assert get("modelmon_request_duration_seconds_bucket", {"model": "m", "version": "v1", "le": "0.1"}) == 0
    assert get("modelmon_request_duration_seconds_bucket", {"model": "m", "version": "v1", "le": "0.125"}) == 100
    assert get("modelmon_request_duration_seconds_bucket", {"model": "m", "version": "v1", "le": "0.25"}) == 100
    assert get("modelmon_request_duration_seconds_bucket", {"model": "m", "version": "v1", "le": "0.3"}) == 150
    assert get("modelmon_request_duration_seconds_bucket", {"model": "m", "version": "v1", "le": "+Inf"}) == 150
    assert get("modelmon_events_accepted_total", {"model": "m", "source": "api"}) == 150
    assert 0.2 in LATENCY_BUCKETS


def test_unknown_reasons_and_versions_stay_bounded() -> None:
    pipeline, reg, _ = make(max_versions=2)
    for v in ("a", "b", "c", "d"):
        batch = events(3, version=v)
        batch[0].error = "user 1234 said no"  # free text must not become a label value
        pipeline.submit_events(batch)
    get = reg.get_sample_value
    assert get("modelmon_requests_total", {"model": "m", "version": "a"}) == 3
    assert get("modelmon_requests_total", {"model": "m", "version": "other"}) == 6
    assert get("modelmon_request_errors_total", {"model": "m", "version": "other", "reason": "other"}) == 2
    versions = {s.labels["version"] for m in reg.collect() if m.name == "modelmon_requests" for s in m.samples}
    assert versions == {"a", "b", "other"}


def test_accuracy_and_window_counts() -> None:
    pipeline, reg, clock = make()
    pipeline.submit_events(events(40, label_ok=False))  # 20 of 40 wrong
    get = reg.get_sample_value
    assert get("modelmon_window_events", {"model": "m", "window": "1m"}) == 40
    assert get("modelmon_quality_accuracy_ratio", {"model": "m", "window": "1m"}) == pytest.approx(0.5)
    assert get("modelmon_labelled_events_total", {"model": "m", "version": "v1"}) == 40
    assert get("modelmon_correct_predictions_total", {"model": "m", "version": "v1"}) == 20
    clock.t += 61  # everything leaves the 1m window; counters stay
    assert get("modelmon_window_events", {"model": "m", "window": "1m"}) == 0
    assert get("modelmon_quality_accuracy_ratio", {"model": "m", "window": "1m"}) is None
    assert get("modelmon_requests_total", {"model": "m", "version": "v1"}) == 40


def test_drift_meanstd_matches_hand_computation() -> None:
    pipeline, reg, _ = make()
    model = pipeline.config.models[0]
    model.features[0].methods = ["meanstd"]
    pipeline2 = Pipeline(pipeline.config, {"m": pipeline.monitors["m"].profile}, clock=pipeline.clock)
    reg2 = build_registry(pipeline2)
    evs = events(70, x=1.0)
    pipeline2.submit_events(evs)
    xs = np.array([e.features["x"] for e in evs])
    # The reference moments from the raw reference data (make() draws it with
    # seed 0), not from the profile under test; population std (normal data:
    # nothing beyond the scale's clipping fences, so the scale is the std).
    ref = np.random.default_rng(0).normal(size=2000)
    mean, std = ref.mean(), ref.std()
    expected = (abs(xs.mean() - mean) + abs(xs.std() - std)) / (2 * std)
    labels = {"model": "m", "feature": "x", "method": "meanstd", "window": "1m"}
    assert reg2.get_sample_value("modelmon_drift_score", labels) == pytest.approx(expected, rel=1e-12)
    assert reg2.get_sample_value("modelmon_drift_detected", labels) == 1
    assert reg2.get_sample_value("modelmon_drift_threshold", labels) == 0.1
    assert reg2.get_sample_value("modelmon_feature_values", {"model": "m", "feature": "x", "window": "1m"}) == 70


def test_no_score_below_min_samples_but_count_exported() -> None:
    pipeline, reg, _ = make()
    pipeline.submit_events(events(5))
    assert reg.get_sample_value("modelmon_feature_values", {"model": "m", "feature": "x", "window": "1m"}) == 5
    scores = [s for m in reg.collect() if m.name == "modelmon_drift_score" for s in m.samples]
    assert scores == []


def test_fleet_bin_counters_count_every_value() -> None:
    pipeline, reg, _ = make()
    pipeline.submit_events(events(30))
    prof = pipeline.monitors["m"].profile.features["x"]
    total = sum(reg.get_sample_value("modelmon_feature_bin_values_total", {"model": "m", "feature": "x", "bin": b}) for b in prof.slot_labels())
    assert total == 30
    ref = sum(reg.get_sample_value("modelmon_reference_bin_ratio", {"model": "m", "feature": "x", "bin": b}) for b in prof.slot_labels())
    assert ref == pytest.approx(1.0)
    assert reg.get_sample_value("modelmon_feature_bin_values_total", {"model": "m", "feature": "c", "bin": "a"}) == 15
    assert reg.get_sample_value("modelmon_feature_bin_values_total", {"model": "m", "feature": "c", "bin": "__other__"}) == 0


def test_thresholds_exported_with_their_defaults() -> None:
    _, reg, _ = make()
    get = reg.get_sample_value
    assert get("modelmon_threshold_latency_p95_seconds", {"model": "m"}) == 0.2
    assert get("modelmon_threshold_throughput_min_requests_per_second", {"model": "m"}) == 500
    assert get("modelmon_threshold_accuracy_min_ratio", {"model": "m"}) == 0.85
    assert get("modelmon_threshold_error_ratio_max", {"model": "m"}) == 0.05
    assert get("modelmon_threshold_release_accuracy_min_ratio", {"model": "m"}) == 0.90


def test_rejections_counted_with_fixed_reasons() -> None:
    pipeline, reg, _ = make()
    pipeline.submit(EventBatch.from_events([Event(model="nope", timestamp=0, source="api")]))
    assert reg.get_sample_value("modelmon_events_rejected_total", {"source": "api", "reason": "unknown_model"}) == 1
    with pytest.raises(ValueError):
        pipeline.reject("api", "because I said so")


def test_quality_counters_split_by_version_for_canary_analysis() -> None:
    pipeline, reg, _ = make()
    pipeline.submit_events(events(20, version="stable"))  # all correct
    pipeline.submit_events(events(10, version="canary", label_ok=False))  # 5 of 10 wrong
    get = reg.get_sample_value
    assert get("modelmon_labelled_events_total", {"model": "m", "version": "stable"}) == 20
    assert get("modelmon_correct_predictions_total", {"model": "m", "version": "stable"}) == 20
    assert get("modelmon_labelled_events_total", {"model": "m", "version": "canary"}) == 10
    assert get("modelmon_correct_predictions_total", {"model": "m", "version": "canary"}) == 5


def test_labelled_counter_is_zero_before_the_first_label() -> None:
    """A model whose labels never arrive must show 0 labelled, not nothing,
    so the label-coverage alert can fire."""
    pipeline, reg, _ = make()
    evs = events(5)
    for e in evs:
        e.label = None
    pipeline.submit_events(evs)
    assert reg.get_sample_value("modelmon_labelled_events_total", {"model": "m", "version": "v1"}) == 0
