"""The simulator's distributions: each scenario's anomaly crosses its default
threshold clearly and ``normal`` stays clearly inside all of them."""

from __future__ import annotations

import numpy as np
import pytest

from modelmon.config import SimulatorConfig
from modelmon.events import EventBatch
from modelmon.sources.simulator import SCENARIOS, Simulator


def collect(scenario: str, anomalous: bool, seconds: float = 20.0, rate: float = 1000.0) -> tuple[list[EventBatch], float]:
    batches: list[EventBatch] = []
    clock = [1000.0]
    sim = Simulator(SimulatorConfig(scenario=scenario, rate=rate, anomaly_after_seconds=0 if anomalous else 3600, seed=3),
                    batches.append, clock=lambda: clock[0])
    sim.started_at = clock[0]
    steps = int(seconds / 0.1)
    for _ in range(steps):
        clock[0] += 0.1
        sim.step(0.1)
    return batches, seconds


def stats(batches: list[EventBatch], seconds: float) -> dict[str, float]:
    lat = np.array([v for b in batches for v in b.latency_seconds])
    errs = np.array([e is not None for b in batches for e in b.errors])
    labelled = [(p, l) for b in batches for p, l in zip(b.predictions, b.labels) if l is not None]
    acc = np.mean([p == l for p, l in labelled])
    return {
        "rate": len(lat) / seconds,
        "p95": float(np.quantile(lat, 0.95)),
        "mean_latency": float(lat.mean()),
        "error_ratio": float(errs.mean()),
        "accuracy": float(acc),
    }


def test_normal_stays_inside_every_threshold() -> None:
    s = stats(*collect("normal", anomalous=True))
    assert s["rate"] == pytest.approx(1000, rel=0.01)  # counted exactly, not Poisson noise
    assert s["mean_latency"] == pytest.approx(0.100, abs=0.003)
    assert s["p95"] < 0.15  # 200 ms threshold
    assert s["error_ratio"] == pytest.approx(0.01, abs=0.003)
    assert s["accuracy"] == pytest.approx(0.95, abs=0.01)


@pytest.mark.parametrize(
    "scenario,key,expected,tolerance,crosses",
    [
        ("latency-spike", "mean_latency", 0.250, 0.005, lambda s: s["p95"] > 0.25),
        ("throughput-drop", "rate", 400, 4, lambda s: s["rate"] < 450),
        ("error-burst", "error_ratio", 0.10, 0.01, lambda s: s["error_ratio"] > 0.08),
        ("accuracy-decay", "accuracy", 0.80, 0.015, lambda s: s["accuracy"] < 0.83),
    ],
)
def test_anomaly_crosses_threshold(scenario: str, key: str, expected: float, tolerance: float, crosses) -> None:
    s = stats(*collect(scenario, anomalous=True))
    assert s[key] == pytest.approx(expected, abs=tolerance)
    assert crosses(s), s


def test_incident_is_everything_at_once() -> None:
    s = stats(*collect("incident", anomalous=True))
    assert s["p95"] > 0.25 and s["rate"] < 450 and s["error_ratio"] > 0.08 and s["accuracy"] < 0.83


def test_data_drift_shifts_features_as_documented() -> None:
    batches, _ = collect("data-drift", anomalous=True, seconds=10)
    feats = {k: np.array([v for b in batches for v in b.features[k]]) for k in ("age", "income", "credit_score", "region")}
    assert feats["age"].mean() == pytest.approx(42.4, abs=0.5)  # +0.2 sd
    assert feats["income"].mean() == pytest.approx(57_500, abs=700)  # +0.5 sd
    assert feats["income"].std() == pytest.approx(18_000, rel=0.05)  # x1.2 sd
    assert feats["credit_score"].mean() > 700  # +1 sd (clipped tails)
    assert np.mean(feats["region"] == "west") == pytest.approx(0.4, abs=0.02)


def test_anomaly_window_starts_and_ends() -> None:
    clock = [0.0]
    sim = Simulator(SimulatorConfig(scenario="error-burst", anomaly_after_seconds=10, anomaly_duration_seconds=5),
                    lambda b: None, clock=lambda: clock[0])
    sim.started_at = 0.0
    assert [sim.anomalous(t) for t in (0, 9.9, 10, 14.9, 15, 100)] == [False, False, True, True, False, False]


def test_seed_makes_runs_reproducible() -> None:
    a, _ = collect("incident", anomalous=True, seconds=1)
    b, _ = collect("incident", anomalous=True, seconds=1)
    assert a[3].latency_seconds == b[3].latency_seconds and a[3].features["region"] == b[3].features["region"]


def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        Simulator(SimulatorConfig(scenario="chaos"), lambda b: None)
    assert "incident" in SCENARIOS
