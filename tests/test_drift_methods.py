"""Each drift method against an independent reference: scipy where the
definitions coincide (to 1e-9), small hand-computed cases otherwise.

The reference profile is built with a sample as large as the reference, so
the methods see the whole reference, as scipy does."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from modelmon.drift import registry
from modelmon.drift.base import CurrentColumn
from modelmon.drift.reference import build_categorical, build_numerical

TOL = 1e-9


def num_case(ref, cur, bins: int = 10):
    prof = build_numerical("x", np.asarray(ref, dtype=float), bins=bins, sample_size=max(len(ref), 1))
    cur = np.asarray(cur, dtype=float)
    idx = prof.bin_index(cur)
    col = CurrentColumn(values=cur.copy(), counts=np.bincount(idx, minlength=prof.slots))
    return prof, col


def cat_case(ref, cur, categories=None, top_k: int = 20):
    prof = build_categorical("c", list(ref), categories=categories, top_k=top_k)
    codes = prof.codes(list(cur))
    return prof, CurrentColumn(values=codes, counts=np.bincount(codes, minlength=prof.slots))


def run(method: str, prof, col):
    m = registry.get(method)
    return m.compute(prof, col, m.default_threshold)


def samples(rng: np.random.Generator):
    """(name, reference, current) pairs covering the awkward cases."""
    yield "normal", rng.normal(0, 1, 400), rng.normal(0.1, 1.2, 250)
    yield "shifted", rng.normal(0, 1, 300), rng.normal(1.0, 1, 300)  # n1 == n2: scipy's other exact formula
    yield "ties", rng.integers(0, 5, 500).astype(float), rng.integers(0, 6, 333).astype(float)
    yield "binary", rng.integers(0, 2, 200).astype(float), rng.integers(0, 2, 150).astype(float)
    yield "tiny", np.array([0.3]), np.array([0.1, 0.7])
    yield "tiny2", np.array([1.0, 2.0, 3.0]), np.array([2.5])
    yield "cauchy", rng.standard_cauchy(600), rng.standard_cauchy(400) * 2 + 1
    yield "lognormal", rng.lognormal(0, 2, 1000), rng.lognormal(0.2, 2, 700)
    yield "identical", np.arange(50.0), np.arange(50.0)
    yield "disjoint", rng.uniform(0, 1, 80), rng.uniform(2, 3, 90)
    yield "large", rng.normal(0, 1, 12_000), rng.normal(0.02, 1, 9_000)  # asymptotic p-value (n > 10000)


CASES = list(samples(np.random.default_rng(20240601)))


@pytest.mark.parametrize("name,ref,cur", CASES, ids=[c[0] for c in CASES])
def test_ks_matches_scipy_ks_2samp(name, ref, cur) -> None:
    res = run("ks", *num_case(ref, cur))
    expected = stats.ks_2samp(cur, ref)  # method="auto": exact for n <= 10000, asymptotic above
    assert res.statistic == pytest.approx(expected.statistic, abs=TOL)
    assert res.p_value == pytest.approx(expected.pvalue, abs=TOL)
    assert res.drifted == (expected.pvalue < 0.05)


def test_ks_p_value_branches_match_scipy_exact_and_asymptotic() -> None:
    from modelmon.drift.methods.ks import ks_p_value

    rng = np.random.default_rng(3)
    cases = [(10, 7, 0.05), (100, 100, 0.05), (1000, 9999, 0.05), (10_000, 10_000, 0.05), (10_001, 500, 0.05),
             # large samples far in the tail (a naive path count under- or overflows here)
             (5000, 5000, 0.3), (2000, 9000, 0.15), (10_000, 10_000, 0.06)]
    for n1, n2, shift in cases:
        a, b = rng.normal(0, 1, n1), rng.normal(shift, 1, n2)
        r = stats.ks_2samp(a, b)
        assert ks_p_value(float(r.statistic), n1, n2) == pytest.approx(r.pvalue, abs=TOL), (n1, n2, shift)


@pytest.mark.parametrize("name,ref,cur", CASES, ids=[c[0] for c in CASES])
def test_wasserstein_matches_scipy_times_reference_scale(name, ref, cur) -> None:
    prof, col = num_case(ref, cur)
    res = run("wasserstein", prof, col)
    w = stats.wasserstein_distance(cur, ref)
    norm = fenced_std(np.asarray(ref, dtype=float))
    if norm == 0:  # constant reference: the share of values that moved (documented rule)
        assert res.statistic == pytest.approx(np.mean(np.asarray(cur) != ref[0]))
        return
    assert norm == pytest.approx(prof.scale, rel=1e-12)
    assert res.statistic * norm == pytest.approx(w, rel=TOL, abs=1e-12)
    assert res.drifted == (w / norm >= 0.1)


def fenced_std(x: np.ndarray) -> float:
    """The documented scale, computed independently: std after clipping to
    20 IQRs beyond the quartiles (plain std when the IQR is 0)."""
    q1, q3 = np.quantile(x, [0.25, 0.75])
    iqr = q3 - q1
    return float(np.std(np.clip(x, q1 - 20 * iqr, q3 + 20 * iqr))) if iqr > 0 else float(np.std(x))


def independent_slots(ref: np.ndarray, cur: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slot counts computed by explicit comparisons: below min, [e_i, e_i+1)
    (the last bin closed), above max."""

    def count(x):
        out = [int(np.sum(x < edges[0]))]
        for i in range(len(edges) - 1):
            lo, hi = edges[i], edges[i + 1]
            last = i == len(edges) - 2
            out.append(int(np.sum((x >= lo) & ((x <= hi) if last else (x < hi)))))
        out.append(int(np.sum(x > edges[-1])))
        return np.array(out)

    return count(ref), count(cur)


@pytest.mark.parametrize("name,ref,cur", CASES[:-1], ids=[c[0] for c in CASES[:-1]])
def test_jensenshannon_numerical_matches_scipy_base2(name, ref, cur) -> None:
    prof, col = num_case(ref, cur)
    p, q = independent_slots(ref, cur, prof.edges)
    assert np.array_equal(p, prof.counts) and np.array_equal(q, col.counts)
    res = run("jensenshannon", prof, col)
    assert res.statistic == pytest.approx(jensenshannon(p, q, base=2), abs=TOL)
    assert 0.0 <= res.statistic <= 1.0


def test_jensenshannon_categorical_matches_scipy_and_bounds() -> None:
    rng = np.random.default_rng(7)
    ref = rng.choice(["a", "b", "c", "d"], 1000, p=[0.4, 0.3, 0.2, 0.1])
    cur = list(rng.choice(["a", "b", "c", "e"], 600, p=[0.1, 0.2, 0.3, 0.4]))  # "e" unseen
    prof, col = cat_case(ref, cur)
    rc, cc = Counter(ref), Counter(cur)
    cats = ["a", "b", "c", "d", "e"]
    expected = jensenshannon([rc[c] for c in cats], [cc[c] for c in cats], base=2)
    assert run("jensenshannon", prof, col).statistic == pytest.approx(expected, abs=TOL)
    # identical distributions: 0; disjoint supports: exactly 1 (base 2)
    assert run("jensenshannon", *cat_case(["a", "b"] * 10, ["b", "a"] * 7)).statistic == pytest.approx(0.0, abs=1e-12)
    assert run("jensenshannon", *cat_case(["a"] * 10, ["z"] * 7)).statistic == pytest.approx(1.0, abs=1e-12)


def test_psi_hand_computed_numerical_with_out_of_range_slot() -> None:
    # Reference 0..99 in 4 quantile bins -> edges [0, 24.75, 49.5, 74.25, 99]:
    # slots [below, b1, b2, b3, b4, above] hold [0, 25, 25, 25, 25, 0] of 100.
    ref = np.arange(100.0)
    cur = np.array([10.0] * 10 + [30.0] * 10 + [60.0] * 10 + [80.0] * 5 + [150.0] * 5)  # 40 values
    prof, col = num_case(ref, cur, bins=4)
    assert list(prof.counts) == [0, 25, 25, 25, 25, 0]
    assert list(col.counts) == [0, 10, 10, 10, 5, 5]
    eps = 1e-4
    p = [eps, 0.25, 0.25, 0.25, 0.25, eps]
    q = [eps, 0.25, 0.25, 0.25, 0.125, 0.125]
    # Only the last two slots differ:
    expected = (0.125 - 0.25) * math.log(0.125 / 0.25) + (0.125 - eps) * math.log(0.125 / eps)
    assert sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q)) == pytest.approx(expected)
    res = run("psi", prof, col)
    assert res.statistic == pytest.approx(expected, rel=1e-12)  # 0.0866 + 0.8904 = 0.977
    assert res.drifted and res.threshold == 0.1


def test_psi_hand_computed_categorical() -> None:
    ref = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    cur = ["a"] * 30 + ["b"] * 30 + ["c"] * 40
    expected = (0.3 - 0.5) * math.log(0.3 / 0.5) + 0 + (0.4 - 0.2) * math.log(0.4 / 0.2)  # other slot: 0 vs 0
    res = run("psi", *cat_case(ref, cur))
    assert res.statistic == pytest.approx(expected, rel=1e-12)  # 0.2408
    assert res.drifted
    # Under the 0.1 threshold: a small move
    small = run("psi", *cat_case(ref, ["a"] * 48 + ["b"] * 31 + ["c"] * 21))
    assert small.statistic == pytest.approx(
        (0.48 - 0.5) * math.log(0.48 / 0.5) + (0.31 - 0.3) * math.log(0.31 / 0.3) + (0.21 - 0.2) * math.log(0.21 / 0.2), rel=1e-12)
    assert not small.drifted


def test_chisquare_matches_chi2_contingency_including_unseen_categories() -> None:
    rng = np.random.default_rng(11)
    ref = list(rng.choice(["a", "b", "c", "d"], 800, p=[0.4, 0.3, 0.2, 0.1]))
    cur = list(rng.choice(["a", "b", "c", "d", "new1", "new2"], 500, p=[0.35, 0.3, 0.2, 0.1, 0.03, 0.02]))
    prof, col = cat_case(ref, cur)
    assert prof.counts[-1] == 0 and col.counts[-1] == sum(v.startswith("new") for v in cur)
    res = run("chisquare", prof, col)
    rc, cc = Counter(ref), Counter(cur)
    table = [[rc[c] for c in "abcd"] + [0], [cc[c] for c in "abcd"] + [cc["new1"] + cc["new2"]]]
    chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
    assert dof == 4
    assert res.statistic == pytest.approx(chi2, rel=TOL)
    assert res.p_value == pytest.approx(p, abs=TOL)
    assert math.isfinite(res.statistic) and res.drifted == (p < 0.05)


def test_chisquare_edge_cases() -> None:
    # A category absent from the window: its column still counts (reference side).
    ref = ["a"] * 30 + ["b"] * 30 + ["c"] * 40
    cur = ["a"] * 20 + ["b"] * 25
    res = run("chisquare", *cat_case(ref, cur))
    chi2, p, _, _ = stats.chi2_contingency([[30, 30, 40], [20, 25, 0]], correction=False)
    assert res.statistic == pytest.approx(chi2, rel=TOL) and res.p_value == pytest.approx(p, abs=TOL)
    # Binary feature (one degree of freedom): plain Pearson, no Yates correction.
    res = run("chisquare", *cat_case(["y"] * 60 + ["n"] * 40, ["y"] * 45 + ["n"] * 55))
    chi2, p, dof, _ = stats.chi2_contingency([[60, 40], [45, 55]], correction=False)
    assert dof == 1 and res.statistic == pytest.approx(chi2, rel=TOL) and res.p_value == pytest.approx(p, abs=TOL)
    # One category on both sides: nothing to test.
    res = run("chisquare", *cat_case(["a"] * 10, ["a"] * 5))
    assert (res.statistic, res.p_value, res.drifted) == (0.0, 1.0, False)
    # Only unseen values in the window: finite, decisive.
    res = run("chisquare", *cat_case(["a"] * 10, ["q"] * 5))
    chi2, p, _, _ = stats.chi2_contingency([[10, 0], [0, 5]], correction=False)
    assert res.statistic == pytest.approx(chi2, rel=TOL) and res.drifted


def test_chisquare_large_reference_approaches_goodness_of_fit() -> None:
    """With a reference much larger than the window, the homogeneity test is
    the familiar test against the reference proportions."""
    rng = np.random.default_rng(5)
    probs = [0.5, 0.3, 0.2]
    ref = list(rng.choice(["a", "b", "c"], 400_000, p=probs))
    cur = list(rng.choice(["a", "b", "c"], 300, p=[0.45, 0.3, 0.25]))
    prof, col = cat_case(ref, cur)
    res = run("chisquare", prof, col)
    frac = prof.counts[:3] / prof.counts.sum()
    gof = stats.chisquare(col.counts[:3], frac * col.counts.sum())
    assert res.statistic == pytest.approx(gof.statistic, rel=2e-3)
    assert res.p_value == pytest.approx(gof.pvalue, rel=2e-2)


def test_meanstd_hand_computed() -> None:
    # Reference [-1, 1]: mean 0, population std 1.  Window [1, 3]: mean 2, std 1.
    prof, col = num_case([-1.0, 1.0], [1.0, 3.0])
    res = run("meanstd", prof, col)
    assert res.statistic == pytest.approx(1.0, rel=1e-12)  # (|2 - 0| + |1 - 1|) / (2 * 1)
    assert res.drifted
    # Window [-0.1, 0.1]: mean 0, std 0.1 -> (0 + 0.9) / 2 = 0.45
    res = run("meanstd", *num_case([-1.0, 1.0], [-0.1, 0.1]))
    assert res.statistic == pytest.approx(0.45, rel=1e-12)


def test_constant_columns() -> None:
    ref = np.full(200, 5.0)
    same, moved = np.full(150, 5.0), np.full(150, 5.5)
    prof, col = num_case(ref, same)
    assert prof.slots == 3 and list(prof.counts) == [0, 200, 0]
    ks = run("ks", prof, col)
    assert (ks.statistic, ks.p_value) == (0.0, 1.0)
    assert run("wasserstein", prof, col).statistic == 0.0
    assert run("psi", prof, col).statistic == pytest.approx(0.0, abs=1e-15)
    prof, col = num_case(ref, moved)
    assert list(col.counts) == [0, 0, 150]
    ks = run("ks", prof, col)
    expected = stats.ks_2samp(moved, ref)
    assert ks.statistic == 1.0 and ks.p_value == pytest.approx(expected.pvalue, abs=TOL)
    # constant reference: the share of values that left the constant (all of them)
    assert run("wasserstein", prof, col).statistic == 1.0
    assert run("meanstd", prof, col).statistic == 1.0
    # PSI: all mass moved from the middle slot to the above-max slot (eps 1e-4 floors)
    eps = 1e-4
    assert run("psi", prof, col).statistic == pytest.approx(2 * (1 - eps) * math.log(1 / eps), rel=1e-12)


def test_heavy_tails_do_not_break_scores() -> None:
    rng = np.random.default_rng(9)
    ref, cur = rng.standard_cauchy(2000), rng.standard_cauchy(1500)
    cur[:3] = [1e12, -1e12, 3e15]  # extreme but finite
    prof, col = num_case(ref, cur)
    for m in ("ks", "wasserstein", "psi", "jensenshannon", "meanstd"):
        r = run(m, prof, col)
        assert math.isfinite(r.statistic), m
    assert run("wasserstein", prof, col).statistic * fenced_std(ref) == pytest.approx(
        stats.wasserstein_distance(cur, ref), rel=TOL)


def test_method_declarations() -> None:
    decl = {n: (sorted(registry.get(n).feature_types), registry.get(n).default_threshold, registry.get(n).has_p_value)
            for n in registry.names()}
    assert decl == {
        "chisquare": (["categorical"], 0.05, True),
        "jensenshannon": (["categorical", "numerical"], 0.1, False),
        "ks": (["numerical"], 0.05, True),
        "meanstd": (["numerical"], 0.1, False),
        "psi": (["categorical", "numerical"], 0.1, False),
        "wasserstein": (["numerical"], 0.1, False),
    }
    assert {n for n in registry.names() if registry.get(n).needs_values} == {"ks", "wasserstein", "meanstd"}
