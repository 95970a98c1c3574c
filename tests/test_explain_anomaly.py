"""Importance, rank correlation and outlier scores against hand computation, scipy and numpy."""

import json
import math

import numpy as np
import pytest
from modelmon.anomaly import OutlierModel, fit_outlier_model
from modelmon.anomaly.outliers import category_penalties
from modelmon.config import FeatureConfig, ModelConfig
from modelmon.drift.reference import ProfileError, ReferenceProfile, build_profile
from modelmon.explain import (
    ImportanceProfile,
    compare_importance,
    mean_abs_attribution,
    rank_average,
    spearman,
)
from modelmon.profile_sections import fit_explain_sections
from scipy import stats


def test_mean_abs_attribution_by_hand_with_missing():
    a = np.array([[1.0, -3.0, math.nan], [0.0, 0.0, 0.0], [math.nan, math.nan, math.nan]])
    imp, counts = mean_abs_attribution(a)
    assert imp[0] == pytest.approx(2.0)
    assert imp[1] == 0.0
    assert math.isnan(imp[2])
    assert counts.tolist() == [2, 3, 0]


@pytest.mark.parametrize("a,b", [
    ([0.5, 0.2, 0.1, 0.05], [0.4, 0.3, 0.05, 0.2]),
    ([1, 1, 1, 2, 3], [3, 2, 1, 1, 1]),          # ties on both sides
    ([0, 0, 5, 5, 9, 9], [1, 2, 3, 4, 5, 6]),
    ([1e-300, 1e300, 0.0], [2.0, 1.0, 0.5]),       # extremes
])
def test_spearman_matches_scipy(a, b):
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert rank_average(np.array(a, dtype=float)).tolist() == stats.rankdata(a).tolist()


def test_spearman_by_hand_and_undefined_cases():
    # Reversed order of 3: ranks (1,2,3) vs (3,2,1) -> -1; swap of the top two of 3:
    # d = (0, 1, -1), rho = 1 - 6*2/(3*8) = 0.5.
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert spearman([1, 1, 1], [1, 2, 3]) is None   # constant: undefined
    assert spearman([1.0], [2.0]) is None


def test_compare_importance_flags_a_reordering():
    rng = np.random.default_rng(1)
    ref = ImportanceProfile.fit({"a": rng.normal(0, 3, 5000), "b": rng.normal(0, 2, 5000), "c": rng.normal(0, 1, 5000)})
    assert ref.importance[0] == pytest.approx(3 * math.sqrt(2 / math.pi), rel=0.05)
    same = np.vstack([rng.normal(0, s, 800) for s in (3, 2, 1)])
    swapped = np.vstack([rng.normal(0, s, 800) for s in (1, 2, 3)])
    ok = compare_importance(same, ref, threshold=0.7, min_samples=100)
    bad = compare_importance(swapped, ref, threshold=0.7, min_samples=100)
    assert ok.rank_correlation == pytest.approx(1.0) and ok.drifted is False
    assert bad.rank_correlation == pytest.approx(-1.0) and bad.drifted is True
    assert bad.shares.sum() == pytest.approx(1.0)
    few = compare_importance(swapped[:, :10], ref, threshold=0.7, min_samples=100)
    assert few.drifted is None and few.n == 10
    again = ImportanceProfile.from_section(ref.to_section())
    assert again.importance.tolist() == ref.importance.tolist()
    with pytest.raises(ValueError, match="one finite"):
        ImportanceProfile.from_section({"features": ["a"], "importance": [1.0, 2.0], "counts": [1]})


def numpy_reference_scores(x_ref, x, shrinkage):
    """The documented score computed the plain way: standardise, shrink, invert, quadratic form."""
    mean, sd = x_ref.mean(axis=0), x_ref.std(axis=0)
    zr, z = (x_ref - mean) / sd, (x - mean) / sd
    c = np.corrcoef(zr, rowvar=False)
    p = np.linalg.inv((1 - shrinkage) * c + shrinkage * np.eye(x.shape[1]))
    return np.array([row @ p @ row for row in z])


def test_outlier_score_matches_numpy_computation():
    rng = np.random.default_rng(7)
    cov = [[4.0, 1.8, 0.0], [1.8, 1.0, 0.2], [0.0, 0.2, 9.0]]
    ref = rng.multivariate_normal([10, -5, 0], cov, 4000)
    model = fit_outlier_model({f"f{i}": ref[:, i] for i in range(3)}, shrinkage=0.05)
    x = rng.multivariate_normal([10, -5, 0], cov, 200)
    x[:5] += 20
    expected = numpy_reference_scores(ref, x, 0.05)
    assert model.score(x.T) == pytest.approx(expected, rel=1e-9)
    # A missing value contributes as the reference mean would.
    x2 = x[:3].copy()
    x2[:, 1] = np.nan
    filled = x[:3].copy()
    filled[:, 1] = ref[:, 1].mean()
    assert model.score(x2.T) == pytest.approx(numpy_reference_scores(ref, filled, 0.05), rel=1e-9)


def test_categorical_penalties_by_hand_and_unseen():
    # counts 90, 10, 0 (other): p = (90.5, 10.5, 0.5) / 101.5
    pen = category_penalties([90, 10, 0])
    assert pen[0] == 0.0
    assert pen[1] == pytest.approx(2 * math.log(90.5 / 10.5))
    assert pen[2] == pytest.approx(2 * math.log(90.5 / 0.5))
    model = fit_outlier_model({}, {"region": (np.array([0] * 90 + [1] * 10), np.array([90, 10, 0]))})
    scores = model.score(np.zeros((0, 4)), np.array([[0, 1, 2, -1]]))
    assert scores.tolist() == pytest.approx([0.0, pen[1], pen[2], 0.0])
    assert model.outlying(scores).tolist() == [False, False, True, False]


@pytest.mark.parametrize("q", [0.995, 0.95])
def test_clean_sample_outlier_share_near_quantile(q):
    rng = np.random.default_rng(3)
    def sample(n):
        x = rng.normal(size=(n, 20)) @ np.triu(np.full((20, 20), 0.3)) + 5
        cat = rng.choice(3, n, p=[0.6, 0.3, 0.1])
        return x, cat
    x_ref, c_ref = sample(40_000)
    model = fit_outlier_model({f"f{i}": x_ref[:, i] for i in range(20)},
                              {"c": (c_ref, np.bincount(c_ref, minlength=4))}, quantile=q)
    assert model.reference_share == pytest.approx(1 - q, abs=1e-3)
    x, c = sample(40_000)
    share = model.outlying(model.score(x.T, c[None, :])).mean()
    # Binomial standard error at n=40000 is at most 0.0011; allow 4 of them.
    assert share == pytest.approx(1 - q, abs=4 * math.sqrt(q * (1 - q) / 40_000) + 1e-3)
    shifted = model.outlying(model.score(x.T + 3.0, c[None, :])).mean()
    assert shifted > 10 * (1 - q)


def test_constant_feature_and_section_round_trip():
    ref = {"const": np.full(1000, 2.0), "x": np.random.default_rng(0).normal(size=1000)}
    model = fit_outlier_model(ref)
    s = model.score(np.array([[2.0, 2.5], [0.0, 0.0]]))
    assert s[0] < model.threshold < s[1]
    again = OutlierModel.from_section(model.to_section())
    assert again.score(np.array([[2.0, 2.5], [0.0, 0.0]])).tolist() == s.tolist()
    with pytest.raises(ValueError, match="outlier_model"):
        OutlierModel.from_section({"numerical": ["a"]})


def test_a_tampered_outlier_section_is_refused_on_load_naming_the_file(tmp_path):


    rng = np.random.default_rng(0)
    cols = {"x": rng.normal(size=500), "y": rng.normal(size=500)}
    model = ModelConfig(name="m", features=[FeatureConfig(name="x"), FeatureConfig(name="y")])
    prof = build_profile(cols, model.features)
    fit_explain_sections(prof, cols, model)
    path = tmp_path / "p.json"
    prof.save(path)
    assert ReferenceProfile.load(path).sections["outlier_model"]["threshold"] == prof.sections["outlier_model"]["threshold"]
    doc = json.loads(path.read_text())
    doc["sections"]["outlier_model"]["precision"] = [[1.0]]
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match=r"p.json.*outlier_model"):
        ReferenceProfile.load(path)


def test_one_extreme_reference_value_leaves_the_outlier_model_finite_and_useful():
    """A single 1e300 in the reference used to overflow the moments (non-finite
    model, refused at start-up); the fit now winsorises at the profile's fences."""
    rng = np.random.default_rng(5)
    x = rng.normal(0.0, 1.0, (2, 4000))
    x[0, 17] = 1e300
    model = fit_outlier_model({"a": x[0], "b": x[1]}, quantile=0.99)
    assert np.all(np.isfinite(model.precision)) and np.all(np.isfinite(model.scale))
    assert 0.8 < model.scale[0] < 1.2  # the clean rows' spread, not 1e300 / sqrt(n)
    clean = rng.normal(0.0, 1.0, (2, 20000))
    share = float(np.mean(model.outlying(model.score(clean))))
    assert 0.005 < share < 0.02
    far = model.score(np.array([[6.0, 1e300, -np.inf], [0.0, 0.0, 0.0]]))
    assert np.all(np.isfinite(far[:2])) and model.outlying(far[:2]).all()
