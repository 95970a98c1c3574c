"""Multivariate drift (PCA reconstruction error): hand-checkable cases, a
correlation change no per-feature method sees, and the false-alarm rate on
windows without drift."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from modelmon.cli import main
from modelmon.drift import registry
from modelmon.drift.multivariate import PCADriftModel, fit_pca_drift
from modelmon.estimation.sections import encode_features, load_estimators
from modelmon.sources.simulator import (
    demo_model_config,
    generate_features,
    reference_profile,
)

COV = np.array([[1.0, 0.8, 0.0, 0.0], [0.8, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.6], [0.0, 0.0, 0.6, 1.0]])
NAMES = ["a", "b", "c", "d"]


def rows(rng, n, cov=COV):
    x = rng.multivariate_normal(np.zeros(4), cov, n)
    return {name: x[:, i] for i, name in enumerate(NAMES)}


def test_two_collinear_features_keep_one_component():
    rng = np.random.default_rng(0)
    a = rng.normal(size=4000)
    model = fit_pca_drift({"a": a, "b": 2 * a + 1}, {}, {})
    assert model.components.shape == (1, 2)
    assert np.abs(model.components[0]) == pytest.approx([2 ** -0.5, 2 ** -0.5])
    assert model.mean_error == pytest.approx(0.0, abs=1e-9)
    # b = -2a + 1 breaks the relation: only the part of the standardised row
    # (za, zb) along the dropped axis (1, -1)/sqrt(2) is lost, |za - zb| / sqrt(2).
    fresh = rng.normal(size=1000)
    res = model.evaluate({"a": fresh, "b": -2 * fresh + 1}, {})
    za = (fresh - model.center[0]) / model.scale[0]
    zb = (-2 * fresh + 1 - model.center[1]) / model.scale[1]
    assert res.reconstruction_error == pytest.approx(np.mean(np.abs(za - zb) / np.sqrt(2)), rel=1e-9)
    assert res.drifted and res.feature_share == pytest.approx({"a": 0.5, "b": 0.5})


def test_frequency_encoding_and_missing_values():
    rng = np.random.default_rng(1)
    codes = rng.choice(3, 3000, p=[0.5, 0.3, 0.2])
    x = rng.normal(size=3000)
    model = fit_pca_drift({"x": x}, {"k": codes}, {"k": 4})
    freq = np.bincount(codes, minlength=4) / 3000
    assert model.cat_freq[0] == pytest.approx(freq.tolist())
    enc = model.encode({"x": np.array([np.nan, 1.0])}, {"k": np.array([2, -1])})
    assert enc[:, 0] == pytest.approx([x.mean(), freq[2]])  # missing number -> reference mean
    assert enc[:, 1] == pytest.approx([1.0, freq.max()])  # missing category -> most frequent's frequency


def test_needs_two_features():
    with pytest.raises(ValueError, match="two features"):
        fit_pca_drift({"a": np.arange(100.0)}, {}, {})


def _write(path, cols):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(list(cols))
        w.writerows(zip(*[np.round(v, 6) for v in cols.values()]))


def test_correlation_change_with_unchanged_marginals(tmp_path, capsys):
    rng = np.random.default_rng(2)
    ref = rows(rng, 20_000)
    model = fit_pca_drift(ref, {}, {})
    # Same N(0, 1) marginals for every feature, but a and b no longer move together.
    broken = COV.copy()
    broken[0, 1] = broken[1, 0] = 0.0
    cur = rows(rng, 2000, broken)
    res = model.evaluate(cur, {})
    assert res.drifted and res.reconstruction_error > res.upper
    share = res.feature_share
    assert share["a"] + share["b"] > share["c"] + share["d"]
    # No per-feature method flags any feature on the same data.
    _write(tmp_path / "ref.csv", ref)
    _write(tmp_path / "cur.csv", cur)
    methods = [m for m in registry.names() if "numerical" in registry.get(m).feature_types]
    assert {"ks", "psi", "wasserstein"} <= set(methods)
    for method in methods:
        assert main(["drift", "--reference", str(tmp_path / "ref.csv"), "--current", str(tmp_path / "cur.csv"),
                     "--method", method]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert set(doc["features"]) == set(NAMES)
        flagged = [n for n, f in doc["features"].items()
                   if f["drifted"] or any(r["drifted"] for r in f.get("methods", {}).values())]
        assert flagged == [], (method, flagged)


def test_false_alarm_rate_without_drift():
    rng = np.random.default_rng(3)
    model = fit_pca_drift(rows(rng, 20_000), {}, {})
    windows = 300
    alarms = sum(model.evaluate(rows(rng, 1000), {}).drifted for _ in range(windows))
    print(f"multivariate false alarms: {alarms}/{windows} = {alarms / windows:.3%} (nominal 0.27 % at 3 sigma)")
    assert alarms / windows <= 0.02


def test_round_trip():
    rng = np.random.default_rng(4)
    model = fit_pca_drift(rows(rng, 5000), {}, {})
    back = PCADriftModel.from_dict(model.to_dict())
    cur = rows(rng, 500)
    assert back.evaluate(cur, {}) == model.evaluate(cur, {})


def test_false_alarm_rate_on_the_demo_features():
    """Heavy tails (exponential), clipping and frequency-encoded categoricals:
    three references, 200 no-drift windows of 1000 rows each."""
    model_cfg = demo_model_config()
    alarms = windows = 0
    for seed in (1, 2, 3):
        prof = reference_profile(model_cfg, 20_000, seed)
        mv = load_estimators(prof, model_cfg).multivariate
        assert mv is not None
        rng = np.random.default_rng(100 + seed)
        for _ in range(200):
            num, codes = encode_features(prof, mv.features, generate_features(rng, 1000))
            alarms += mv.evaluate(num, codes).drifted
            windows += 1
    print(f"demo features: multivariate false alarms {alarms}/{windows} = {alarms / windows:.2%}")
    assert alarms / windows <= 0.02
