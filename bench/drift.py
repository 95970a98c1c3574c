"""Drift engine benchmark: how long a full window recomputation takes, and
how much memory it needs, as the exporter runs it.

    python bench/drift.py                # the full table (about a minute)
    python bench/drift.py --quick        # fewer repeats
    python bench/drift.py --evidently /tmp/evidently-venv/bin/python
    python bench/drift.py --false-alarms # no-drift flag rates of the defaults (docs/drift.md)

Data: a reference of 100k rows x (20 numerical + 5 categorical) features and
current windows of 10k and 100k rows (mild drift in a few features), plus a
1M-row reference.  Default methods (reference > 1000 rows: normalised
Wasserstein + PSI per numerical feature, Jensen-Shannon + PSI per categorical
one).  The current data goes through a real :class:`ModelMonitor` (window
ring buffers with incremental bin counts); the timed step is
``ModelMonitor.drift(window)`` with the cache disabled: window snapshot
(copying the live rows), sort of every numerical column, all methods, dataset
drift and data quality.  Peak memory is tracemalloc's peak over that call
(numpy reports its buffers to tracemalloc), i.e. the allocation on top of the
window itself, whose fixed size is printed too.

Evidently's DataDriftPreset is timed on the same data when ``evidently`` is
importable here or in the interpreter given with ``--evidently`` (it is not
a modelmon dependency; install it in a separate venv to compare).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exporter"))

from modelmon.config import Config, FeatureConfig, ModelConfig, WindowConfig
from modelmon.drift import engine as engine_mod
from modelmon.drift.reference import build_profile
from modelmon.events import EventBatch
from modelmon.monitor import ModelMonitor

N_NUM, N_CAT = 20, 5
CATS = [[f"c{j}" for j in range(k)] for k in (3, 5, 8, 12, 20)]


def make_data(rng: np.random.Generator, n: int, drift: bool = False) -> dict[str, np.ndarray]:
    """20 numerical columns of assorted shapes and 5 categorical ones; with
    ``drift`` a quarter of the features move."""
    cols: dict[str, np.ndarray] = {}
    for i in range(N_NUM):
        shift = 0.3 if drift and i % 4 == 0 else 0.0
        kind = i % 5
        if kind == 0:
            x = rng.normal(shift, 1.0, n)
        elif kind == 1:
            x = rng.lognormal(shift, 0.8, n)
        elif kind == 2:
            x = rng.exponential(2.0 + shift, n)
        elif kind == 3:
            x = rng.uniform(shift, 10.0 + shift, n)
        else:
            x = rng.poisson(4.0 + 3 * shift, n).astype(np.float64)  # discrete, many ties
        cols[f"num{i:02d}"] = x
    for i, cats in enumerate(CATS):
        p = np.linspace(1.0, 2.0, len(cats))
        if drift and i % 4 == 0:
            p = p[::-1]
        cols[f"cat{i}"] = np.array(cats, dtype=object)[rng.choice(len(cats), n, p=p / p.sum())]
    return cols


def features() -> list[FeatureConfig]:
    return [FeatureConfig(name=f"num{i:02d}") for i in range(N_NUM)] + [
        FeatureConfig(name=f"cat{i}", type="categorical") for i in range(N_CAT)
    ]


def monitor_with(profile, window_rows: int) -> ModelMonitor:
    model = ModelConfig(name="bench", features=features())
    model.drift.recompute_interval_seconds = 0.0
    cfg = Config(models=[model], windows=[WindowConfig(name="w", duration_seconds=3600.0, max_events=window_rows)])
    return ModelMonitor(model, cfg, profile, clock=lambda: 1000.0)


def feed(mon: ModelMonitor, cur: dict[str, np.ndarray], chunk: int = 10_000) -> None:
    n = len(next(iter(cur.values())))
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        k = e - s
        mon.observe(EventBatch(
            model="bench", timestamps=[0.0] * k, versions=["v1"] * k, ids=[None] * k,
            latency_seconds=[0.05] * k, errors=[None] * k,
            features={name: col[s:e].tolist() for name, col in cur.items()},
            predictions=[None] * k, scores=[None] * k, labels=[None] * k, attributes={}, source="client",
        ))


def time_recompute(mon: ModelMonitor, repeats: int) -> dict[str, float]:
    """Median and min wall seconds, median CPU seconds (this process, all
    threads: robust to other processes on a shared machine) and tracemalloc
    peak MiB of ModelMonitor.drift('w')."""
    mon.drift("w")  # warm caches (KS steps, Wasserstein grid) as a running exporter has them
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        mon.drift("w")
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    tracemalloc.start()
    mon.drift("w")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"median": statistics.median(wall), "min": min(wall), "cpu": statistics.median(cpu), "peak_mib": peak / 2**20}


def window_mib(mon: ModelMonitor) -> float:
    w = mon.windows["w"]
    return (w._ts.nbytes + sum(a.nbytes for a in w._cols.values())) / 2**20  # noqa: SLF001


EVIDENTLY_SCRIPT = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd
ref = pd.read_parquet(sys.argv[1]); cur = pd.read_parquet(sys.argv[2]); repeats = int(sys.argv[3])
try:  # Evidently >= 0.7
    from evidently import Report, Dataset, DataDefinition
    from evidently.presets import DataDriftPreset
    num = [c for c in ref.columns if c.startswith("num")]; cat = [c for c in ref.columns if c.startswith("cat")]
    dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
    def run():
        r = Report([DataDriftPreset()])
        return r.run(Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd))
except ImportError:  # legacy API
    from evidently.report import Report
    from evidently.metric_preset import DataDriftPreset
    from evidently import ColumnMapping
    cm = ColumnMapping(numerical_features=[c for c in ref.columns if c.startswith("num")],
                       categorical_features=[c for c in ref.columns if c.startswith("cat")])
    def run():
        r = Report(metrics=[DataDriftPreset()])
        r.run(reference_data=ref, current_data=cur, column_mapping=cm)
        return r.as_dict()
import evidently
times, cpu = [], []
for _ in range(repeats):
    c0, t0 = time.process_time(), time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
times.sort(); cpu.sort()
print(json.dumps({"version": evidently.__version__, "median": times[len(times) // 2], "min": times[0],
                  "cpu": cpu[len(cpu) // 2]}))
"""


def evidently_time(python: str, ref: dict, cur: dict, repeats: int, tmp: Path) -> dict | None:
    try:
        import pandas as pd
        import pyarrow  # noqa: F401
    except ImportError:
        pd = None
    ref_path, cur_path = tmp / "ref.parquet", tmp / "cur.parquet"
    if pd is not None:
        pd.DataFrame(ref).to_parquet(ref_path)
        pd.DataFrame(cur).to_parquet(cur_path)
    else:  # let the evidently interpreter write the files from .npz
        np.savez(tmp / "ref.npz", **{k: v.astype(str) if v.dtype == object else v for k, v in ref.items()})
        np.savez(tmp / "cur.npz", **{k: v.astype(str) if v.dtype == object else v for k, v in cur.items()})
        conv = ("import sys, numpy as np, pandas as pd\n"
                "for a, b in ((sys.argv[1], sys.argv[2]), (sys.argv[3], sys.argv[4])):\n"
                "    d = np.load(a); pd.DataFrame({k: d[k] for k in d.files}).to_parquet(b)\n")
        subprocess.run([python, "-c", conv, str(tmp / "ref.npz"), str(ref_path), str(tmp / "cur.npz"), str(cur_path)], check=True)
    out = subprocess.run([python, "-c", EVIDENTLY_SCRIPT, str(ref_path), str(cur_path), str(repeats)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"  (evidently failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode})")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def false_alarms(trials: int) -> None:
    """Share of no-drift windows each default method flags, by window size.

    Each trial draws a fresh reference and a window from one population
    (lognormal numbers, 4 categories), so a test's rate is its level."""
    from modelmon.drift import registry
    from modelmon.drift.base import CurrentColumn
    from modelmon.drift.reference import build_categorical, build_numerical

    rng = np.random.default_rng(7)
    cats, p = np.array(list("abcd")), [0.4, 0.3, 0.2, 0.1]
    sizes = (100, 300, 1000, 10_000)
    print(f"No-drift windows flagged ({trials} trials per cell; reference and window drawn from one population)")
    print("| method (threshold) | reference rows | " + " | ".join(f"window {n:,}" for n in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for method, ref_rows, kind in (("ks", 500, "num"), ("chisquare", 500, "cat"), ("wasserstein", 20_000, "num"),
                                   ("jensenshannon", 20_000, "num"), ("jensenshannon", 20_000, "cat"),
                                   ("psi", 20_000, "num"), ("psi", 20_000, "cat"), ("meanstd", 20_000, "num")):
        m = registry.get(method)
        cells = []
        for n in sizes:
            hits = 0
            for _ in range(trials):
                if kind == "num":
                    prof = build_numerical("x", rng.lognormal(0, 1, ref_rows), sample_size=10_000)
                    cur = rng.lognormal(0, 1, n)
                    col = CurrentColumn(values=cur, counts=np.bincount(prof.bin_index(cur), minlength=prof.slots))
                else:
                    prof = build_categorical("c", list(cats[rng.choice(4, ref_rows, p=p)]))
                    codes = prof.codes(list(cats[rng.choice(4, n, p=p)]))
                    col = CurrentColumn(values=codes, counts=np.bincount(codes, minlength=prof.slots))
                hits += m.compute(prof, col, m.default_threshold).drifted
            cells.append(f"{100 * hits / trials:.1f} %")
        label = (f"{method} ({'p < ' if m.has_p_value else '>= ' if method != 'meanstd' else '> '}{m.default_threshold:g}), "
                 f"{'numerical' if kind == 'num' else 'categorical'}")
        print(f"| {label} | {ref_rows:,} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--evidently", metavar="PYTHON", help="interpreter with evidently installed (default: this one if it has it)")
    ap.add_argument("--no-evidently", action="store_true")
    ap.add_argument("--skip-1m", action="store_true", help="skip the 1M-row reference")
    ap.add_argument("--false-alarms", action="store_true", help="print the no-drift flag rates of the defaults instead")
    args = ap.parse_args()
    if args.false_alarms:
        false_alarms(100 if args.quick else 400)
        return
    repeats = 5 if args.quick else 15
    evid_python = None
    if not args.no_evidently:
        if args.evidently:
            evid_python = args.evidently
        else:
            try:
                import evidently  # noqa: F401

                evid_python = sys.executable
            except ImportError:
                pass

    rng = np.random.default_rng(42)
    print(f"machine: {os.cpu_count()} CPUs, numpy {np.__version__}, python {sys.version.split()[0]}; "
          f"default engine workers {engine_mod.DEFAULT_WORKERS}; load average {os.getloadavg()[0]:.2f}")
    rows = []
    cases = [(100_000, 10_000), (100_000, 100_000)] + ([] if args.skip_1m else [(1_000_000, 100_000)])
    refs: dict[int, tuple] = {}
    for ref_rows, win_rows in cases:
        if ref_rows not in refs:
            ref = make_data(rng, ref_rows)
            t0 = time.perf_counter()
            prof = build_profile(ref, features())
            refs[ref_rows] = (ref, prof, time.perf_counter() - t0)
        ref, prof, build_s = refs[ref_rows]
        cur = make_data(rng, win_rows, drift=True)
        mon = monitor_with(prof, win_rows)
        feed(mon, cur)
        assert len(mon.windows["w"]) == win_rows
        res = {}
        for workers in (1, 2):
            mon.drift_engine.workers = workers
            res[workers] = time_recompute(mon, repeats)
        rep = mon.drift("w")
        drifted = sorted(n for n, f in rep.features.items() if f.drifted)
        evid = None
        if evid_python and ref_rows <= 100_000:
            with tempfile.TemporaryDirectory() as tmp:
                evid = evidently_time(evid_python, ref, cur, 3 if win_rows <= 10_000 else 1, Path(tmp))
        rows.append((ref_rows, win_rows, build_s, res, window_mib(mon), evid, len(drifted)))
        print(f"  done: reference {ref_rows:,} x 25, window {win_rows:,}: drifted features {len(drifted)}/25 "
              f"({', '.join(drifted)})", flush=True)

    print()
    print("Full window recomputation (ModelMonitor.drift: snapshot + sort + all default methods), 20 numerical + 5 categorical")
    print(f"wall: median (min) of the repeats; CPU: median process CPU time.  Load average now {os.getloadavg()[0]:.2f}.")
    hdr = ("reference", "window", "profile build", "1 thread: wall (min)", "1 thread: CPU", "2 threads: wall (min)",
           "peak alloc", "window buffer", "Evidently preset: wall / CPU", "speed-up wall / CPU")
    table = [hdr]
    for ref_rows, win_rows, build_s, res, wmib, evid, _ in rows:
        d = res[engine_mod.DEFAULT_WORKERS]
        table.append((
            f"{ref_rows:,}", f"{win_rows:,}", f"{build_s:.2f} s",
            f"{res[1]['median'] * 1e3:.1f} ({res[1]['min'] * 1e3:.1f}) ms", f"{res[1]['cpu'] * 1e3:.1f} ms",
            f"{res[2]['median'] * 1e3:.1f} ({res[2]['min'] * 1e3:.1f}) ms",
            f"{d['peak_mib']:.1f} MiB", f"{wmib:.1f} MiB",
            "-" if evid is None else f"{evid['median']:.2f} s / {evid.get('cpu', float('nan')):.2f} s (v{evid['version']})",
            "-" if evid is None else f"{evid['median'] / d['median']:.0f}x / {evid.get('cpu', float('nan')) / d['cpu']:.0f}x",
        ))
    widths = [max(len(r[i]) for r in table) for i in range(len(hdr))]
    for r in table:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if r is hdr:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print()
    print(f"Speed-up: Evidently over modelmon with the default {engine_mod.DEFAULT_WORKERS} thread(s), medians. "
          "Peak alloc: tracemalloc peak of one recomputation, on top of the window buffer.")
    print("Targets: < 100 ms for a 100k-row window x 20 numerical features; >= 100x faster than Evidently.")


if __name__ == "__main__":
    main()
