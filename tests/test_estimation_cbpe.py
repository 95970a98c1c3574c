"""Confidence-based performance estimation and score calibration: hand
computations, agreement with the realized metrics on simulated data, and the
calibration correcting miscalibrated scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from modelmon.config import FeatureConfig
from modelmon.drift.reference import ReferenceProfile, build_profile
from modelmon.estimation.calibration import (
    expected_calibration_error,
    fit_calibration,
    fit_isotonic,
)
from modelmon.estimation.cbpe import (
    CBPEModel,
    estimate_metrics,
    expected_confusion,
    expected_roc_auc,
    fit_cbpe,
    realized_metrics,
)
from modelmon.quality import roc_auc
from scipy.optimize import isotonic_regression


def simulate(rng, n, shift=0.0):
    """Calibrated model: the score is the true probability of the label."""
    x = rng.normal(shift, 1.0, (n, 2))
    p = 1.0 / (1.0 + np.exp(-(1.5 * x[:, 0] - x[:, 1] + 0.5)))
    y = (rng.random(n) < p).astype(float)
    return p, (p >= 0.5).astype(float), y


def test_expected_confusion_and_metrics_hand_computed():
    p = np.array([0.9, 0.8, 0.3, 0.2, 0.6])
    pred = np.array([1, 1, 0, 0, 1], dtype=bool)
    tp, fp, fn, tn = expected_confusion(p, pred)
    assert (tp, fp, fn, tn) == pytest.approx((2.3, 0.7, 0.5, 1.5))
    m = estimate_metrics(p, pred, p)
    assert m["accuracy"] == pytest.approx(3.8 / 5)
    assert m["precision"] == pytest.approx(2.3 / 3.0)
    assert m["recall"] == pytest.approx(2.3 / 2.8)
    assert m["f1"] == pytest.approx(4.6 / 5.8)


def test_precision_undefined_without_predicted_positives():
    m = estimate_metrics(np.array([0.2, 0.4]), np.array([False, False]), np.array([0.2, 0.4]))
    assert m["precision"] is None and m["accuracy"] == pytest.approx(0.7)
    assert m["recall"] == pytest.approx(0.0)


def _pairwise_expected_auc(p, s):
    """Brute force: sum over ordered pairs of P(i pos) P(j neg) [s_i > s_j] (+1/2 on ties, i = j included)."""
    num = 0.0
    for i in range(len(p)):
        for j in range(len(p)):
            w = p[i] * (1 - p[j])
            num += w * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    return num / (p.sum() * (len(p) - p.sum()))


def test_expected_roc_auc_against_pairwise_definition_with_ties():
    p = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.5])
    s = np.array([0.9, 0.6, 0.2, 0.6, 0.1, 0.6])  # a three-way tie at 0.6
    assert expected_roc_auc(p, s) == pytest.approx(_pairwise_expected_auc(p, s))


def test_expected_roc_auc_with_known_labels_is_the_realized_auc():
    rng = np.random.default_rng(0)
    s = np.round(rng.random(300), 1)  # few distinct values: many ties
    y = (rng.random(300) < s).astype(float)
    assert expected_roc_auc(y, s) == pytest.approx(roc_auc(s, y == 1.0))
    assert expected_roc_auc(np.ones(3), np.array([0.1, 0.2, 0.3])) is None


def test_ece_hand_computed():
    # Two equal-frequency bins: |0.5 - 0.15| and |1 - 0.85|, each half the rows.
    assert expected_calibration_error(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 1, 1, 1]), bins=2) == pytest.approx(0.25)


def test_isotonic_fit_matches_scipy_and_interpolates():
    s = np.array([0.1, 0.2, 0.3, 0.4])
    y = np.array([0.0, 1.0, 0.0, 1.0])
    cal = fit_isotonic(s, y)
    assert cal.apply(s) == pytest.approx(isotonic_regression(y).x)  # [0, .5, .5, 1]
    assert cal.apply(np.array([0.15, 0.0, 1.0])) == pytest.approx([0.25, 0.0, 1.0])  # linear inside, clipped outside
    assert np.isnan(cal.apply(np.array([np.nan]))[0])
    # Ties in the score are averaged before the fit; only plateau corners are kept.
    big = np.repeat(np.linspace(0, 1, 50), 4)
    labels = (np.arange(200) % 4 == 0).astype(float)
    fitted = fit_isotonic(big, labels)
    assert len(fitted.x) <= 4 and np.all(np.diff(fitted.y) >= 0)


def test_band_covers_realized_accuracy_on_calibrated_data():
    rng = np.random.default_rng(1)
    model = fit_cbpe(*simulate(rng, 20_000))
    windows, n = 200, 500
    inside = {m: 0 for m in model.metrics}
    for _ in range(windows):
        s, pred, y = simulate(rng, n, shift=rng.normal(0, 0.3))  # mild covariate shift, still calibrated
        est = model.estimate(s, pred)
        real = realized_metrics(y, pred, s)
        for m, e in est.estimates.items():
            inside[m] += e.lower <= real[m] <= e.upper
    coverage = {m: v / windows for m, v in inside.items()}
    print("coverage over", windows, "windows of", n, "rows:", coverage)
    assert coverage["accuracy"] >= 0.95
    assert min(coverage.values()) >= 0.9


def test_band_shrinks_with_window_size():
    rng = np.random.default_rng(2)
    model = fit_cbpe(*simulate(rng, 20_000))
    s, pred, _ = simulate(rng, 40_000)
    small = model.estimate(s[:1000], pred[:1000]).estimates["accuracy"]
    large = model.estimate(s[:4000], pred[:4000]).estimates["accuracy"]
    assert large.sampling_error == pytest.approx(small.sampling_error / 2)
    assert model.estimate(s[:99], pred[:99]).estimates == {}  # below min_rows


def test_calibration_corrects_miscalibrated_scores():
    rng = np.random.default_rng(3)
    p, pred, y = simulate(rng, 20_000)
    raw = p ** 3  # overconfident in the negatives, same order (AUC unchanged)
    cal = fit_cbpe(raw, pred, y, calibration="auto")
    uncal = fit_cbpe(raw, pred, y, calibration="never")
    assert cal.calibration.applied and cal.calibration.ece_calibrated < cal.calibration.ece_raw
    err_cal, err_raw = [], []
    for _ in range(50):
        p, pred, y = simulate(rng, 2000, shift=0.5)
        real = realized_metrics(y, pred, p ** 3)["accuracy"]
        err_cal.append(abs(cal.estimate(p ** 3, pred).estimates["accuracy"].value - real))
        err_raw.append(abs(uncal.estimate(p ** 3, pred).estimates["accuracy"].value - real))
    print(f"mean |estimate - realized| accuracy: calibrated {np.mean(err_cal):.4f}, uncalibrated {np.mean(err_raw):.4f}")
    assert np.mean(err_cal) < 0.02
    assert np.mean(err_raw) > 0.05


def test_auto_keeps_calibrated_scores_when_isotonic_does_not_help():
    rng = np.random.default_rng(4)
    s = rng.random(5000)
    y = (rng.random(5000) < s).astype(float)
    c = fit_calibration(s, y, mode="auto")
    assert c.ece_raw is not None and c.ece_calibrated is not None
    assert c.applied == (c.ece_calibrated < c.ece_raw)
    assert fit_calibration(s, y, mode="never").apply(s) is not None and not fit_calibration(s, y, mode="never").applied
    assert fit_calibration(s, y, mode="always").applied


def test_reference_errors():
    with pytest.raises(ValueError, match="single class"):
        fit_cbpe(np.full(2000, 0.3), np.zeros(2000), np.zeros(2000))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_cbpe(np.full(2000, 3.0), np.zeros(2000), np.arange(2000) % 2)
    with pytest.raises(ValueError, match="fewer than 2 chunks"):
        fit_cbpe(np.array([0.2, 0.8]), np.array([0.0, 1.0]), np.array([0.0, 1.0]))


def test_section_survives_the_profile_file():
    rng = np.random.default_rng(5)
    model = fit_cbpe(*simulate(rng, 5000))
    prof = build_profile({"x": rng.normal(size=100)}, [FeatureConfig(name="x")])
    before = prof.hash
    prof.set_section("performance_estimation", model.to_dict())
    assert prof.hash != before
    text = prof.to_json()
    again = ReferenceProfile.from_json(text)
    assert again.hash == prof.hash
    back = CBPEModel.from_dict(again.sections["performance_estimation"])
    s, pred, _ = simulate(rng, 1000)
    assert back.estimate(s, pred) == model.estimate(s, pred)
    tampered = json.loads(text)
    tampered["sections"]["performance_estimation"]["sigmas"] = 1.0
    with pytest.raises(ValueError, match="hash"):
        ReferenceProfile.from_json(json.dumps(tampered))
