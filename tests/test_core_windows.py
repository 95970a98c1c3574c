"""Sliding windows: time eviction, the capacity cap, and running counts that
always equal a brute-force recount of the live rows."""

from __future__ import annotations

import numpy as np
import pytest

from modelmon.windows import ColumnSpec, TimeWindow

SPECS = {"x": ColumnSpec(np.float64, 2, fill=np.nan), "code": ColumnSpec(np.int16, 2, codes=5, fill=-1)}


def test_evicts_by_time() -> None:
    w = TimeWindow("10s", 10, 1000, SPECS)
    w.append(0.0, {"x": np.ones((2, 3)), "code": np.zeros((2, 3), dtype=np.int16)})
    w.append(5.0, {"x": np.ones((2, 2)), "code": np.ones((2, 2), dtype=np.int16)})
    assert len(w) == 5
    w.evict(now=10.5)  # rows at t=0 are older than 10 s
    assert len(w) == 2
    assert w.counts("code").tolist() == [[0, 2, 0, 0, 0], [0, 2, 0, 0, 0]]
    w.evict(now=100)
    assert len(w) == 0 and w.counts("code").sum() == 0


def test_capacity_keeps_most_recent_rows_without_sampling() -> None:
    w = TimeWindow("1h", 3600, 4, SPECS, sampling=False)
    for t in range(10):
        w.append(float(t), {"x": np.full((2, 1), float(t)), "code": np.full((2, 1), t % 5, dtype=np.int16)})
    snap = w.snapshot()
    assert snap.size == 4
    assert snap.columns["x"][0].tolist() == [6.0, 7.0, 8.0, 9.0]
    assert snap.counts["code"][0].tolist() == [0, 1, 1, 1, 1]  # codes 6..9 mod 5 = 1, 2, 3, 4
    # A single batch larger than the capacity keeps its newest rows.
    w.append(20.0, {"x": np.arange(12.0).reshape(2, 6), "code": np.zeros((2, 6), dtype=np.int16)})
    assert w.snapshot().columns["x"][0].tolist() == [2.0, 3.0, 4.0, 5.0]


def test_running_counts_match_recount_under_random_traffic() -> None:
    rng = np.random.default_rng(7)
    w = TimeWindow("30s", 30, 500, SPECS)
    now = 0.0
    for _ in range(400):
        n = int(rng.integers(0, 40))
        codes = rng.integers(-1, 5, size=(2, n)).astype(np.int16)  # -1 = missing, not counted
        w.append(now, {"x": rng.normal(size=(2, n)), "code": codes}, now=now)
        now += float(rng.exponential(0.5))
        snap = w.snapshot(now=now)
        live = snap.columns["code"]
        assert snap.size == live.shape[1] <= 500
        assert (snap.ts >= now - 30).all()
        for row in range(2):
            c = live[row][live[row] >= 0]
            assert snap.counts["code"][row].tolist() == np.bincount(c, minlength=5).tolist()


def test_missing_columns_are_filled() -> None:
    w = TimeWindow("1m", 60, 10, SPECS)
    w.append(1.0, {"code": np.zeros((2, 3), dtype=np.int16)})
    assert np.isnan(w.snapshot().columns["x"]).all()


def test_sampling_spreads_the_sample_over_the_whole_duration() -> None:
    """1000 rows/s into a 10-minute window capped at 20k rows: the rows held
    must span the whole 10 minutes (not the last 20 s), stay under the cap,
    and estimate the 600k arrivals."""
    w = TimeWindow("10m", 600, 20_000, SPECS, seed=1)
    rng = np.random.default_rng(0)
    now = 0.0
    for _ in range(1200):  # 20 minutes of 0.5 s ticks with 500 rows each
        codes = rng.integers(0, 5, size=(2, 500)).astype(np.int16)
        w.append(now, {"x": rng.normal(size=(2, 500)), "code": codes}, now=now)
        now += 0.5
    snap = w.snapshot(now=now)
    assert 15_000 < snap.size <= 20_000
    assert snap.ts.min() < now - 570  # covers the window's start...
    assert snap.ts.max() >= now - 1  # ...and its end
    # Uniform over time: about half the rows in each half of the window.
    assert abs(np.mean(snap.ts < now - 300) - 0.5) < 0.05
    assert w.estimated_count() == pytest.approx(600 * 1000, rel=0.05)
    # Running counts still match a recount of the rows held.
    for row in range(2):
        assert snap.counts["code"][row].tolist() == np.bincount(snap.columns["code"][row], minlength=5).tolist()


def test_no_sampling_below_capacity() -> None:
    w = TimeWindow("1m", 60, 10_000, SPECS, seed=1)
    for t in range(120):
        w.append(float(t), {"code": np.zeros((2, 50), dtype=np.int16)}, now=float(t))
    assert len(w) == 50 * 61  # every row at most 60 s old (t = 59..119) kept
    assert w.estimated_count() == 3050
