"""Label-free monitoring benchmark: the cost of one window recomputation of
CBPE (estimated performance) and of the PCA multivariate drift statistic,
next to the univariate drift recomputation measured in the same run.

    python bench/estimation.py            # 100k-row window x 20 features
    python bench/estimation.py --quick    # fewer repeats

Data: bench/drift.py's 20 numerical features (normal, lognormal,
exponential, uniform, Poisson), a 100k-row reference and a 100k-row window
with mild drift, plus a calibrated binary score per row.  Everything goes
through a real :class:`ModelMonitor`; each timed call recomputes with the
cache disabled: ``drift('w')`` (snapshot, default methods on every feature),
``multivariate('w')`` (snapshot, encode, project, residuals, shares) and
``estimated_performance('w')`` (snapshot, calibration, expected confusion
matrix, expected ROC curve).  The fit on the reference (done once at start)
is timed too.  CPU seconds are this process's, robust to other load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exporter"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from drift import make_data
from modelmon.config import Config, FeatureConfig, ModelConfig, WindowConfig
from modelmon.drift.reference import build_profile
from modelmon.estimation.sections import fit_sections
from modelmon.events import EventBatch
from modelmon.monitor import ModelMonitor

N_FEATURES = 20


def table(rng: np.random.Generator, n: int, drift: bool) -> dict[str, np.ndarray]:
    cols = {k: v for k, v in make_data(rng, n, drift=drift).items() if k.startswith("num")}
    z = (cols["num00"] - 0.0) + 0.3 * (cols["num03"] - 5.0)
    p = 1.0 / (1.0 + np.exp(-z))
    cols["score"] = p
    cols["prediction"] = np.where(p >= 0.5, "1", "0").astype(object)
    cols["label"] = np.where(rng.random(n) < p, "1", "0").astype(object)
    return cols


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    repeats = 3 if args.quick else 7
    rng = np.random.default_rng(0)
    feats = [FeatureConfig(name=f"num{i:02d}") for i in range(N_FEATURES)]
    model = ModelConfig(name="bench", features=feats)
    model.drift.recompute_interval_seconds = 0.0
    model.performance_estimation.enabled = True
    model.multivariate_drift.enabled = True
    ref = table(rng, args.rows, drift=False)
    t0 = time.perf_counter()
    profile = build_profile(ref, feats)
    t_profile = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit_sections(profile, ref, model)
    t_fit = time.perf_counter() - t0
    cfg = Config(models=[model], windows=[WindowConfig(name="w", duration_seconds=3600.0, max_events=args.rows)])
    mon = ModelMonitor(model, cfg, profile, clock=lambda: 1000.0)
    cur = table(rng, args.rows, drift=True)
    for s in range(0, args.rows, 10_000):
        e = min(args.rows, s + 10_000)
        k = e - s
        mon.observe(EventBatch(
            model="bench", timestamps=[0.0] * k, versions=["v1"] * k, ids=[None] * k, latency_seconds=[0.05] * k,
            errors=[None] * k, features={f.name: cur[f.name][s:e].tolist() for f in feats},
            predictions=cur["prediction"][s:e].tolist(), scores=cur["score"][s:e].tolist(), labels=[None] * k,
            attributes={}, source="client"))
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on {os.cpu_count()} CPUs")
    print(f"window {len(mon.windows['w'])} rows x {N_FEATURES} numerical features; reference {args.rows} rows")
    sizes = ", ".join(f"{k} {len(json.dumps(v)) / 1024:.1f} KiB" for k, v in profile.sections.items())
    print(f"fit at start: profile {t_profile:.3f} s, CBPE + PCA sections {t_fit:.3f} s ({sizes})")
    print(f"{'recomputation of one window':<40} {'wall median s':>14} {'cpu median s':>13}")
    for label, fn in (("univariate drift (default methods)", lambda: mon.drift("w")),
                      ("multivariate drift (PCA reconstruction)", lambda: mon.multivariate("w")),
                      ("estimated performance (CBPE)", lambda: mon.estimated_performance("w"))):
        w, c = timed(fn, repeats)
        print(f"{label:<40} {w:>14.4f} {c:>13.4f}")
    mv, est = mon.multivariate("w"), mon.estimated_performance("w")
    assert mv is not None and est is not None
    print(f"(multivariate: error {mv.reconstruction_error:.4f}, band {mv.lower:.4f}..{mv.upper:.4f}, drifted {mv.drifted}; "
          f"estimated accuracy {est.estimates['accuracy'].value:.4f})")


if __name__ == "__main__":
    main()
