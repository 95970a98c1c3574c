"""The drift engine: default method rule, dataset drift, data quality,
minimum sample gate, and the statistical behaviour of the defaults
(false-alarm rate on no-drift windows, power on clear shifts)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from modelmon.config import DriftConfig, FeatureConfig
from modelmon.drift import registry
from modelmon.drift.base import CurrentColumn
from modelmon.drift.batch import encode, table_from_columns
from modelmon.drift.engine import DriftEngine
from modelmon.drift.reference import build_categorical, build_numerical, build_profile


def score(features, ref: dict, cur: dict, drift: DriftConfig | None = None, gate: bool = False, **kw):
    """Engine report for ``cur``; without ``gate`` every method is scored
    whatever the window size (as the batch command does)."""
    drift = drift or DriftConfig(min_samples=1)
    if not gate:
        kw.setdefault("min_samples", 1)
    profile = build_profile(ref, features, bins=drift.bins, sample_size=10**6)
    engine = DriftEngine(features, profile, drift, **kw)
    win = encode(engine, table_from_columns(cur))
    return engine, engine.compute("w", win.size, win.columns, win.counts)


def test_default_rule_follows_reference_size() -> None:
    rng = np.random.default_rng(0)
    feats = [FeatureConfig(name="x"), FeatureConfig(name="c", type="categorical")]

    def methods(rows: int) -> dict[str, list[str]]:
        ref = {"x": rng.normal(size=rows), "c": list(rng.choice(["a", "b"], rows))}
        engine, _ = score(feats, ref, {"x": [0.0], "c": ["a"]})
        return {p.name: [m for m, _ in p.methods] for p in engine.plans}

    assert methods(1000) == {"x": ["ks", "psi"], "c": ["chisquare", "psi"]}  # <= 1000 rows: tests
    assert methods(1001) == {"x": ["wasserstein", "psi"], "c": ["jensenshannon", "psi"]}
    small = DriftConfig(small_sample_max=5000, min_samples=1)
    ref = {"x": rng.normal(size=2000), "c": list(rng.choice(["a", "b"], 2000))}
    engine, _ = score(feats, ref, {"x": [0.0], "c": ["a"]}, drift=small)
    assert [m for m, _ in engine.plans[0].methods] == ["ks", "psi"]
    # thresholds: the methods' documented defaults
    engine, _ = score(feats, {"x": rng.normal(size=50), "c": ["a", "b"] * 25}, {"x": [0.0], "c": ["a"]})
    assert dict(engine.plans[0].methods) == {"ks": 0.05, "psi": 0.1}
    assert dict(engine.plans[1].methods) == {"chisquare": 0.05, "psi": 0.1}


def test_configured_methods_and_feature_threshold_on_primary_only() -> None:
    rng = np.random.default_rng(1)
    feats = [FeatureConfig(name="x", methods=["psi", "ks"], threshold=0.2), FeatureConfig(name="y")]
    drift = DriftConfig(methods=["meanstd", "chisquare"], min_samples=1)
    ref = {"x": rng.normal(size=100), "y": rng.normal(size=100)}
    engine, _ = score(feats, ref, {"x": [0.0] * 3, "y": [0.0] * 3}, drift=drift)
    assert engine.plans[0].methods == [("psi", 0.2), ("ks", 0.05)]
    assert engine.plans[1].methods == [("meanstd", 0.1)]  # model-wide list, filtered by type
    # --method forces its method where it applies; other types keep theirs
    feats = [FeatureConfig(name="x"), FeatureConfig(name="c", type="categorical")]
    ref = {"x": rng.normal(size=100), "c": ["a", "b"] * 50}
    engine, _ = score(feats, ref, {"x": [0.0], "c": ["a"]}, force_method="wasserstein")
    assert [m for m, _ in engine.plans[0].methods] == ["wasserstein"]
    assert [m for m, _ in engine.plans[1].methods] == ["chisquare", "psi"]
    with pytest.raises(KeyError, match="unknown drift method 'nope'"):
        score(feats, ref, {"x": [0.0], "c": ["a"]}, force_method="nope")


def test_dataset_drift_share_rule() -> None:
    feats = [FeatureConfig(name=f"f{i}", methods=["meanstd"]) for i in range(4)]
    base = np.linspace(-2, 2, 401)
    ref = {f"f{i}": base for i in range(4)}

    def cur(shifted: int) -> dict:  # shifted features move by 3 (score 1.5), the others not at all (0)
        return {f"f{i}": base + (3.0 if i < shifted else 0.0) for i in range(4)}

    _, rep = score(feats, ref, cur(2))
    assert rep.evaluated_features == 4 and rep.drifted_features == 2
    assert rep.drifted_share == 0.5 and rep.dataset_drifted is True  # >= 0.5
    _, rep = score(feats, ref, cur(1))
    assert rep.drifted_share == 0.25 and rep.dataset_drifted is False
    _, rep = score(feats, ref, cur(2), dataset_share_threshold=0.75)
    assert rep.dataset_drifted is False
    _, rep = score(feats, ref, cur(0))
    assert rep.drifted_share == 0.0 and rep.dataset_drifted is False


def test_data_quality_rates_and_min_samples() -> None:
    feats = [FeatureConfig(name="x"), FeatureConfig(name="c", type="categorical"),
             FeatureConfig(name="d", type="categorical")]
    ref = {"x": np.linspace(0, 10, 200), "c": ["a", "b"] * 100, "d": [f"v{i % 30}" for i in range(200)]}
    x = [None, math.nan, -1.0, 11.0, 12.0, 5.0, 5.0, 5.0, 5.0, 5.0]  # 2 missing, 3 of 8 out of range
    c = ["a", "b", "zz", None, "a", "a", "a", "a", "yy", "b"]  # 1 missing, 2 of 9 new
    d = ["v1"] * 10
    engine, rep = score(feats, ref, {"x": x, "c": c, "d": d}, drift=DriftConfig(min_samples=1, top_k_categories=20))
    fx, fc, fd = rep.features["x"], rep.features["c"], rep.features["d"]
    assert (fx.n, fx.missing_ratio, fx.out_of_range_ratio) == (8, 0.2, 3 / 8)
    assert (fc.n, fc.missing_ratio, fc.new_category_ratio) == (9, 0.1, 2 / 9)
    # d kept 20 of 30 reference categories: __other__ has reference mass, so a
    # value there may be known, and the new-category rate is not reported.
    assert fd.new_category_ratio is None
    # min_samples: no score below it, counts still reported
    _, rep = score(feats, ref, {"x": x, "c": c, "d": d}, drift=DriftConfig(min_samples=9), min_samples=9)
    assert rep.features["x"].results == {"ks": None, "psi": None} and rep.features["x"].n == 8
    assert rep.features["c"].results["chisquare"] is not None
    assert rep.evaluated_features == 2  # x is not evaluated


def test_distances_wait_for_their_minimum_window_size() -> None:
    """The exporter scores a distance only on windows large enough that its
    no-drift noise stays under the default threshold; tests need no floor."""
    rng = np.random.default_rng(6)
    feats = [FeatureConfig(name="x", methods=["wasserstein", "psi", "jensenshannon", "ks"]),
             FeatureConfig(name="c", type="categorical", methods=["jensenshannon", "psi", "chisquare"])]
    cats = [f"k{i}" for i in range(25)]
    ref = {"x": rng.normal(size=5000), "c": list(rng.choice(cats, 5000))}
    engine, rep = score(feats, ref, {"x": rng.normal(size=600), "c": list(rng.choice(cats, 600))},
                        drift=DriftConfig(min_samples=100, top_k_categories=20), gate=True)
    req = {p.name: dict(zip([m for m, _ in p.methods], p.required)) for p in engine.plans}
    # 10 quantile bins (the out-of-range slots hold no reference mass); 20 kept categories + __other__
    assert req["x"] == {"wasserstein": 1000, "psi": 300, "jensenshannon": 500, "ks": 100}
    assert req["c"] == {"jensenshannon": 1000, "psi": 600, "chisquare": 100}
    got = {f: {m for m, r in rep.features[f].results.items() if r is not None} for f in ("x", "c")}
    assert got == {"x": {"psi", "jensenshannon", "ks"}, "c": {"psi", "chisquare"}}  # 600 values
    assert rep.features["x"].drifted is None and rep.evaluated_features == 0  # primaries not scored yet
    _, rep = score(feats, ref, {"x": rng.normal(size=1000), "c": list(rng.choice(cats, 1000))},
                   drift=DriftConfig(min_samples=100, top_k_categories=20), gate=True)
    assert all(r is not None for f in rep.features.values() for r in f.results.values())


def test_nan_values_are_dropped_before_exact_tests() -> None:
    rng = np.random.default_rng(4)
    ref = rng.normal(size=300)
    cur = rng.normal(0.3, 1, 250)
    cur_nan = cur.copy()
    cur_nan[::5] = np.nan
    cur_nan[1] = np.inf  # non-finite counts as missing, as in the exporter
    feats = [FeatureConfig(name="x", methods=["ks", "wasserstein", "meanstd"])]
    _, rep = score(feats, {"x": ref}, {"x": cur_nan})
    present = cur_nan[np.isfinite(cur_nan)]
    r = rep.features["x"].results
    expected = stats.ks_2samp(present, ref)
    assert r["ks"].statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert r["ks"].p_value == pytest.approx(expected.pvalue, abs=1e-9)
    assert r["wasserstein"].statistic == pytest.approx(stats.wasserstein_distance(present, ref) / np.std(ref), rel=1e-9)
    assert rep.features["x"].missing_ratio == pytest.approx(1 - len(present) / 250)


def test_threaded_and_sequential_engines_agree() -> None:
    rng = np.random.default_rng(8)
    feats = [FeatureConfig(name=f"x{i}", methods=["wasserstein", "ks", "psi"]) for i in range(6)]
    ref = {f"x{i}": rng.normal(size=3000) for i in range(6)}
    cur = {f"x{i}": rng.normal(0.05 * i, 1, 5000) for i in range(6)}
    _, seq = score(feats, ref, cur, workers=1)
    _, par = score(feats, ref, cur, workers=2)
    for name in seq.features:
        assert seq.features[name].results == par.features[name].results


# --------------------------------------------------------------- statistics
def _column(prof, cur) -> CurrentColumn:
    if isinstance(cur[0], str):
        codes = prof.codes(list(cur))
        return CurrentColumn(values=codes, counts=np.bincount(codes, minlength=prof.slots))
    idx = prof.bin_index(cur)
    return CurrentColumn(values=cur, counts=np.bincount(idx, minlength=prof.slots))


def _rate(method: str, prof, draw, trials: int) -> float:
    """Share of windows ``draw()`` flagged against one fixed profile."""
    m = registry.get(method)
    return sum(m.compute(prof, _column(prof, draw()), m.default_threshold).drifted for _ in range(trials)) / trials


def test_small_reference_tests_hold_their_nominal_false_alarm_rate() -> None:
    """A reference and a window drawn from one population (each trial draws
    both, as a test's level is defined): KS and chi-square flag about 5 % of
    them (binomial 99.9 % band for 400 trials: 1.6 % .. 9.2 %)."""
    rng = np.random.default_rng(12345)
    ks = registry.get("ks")
    hits = 0
    for _ in range(400):
        prof = build_numerical("x", rng.normal(size=500), sample_size=500)
        hits += ks.compute(prof, _column(prof, rng.normal(size=300)), 0.05).drifted
    assert 0.016 <= hits / 400 <= 0.092, hits
    # Chi-square with windows 10x the reference.  A goodness-of-fit test that
    # took the reference's shares for the truth would flag most windows here.
    chi = registry.get("chisquare")
    p = [0.5, 0.25, 0.15, 0.1]
    hits = gof_hits = 0
    for _ in range(400):
        cprof = build_categorical("c", list(rng.choice(list("abcd"), 300, p=p)))
        col = _column(cprof, rng.choice(list("abcd"), 3000, p=p))
        hits += chi.compute(cprof, col, 0.05).drifted
        shares = cprof.counts[:4] / cprof.counts.sum()
        gof_hits += stats.chisquare(col.counts[:4], shares * col.counts[:4].sum()).pvalue < 0.05
    assert 0.016 <= hits / 400 <= 0.092, hits
    assert gof_hits / 400 > 0.3, gof_hits


def test_large_reference_distances_do_not_alarm_without_drift() -> None:
    rng = np.random.default_rng(54321)
    prof = build_numerical("x", rng.lognormal(0, 1, 20_000))
    for method in ("wasserstein", "psi", "jensenshannon"):
        assert _rate(method, prof, lambda: rng.lognormal(0, 1, 1000), 100) <= 0.01, method
    p = [0.4, 0.3, 0.2, 0.1]
    cprof = build_categorical("c", list(rng.choice(list("abcd"), 20_000, p=p)))
    for method in ("jensenshannon", "psi"):
        assert _rate(method, cprof, lambda: rng.choice(list("abcd"), 1000, p=p), 100) <= 0.01, method


def test_clear_shifts_are_detected() -> None:
    rng = np.random.default_rng(777)
    small = build_numerical("x", rng.normal(size=500), sample_size=500)
    assert _rate("ks", small, lambda: rng.normal(0.5, 1, 300), 50) >= 0.95  # half a std
    large = build_numerical("x", rng.normal(size=20_000))
    assert _rate("wasserstein", large, lambda: rng.normal(0.3, 1, 1000), 50) == 1.0
    assert _rate("psi", large, lambda: rng.normal(0, 1.6, 1000), 50) == 1.0  # spread change
    p, q = [0.4, 0.3, 0.2, 0.1], [0.2, 0.3, 0.2, 0.3]
    cprof = build_categorical("c", list(rng.choice(list("abcd"), 500, p=p)))
    assert _rate("chisquare", cprof, lambda: rng.choice(list("abcd"), 300, p=q), 50) >= 0.95
    cbig = build_categorical("c", list(rng.choice(list("abcd"), 20_000, p=p)))
    assert _rate("jensenshannon", cbig, lambda: rng.choice(list("abcd"), 1000, p=q), 50) == 1.0


def test_bucket_sort_by_reference_slot_equals_a_plain_sort() -> None:
    """The engine orders window values by their stored reference slot, then
    within each slot; that must be exactly np.sort of the present values."""
    from modelmon.drift.engine import _sorted_present

    rng = np.random.default_rng(10)
    for trial in range(60):
        discrete = trial % 2 == 0
        ref = rng.poisson(3, 500).astype(float) if discrete else rng.normal(size=500)
        prof = build_numerical("x", ref, bins=int(rng.integers(2, 12)))
        n = int(rng.integers(1, 2000))
        x = rng.poisson(4, n).astype(float) if discrete else rng.normal(0.5, 2, n)
        x[rng.random(n) < 0.1] = np.nan
        codes = prof.bin_index(x).astype(np.int16)
        counts = np.bincount(codes[codes >= 0], minlength=prof.slots)
        assert np.array_equal(_sorted_present(x, int(counts.sum()), codes, counts), np.sort(x[~np.isnan(x)]))
