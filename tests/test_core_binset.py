"""BinSet bins many numerical features in one pass: it must equal each profile's own bin_index."""

from __future__ import annotations

import numpy as np

from modelmon.drift.reference import BinSet, build_numerical


def test_bin_matrix_equals_bin_index_per_feature():
    rng = np.random.default_rng(5)
    profiles = [
        build_numerical("normal", rng.normal(0, 1, 2000), bins=10),
        build_numerical("few", rng.integers(0, 3, 500).astype(float), bins=10),  # discrete: few distinct values
        build_numerical("const", np.full(100, 4.0), bins=10),  # constant
        build_numerical("many", rng.exponential(1, 5000), bins=60),  # more than 32 inner edges: binary search
        build_numerical("ties", np.repeat([0.0, 1.0, 1.0, 2.5], 50), bins=4),
    ]
    assert any(len(p.edges) - 2 > 32 for p in profiles)
    binner = BinSet(profiles)
    for _trial in range(20):
        x = rng.normal(0, 3, (len(profiles), 300))
        x[:, :5] = [[p.min, p.max, np.nan, -1e300, 1e300] for p in profiles]  # bounds, missing, extremes
        x[:, 5:10] = np.array([p.edges[len(p.edges) // 2] for p in profiles])[:, None]  # exactly on an edge
        got = binner.bin_matrix(x)
        want = np.stack([p.bin_index(row) for p, row in zip(profiles, x, strict=True)])
        np.testing.assert_array_equal(got, want)
    assert BinSet([]).bin_matrix(np.empty((0, 7))).shape == (0, 7)
