"""Window sampling against a brute-force recount of the arrivals: exact
while the window has room, unbiased once it must sample, at low, bursty
and high rates."""

from __future__ import annotations

import numpy as np
import pytest
from modelmon.windows import ColumnSpec, TimeWindow

SPECS = {"code": ColumnSpec(np.int16, 1, codes=3, fill=-1)}


def feed(w: TimeWindow, times: np.ndarray, batch: int = 1, checks: int = 50):
    """Append arrivals at ``times`` (sorted) in batches of ``batch``; at
    ``checks`` evenly spaced batches, yield (now, true arrivals in the
    window, estimated count, rows held)."""
    every = max(1, len(times) // batch // checks)
    for k, start in enumerate(range(0, len(times), batch)):
        t = times[start : start + batch]
        now = float(t[-1])
        w.append(t, {"code": (np.arange(len(t)) % 3).astype(np.int16)}, now=now)
        if k % every == 0:
            true = int(np.count_nonzero((times >= now - w.duration) & (times <= now)))
            yield now, true, w.estimated_count(now), len(w)


def test_replayed_events_all_stay_in_a_long_window() -> None:
    """171 events replayed in a burst (the client's replay) and 300 events
    over 3 s: an hour-long window with room for them keeps every one."""
    for n, span in ((171, 0.2), (300, 3.0)):
        w = TimeWindow("1h", 3600, 10_000, SPECS, seed=1)
        times = np.linspace(0.0, span, n)
        for start in range(0, n, 7):
            t = times[start : start + 7]
            w.append(t, {"code": np.zeros(len(t), dtype=np.int16)}, now=float(t[-1]))
        assert len(w) == n and w.estimated_count() == n


def test_low_rate_counts_are_exact() -> None:
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.exponential(1 / 20, 4000))  # 20/s into 60 s: ~1200 < 2000
    w = TimeWindow("1m", 60, 2000, SPECS, seed=2)
    for _, true, est, held in feed(w, times, batch=5):
        assert est == true == held


def test_bursts_never_drop_rows_the_window_has_room_for() -> None:
    """Bursts of 400 rows in 0.1 s every 20 s: 1200 rows per minute at most,
    under the 1500 capacity, so nothing may be sampled away."""
    times = np.concatenate([k * 20.0 + np.linspace(0, 0.1, 400) for k in range(12)])
    w = TimeWindow("1m", 60, 1500, SPECS, seed=4)
    for _, true, est, held in feed(w, times, batch=50, checks=200):
        assert est == true == held


@pytest.mark.parametrize("scenario", ["bursty", "high"])
def test_estimates_are_unbiased_once_sampling(scenario: str) -> None:
    """More arrivals than capacity: the rows held stay under the cap, the
    estimate tracks the brute-force count, and averaged over seeds it has no
    bias (mean relative error within 1 %)."""
    errors = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        if scenario == "high":
            times = np.sort(rng.uniform(0, 180, 120_000))  # ~667/s into 60 s: 40k >> 3000
        else:  # quiet 5/s with bursts of 6000 rows in one second every 40 s
            quiet = rng.uniform(0, 180, 900)
            bursts = np.concatenate([b + rng.uniform(0, 1, 6000) for b in (10.0, 50.0, 90.0, 130.0, 170.0)])
            times = np.sort(np.concatenate([quiet, bursts]))
        w = TimeWindow("1m", 60, 3000, SPECS, seed=100 + seed)
        for now, true, est, held in feed(w, times, batch=200, checks=60):
            assert held <= 3000
            if now > 65:
                assert est == pytest.approx(true, rel=0.12), (seed, now)
                errors.append(est / true - 1)
        snap = w.snapshot()
        assert snap.counts["code"][0].tolist() == np.bincount(snap.columns["code"][0], minlength=3).tolist()
    assert abs(float(np.mean(errors))) < 0.01


def test_label_coverage_estimate_is_unbiased_under_sampling() -> None:
    """Coverage = labelled / all arrivals from two sampled windows: 79.5 %
    of events labelled must read 0.795, not a burst artefact."""
    rng = np.random.default_rng(11)
    ratios = []
    for seed in range(5):
        events = TimeWindow("1h", 3600, 2000, SPECS, seed=seed)
        labelled = TimeWindow("1h", 3600, 2000, SPECS, seed=50 + seed)
        t = 0.0
        for _ in range(300):
            n = int(rng.integers(1, 80))
            ts = t + np.sort(rng.uniform(0, 1, n))
            events.append(ts, {"code": np.zeros(n, dtype=np.int16)}, now=float(ts[-1]))
            lab = rng.random(n) < 0.795
            if lab.any():
                labelled.append(ts[lab], {"code": np.zeros(int(lab.sum()), dtype=np.int16)}, now=float(ts[-1]))
            t += float(rng.exponential(2.0))
        ratios.append(labelled.estimated_count(t) / events.estimated_count(t))
    assert float(np.mean(ratios)) == pytest.approx(0.795, abs=0.01)
