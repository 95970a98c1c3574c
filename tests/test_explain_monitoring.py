"""Attribution importance and outlying inputs through the pipeline, the collectors and the inference log."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from modelmon.app import load_profile
from modelmon.collectors import build_registry
from modelmon.config import Config, ConfigError, SimulatorConfig, config_from_dict
from modelmon.events import EventBatch
from modelmon.inference_log import InferenceLogger
from modelmon.pipeline import Pipeline
from modelmon.sources.simulator import (
    COEFFICIENTS,
    Simulator,
    demo_model_config,
    reference_data,
    reference_profile,
)
from scipy import stats

RNG = np.random.default_rng(11)
N_REF = 20_000
FEATURES = ["a", "b", "c", "k"]
SD = {"a": 3.0, "b": 2.0, "c": 1.0, "k": 0.5}


def reference_csv(path, with_attributions=True):
    cols = {"a": RNG.normal(0, 1, N_REF), "b": RNG.normal(5, 2, N_REF), "c": RNG.normal(-1, 0.5, N_REF)}
    cols["k"] = RNG.choice(["x", "y", "z"], N_REF, p=[0.7, 0.2, 0.1])
    if with_attributions:
        for f in FEATURES:
            cols[f"attribution_{f}"] = RNG.normal(0, SD[f], N_REF)
    names = list(cols)
    lines = [",".join(names)] + [",".join(str(cols[n][i]) for n in names) for i in range(N_REF)]
    path.write_text("\n".join(lines) + "\n")


def make(tmp_path, logs=None, with_attributions=True):
    reference_csv(tmp_path / "ref.csv", with_attributions)
    cfg = config_from_dict({
        "models": [{
            "name": "m", "reference": {"path": "ref.csv"},
            "features": [{"name": f} for f in FEATURES[:3]] + [{"name": "k", "type": "categorical"}],
            "attributions": {"enabled": True, "min_rank_correlation": 0.5},
            "drift": {"recompute_interval_seconds": 0},
        }],
        "windows": [{"name": "5m", "duration_seconds": 300, "max_events": 50_000}],
        "logs": {"enabled": True, **(logs or {})},
    }, source=str(tmp_path / "cfg.yml"))
    prof = load_profile(cfg, 0, cfg.models[0])
    pipe = Pipeline(cfg, {"m": prof})
    return cfg, pipe, build_registry(pipe)


def batch(n, shift=0.0, attr_sd=None, start=0, category=None):
    feats = {"a": RNG.normal(0, 1, n) + shift, "b": RNG.normal(5, 2, n), "c": RNG.normal(-1, 0.5, n),
             "k": list(RNG.choice(["x", "y", "z"], n, p=[0.7, 0.2, 0.1])) if category is None else [category] * n}
    attr = {f: RNG.normal(0, (attr_sd or SD)[f], n) for f in FEATURES}
    return EventBatch(model="m", timestamps=[1.0] * n, versions=["1"] * n, ids=[f"r{start + i}" for i in range(n)],
                      latency_seconds=[0.1] * n, errors=[None] * n, features=feats, predictions=["1"] * n,
                      scores=[0.5] * n, labels=[None] * n, attributes={}, source="api", attributions=attr)


def test_clean_traffic_outlier_share_near_the_quantile_and_shifted_traffic_far_above(tmp_path):
    _, pipe, reg = make(tmp_path)
    ref_share = reg.get_sample_value("modelmon_reference_outlier_ratio", {"model": "m"})
    assert ref_share == pytest.approx(0.005, abs=1e-3)
    pipe.submit(batch(40_000))
    share = reg.get_sample_value("modelmon_outlier_ratio", {"model": "m", "window": "5m"})
    assert share == pytest.approx(0.005, abs=4 * math.sqrt(0.005 * 0.995 / 40_000) + 1e-3)
    assert reg.get_sample_value("modelmon_outlier_scored_events_total", {"model": "m"}) == 40_000
    pipe.submit(batch(40_000, shift=4.0, start=40_000))
    share = reg.get_sample_value("modelmon_outlier_ratio", {"model": "m", "window": "5m"})
    assert share > 3 * ref_share
    assert reg.get_sample_value("modelmon_threshold_outlier_ratio_max_multiple", {"model": "m"}) == 3.0


def test_unseen_category_alone_makes_an_event_outlying(tmp_path):
    _, pipe, reg = make(tmp_path)
    pipe.submit(batch(500, category="never-seen"))
    assert reg.get_sample_value("modelmon_outlier_events_total", {"model": "m"}) == 500


def test_inference_log_marks_outlying_events_by_id_without_raw_values(tmp_path):
    cfg, pipe, _ = make(tmp_path, logs={"sample_ratio": 0.0})
    buf = io.StringIO()
    pipe.listeners.append(InferenceLogger(cfg, stream=buf))
    b = batch(1000)
    b.features["a"][[3, 500]] = 50.0  # far outside the reference
    pipe.submit(b)
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    ids = {x["request_id"] for x in lines}
    assert {"r3", "r500"} <= ids and len(lines) < 30  # nothing else logged at sample_ratio 0 but outliers
    assert all(x["outlier"] is True and x["outlier_score"] > 0 for x in lines)
    assert all("features" not in x for x in lines)


def test_importance_gauges_and_rank_correlation_against_hand_and_scipy(tmp_path):
    _, pipe, reg = make(tmp_path)
    b = batch(5000, attr_sd={"a": 0.5, "b": 1.0, "c": 2.0, "k": 3.0})  # ranking reversed
    pipe.submit(b)
    got = {f: reg.get_sample_value("modelmon_feature_importance", {"model": "m", "feature": f, "window": "5m"})
           for f in FEATURES}
    for f in FEATURES:
        assert got[f] == pytest.approx(float(np.mean(np.abs(b.attributions[f]))), rel=1e-12)
    total = sum(got.values())
    assert reg.get_sample_value("modelmon_feature_importance_ratio", {"model": "m", "feature": "a", "window": "5m"}) \
        == pytest.approx(got["a"] / total)
    ref = [reg.get_sample_value("modelmon_reference_feature_importance_ratio", {"model": "m", "feature": f})
           for f in FEATURES]
    rho = reg.get_sample_value("modelmon_feature_importance_rank_correlation", {"model": "m", "window": "5m"})
    assert rho == pytest.approx(stats.spearmanr([got[f] for f in FEATURES], ref).statistic) == pytest.approx(-1.0)
    assert reg.get_sample_value("modelmon_feature_importance_shift_detected", {"model": "m", "window": "5m"}) == 1
    assert reg.get_sample_value("modelmon_attribution_events", {"model": "m", "window": "5m"}) == 5000
    # The attribution values are drift-scored like features.
    methods = [s.labels["method"] for fam in reg.collect() if fam.name == "modelmon_drift_score"
               for s in fam.samples if s.labels["feature"] == "attribution_c"]
    assert methods


def test_attributions_enabled_without_reference_columns_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"ref.csv.*attribution_a"):
        make(tmp_path, with_attributions=False)


def test_simulator_attributions_are_exact_and_importance_shift_reorders_the_ranking():
    model = demo_model_config()
    model.drift.recompute_interval_seconds = 0
    cfg = Config(models=[model])
    ref = reference_data(20_000, 1)[1]
    pipe = Pipeline(cfg, {"demo": reference_profile(model, 20_000, 1)})
    reg = build_registry(pipe)
    sim = Simulator(SimulatorConfig(scenario="importance-shift", anomaly_after_seconds=3600, seed=1), pipe.submit)
    normal = sim.batch(20_000, sim.regime(now=sim.started_at), 0.0)
    # Exact for the linear score: coefficient x (value - reference mean).
    age = np.asarray(normal.features["age"])
    assert normal.attributions["age"] == pytest.approx(COEFFICIENTS["age"] * (age - ref["age"].mean()), abs=1e-12)
    pipe.submit(normal)
    rho = {"model": "demo", "window": "5m"}
    assert reg.get_sample_value("modelmon_feature_importance_rank_correlation", rho) > 0.9
    outliers_before = reg.get_sample_value("modelmon_outlier_ratio", rho)
    mon = pipe.monitors["demo"]
    for w in mon.windows.values():
        w.evict(float("inf"))  # an empty window, as if the normal traffic had aged out
    shifted = sim.batch(20_000, sim.regime(now=sim.started_at + 7200), 0.0)
    pipe.submit(shifted)
    assert reg.get_sample_value("modelmon_feature_importance_rank_correlation", rho) < 0.7
    assert reg.get_sample_value("modelmon_feature_importance_shift_detected", rho) == 1
    assert reg.get_sample_value("modelmon_outlier_ratio", rho) > 3 * max(outliers_before, 0.005)
