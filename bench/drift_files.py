"""The drift path a user meets first: files in, verdicts out.

    python bench/drift_files.py            # everything (a few minutes on 2 cores)
    python bench/drift_files.py --quick    # skip the 1M-row cases

Each figure is printed next to a floor measured in the same run on the same
data, so a loaded machine slows both:

- ``modelmon drift`` CLI end to end (a fresh process, as in CI) on two CSV
  files of 100k rows x (20 numerical + 5 categorical) columns, next to
  pyarrow alone reading both files into numpy (categoricals
  dictionary-encoded) and to ``python -c pass`` (interpreter start);
- in memory, profile + score (``build_profile`` + ``DriftEngine`` with the
  default methods on the batch path) for 100k x 25 and 1M x 20, with the
  peak RSS of a fresh process next to the input arrays' size, and next to a
  numpy sort of every column and a plain ``scipy.stats.ks_2samp`` loop;
- ``modelmon serve`` with a 1M-row CSV reference: seconds until
  ``/-/ready`` answers 200;
- ``modelmon --help`` next to ``python -c pass``;
- pyarrow's cost: install size, import time, and the idle RSS of an
  exporter whose reference is a profile (pyarrow not loaded) or a CSV file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from localservers import free_port

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "exporter")}
N_NUM, N_CAT = 20, 5


def make_columns(rng: np.random.Generator, n: int, n_num: int = N_NUM, n_cat: int = N_CAT,
                 shift: float = 0.0) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for i in range(n_num):
        kind = i % 4
        s = shift if i % 4 == 0 else 0.0
        if kind == 0:
            cols[f"n{i}"] = rng.normal(s, 1, n)
        elif kind == 1:
            cols[f"n{i}"] = rng.lognormal(s, 1, n)
        elif kind == 2:
            cols[f"n{i}"] = rng.poisson(3 + s, n).astype(np.float64)  # discrete
        else:
            cols[f"n{i}"] = rng.uniform(s, 1 + s, n)
    for j in range(n_cat):
        k = (3, 5, 8, 12, 20)[j % 5]
        cols[f"c{j}"] = rng.integers(0, k, n)
    return cols


def write_csv(path: Path, cols: dict[str, np.ndarray]) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    arrays = {k: (pa.array(v) if k.startswith("n") else pa.array(np.char.add("v", v.astype(str))))
              for k, v in cols.items()}
    pacsv.write_csv(pa.table(arrays), path)


def timed(cmd: list[str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append(time.perf_counter() - t)
    return out


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} ms (min {min(xs) * 1000:.0f})"


# --------------------------------------------------------------- child modes
READ_ONLY = """
import sys, time, numpy as np, pyarrow.csv as c, pyarrow.compute as pc, pyarrow as pa
t = time.perf_counter()
for p in sys.argv[1:]:
    tb = c.read_csv(p)
    for col in tb.columns:
        if pa.types.is_string(col.type):
            e = pc.dictionary_encode(col.combine_chunks()); e.indices.to_numpy(); e.dictionary.to_pylist()
        else:
            col.to_numpy()
print(time.perf_counter() - t)
"""

IN_MEMORY = """
import json, sys, time
import numpy as np
def hwm():  # peak RSS of this process image (ru_maxrss would include the parent's at fork)
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
sys.path.insert(0, sys.argv[1])
n, n_num, n_cat = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
from bench_data import make_columns
from modelmon.config import DriftConfig, FeatureConfig
from modelmon.datasets import CategoricalColumn, NumericColumn, Table
from modelmon.drift.batch import encode
from modelmon.drift.engine import DriftEngine
from modelmon.drift.reference import build_profile
from pathlib import Path
rss_imports = hwm()
rng = np.random.default_rng(0)
def table(cols):
    out = {}
    for k, v in cols.items():
        out[k] = (NumericColumn(v) if k.startswith("n")
                  else CategoricalColumn(v.astype(np.int32), [f"v{i}" for i in range(int(v.max()) + 1)]))
    return Table(Path("mem"), n, out)
ref, cur = table(make_columns(rng, n, n_num, n_cat)), table(make_columns(rng, n, n_num, n_cat, shift=0.2))
input_bytes = sum((c.values.nbytes if isinstance(c, NumericColumn) else c.codes.nbytes)
                  for t in (ref, cur) for c in t.columns.values())
base = hwm()
feats = [FeatureConfig(name=k, type="numerical" if k.startswith("n") else "categorical") for k in ref.columns]
cfg = DriftConfig()
times = []
for _ in range(int(sys.argv[5])):
    t = time.perf_counter()
    prof = build_profile(ref, feats, bins=cfg.bins, sample_size=max(cfg.reference_sample_size, n))
    eng = DriftEngine(feats, prof, cfg)
    w = encode(eng, cur)
    rep = eng.compute("batch", w.size, w.columns, w.counts)
    times.append(time.perf_counter() - t)
    del prof, eng, w
peak = hwm()
t = time.perf_counter()
for c in list(ref.columns.values()) + list(cur.columns.values()):
    np.sort(c.values if isinstance(c, NumericColumn) else c.codes)
sort_s = time.perf_counter() - t
ks_s = 0.0
if sys.argv[6] == "1":
    from scipy import stats
    t = time.perf_counter()
    for k in ref.columns:
        if k.startswith("n"):
            stats.ks_2samp(ref.columns[k].values, cur.columns[k].values)
    ks_s = time.perf_counter() - t
print(json.dumps({"times": times, "input_bytes": input_bytes, "rss_imports": rss_imports, "rss_before": base, "peak_rss": peak,
                  "sort_s": sort_s, "ks_loop_s": ks_s, "drifted": rep.drifted_features}))
"""


def in_memory(n: int, n_num: int, n_cat: int, repeat: int, ks: bool, tmp: Path) -> dict:
    (tmp / "bench_data.py").write_text(_make_columns_source())  # the child generates the same data
    out = subprocess.run([sys.executable, "-c", IN_MEMORY, str(tmp), str(n), str(n_num), str(n_cat), str(repeat),
                          "1" if ks else "0"], env={**ENV, "PYTHONPATH": f"{ROOT / 'exporter'}:{tmp}"},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _make_columns_source() -> str:
    import inspect

    return "import numpy as np\nN_NUM, N_CAT = 20, 5\n" + inspect.getsource(make_columns)



def serve_ready(config: Path, timeout: float = 120.0) -> tuple[float, int]:
    """Seconds until /-/ready is 200, and the process's RSS (KiB) then."""
    port = free_port()
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "modelmon", "serve", f"--config={config}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while time.perf_counter() - t < timeout:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "serve exited")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        ready = time.perf_counter() - t
                        break
            except OSError:
                time.sleep(0.02)
        else:
            raise RuntimeError("not ready")
        time.sleep(1.0)  # idle
        rss = int(next(line.split()[1] for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS")))
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        return ready, rss if "libarrow" not in maps else -rss
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the 1M-row cases")
    ap.add_argument("--only-memory", action="store_true", help="only the in-memory cases")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}, cores: {os.cpu_count()}")
    tmp = Path(tempfile.mkdtemp(prefix="modelmon-bench-"))
    try:
        rng = np.random.default_rng(1)
        start = timed([sys.executable, "-c", "pass"], args.repeat)
        if args.only_memory:
            for n, nn, nc in [(100_000, N_NUM, N_CAT)] + ([] if args.quick else [(1_000_000, N_NUM, 0)]):
                r = in_memory(n, nn, nc, args.repeat, ks=False, tmp=tmp)
                print(n, med(r["times"]), f"peak {r['peak_rss'] / 2**20:.0f} MiB, imports {r['rss_imports'] / 2**20:.0f} MiB, "
                      f"inputs {r['input_bytes'] / 2**20:.0f} MiB: {(r['peak_rss'] - r['rss_imports']) / r['input_bytes']:.2f}x")
            return
        ref, cur = tmp / "ref.csv", tmp / "cur.csv"
        write_csv(ref, make_columns(rng, 100_000))
        write_csv(cur, make_columns(rng, 100_000, shift=0.2))
        print(f"\n== files: 2 x 100k rows x (20 num + 5 cat), {ref.stat().st_size / 2**20:.1f} MiB each")
        read = [float(subprocess.run([sys.executable, "-c", READ_ONLY, str(ref), str(cur)], env=ENV, check=True,
                                     capture_output=True, text=True).stdout) for _ in range(args.repeat)]
        cli = timed([sys.executable, "-m", "modelmon", "drift", "--reference", str(ref), "--current", str(cur),
                     "-o", str(tmp / "out.json")], args.repeat)
        doc = json.loads((tmp / "out.json").read_text())
        print(f"modelmon drift CLI, end to end:   {med(cli)}  ({doc['dataset']['drifted_features']} of "
              f"{doc['dataset']['total_features']} features drifted)")
        print(f"floor: pyarrow reads both files:  {med(read)}   "
              f"(ratio CLI/read {statistics.median(cli) / statistics.median(read):.1f}x; "
              f"CLI minus interpreter start {statistics.median(cli) - statistics.median(start):.2f} s)")
        print(f"floor: python -c pass:            {med(start)}")
        helps = timed([sys.executable, "-m", "modelmon", "--help"], max(args.repeat, 5))
        print(f"\nmodelmon --help:                  {med(helps)}  (python -c pass: {med(start)})")

        print("\n== in memory: profile + score (default methods), fresh process per case")
        cases = [(100_000, N_NUM, N_CAT)] + ([] if args.quick else [(1_000_000, N_NUM, 0)])
        for n, nn, nc in cases:
            r = in_memory(n, nn, nc, args.repeat, ks=True, tmp=tmp)
            extra = r["peak_rss"] - r["rss_imports"]
            print(f"{n:>9,} x ({nn} num + {nc} cat): {med(r['times'])}; peak RSS {r['peak_rss'] / 2**20:.0f} MiB "
                  f"(after imports {r['rss_imports'] / 2**20:.0f} MiB, with the data {r['rss_before'] / 2**20:.0f} MiB; "
                  f"inputs {r['input_bytes'] / 2**20:.0f} MiB; peak above the imports {extra / r['input_bytes']:.2f}x "
                  f"the inputs)")
            print(f"   floor: numpy sort of every column {r['sort_s'] * 1000:.0f} ms; plain ks_2samp loop over the "
                  f"numerical columns {r['ks_loop_s'] * 1000:.0f} ms")

        if not args.quick:
            print("\n== modelmon serve with a 1M-row CSV reference")
            big = tmp / "big.csv"
            write_csv(big, make_columns(rng, 1_000_000, 4, 2))
            feats = "".join(f"  - {{name: n{i}}}\n" for i in range(4)) + \
                "".join(f"  - {{name: c{j}, type: categorical}}\n" for j in range(2))
            cfg = tmp / "serve.yml"
            cfg.write_text(f"models:\n- name: m\n  features:\n{feats}  reference: {{path: {big}}}\n")
            ready, rss_csv = serve_ready(cfg)
            print(f"ready after {ready:.2f} s ({big.stat().st_size / 2**20:.0f} MiB CSV, 4 num + 2 cat); "
                  f"idle RSS {abs(rss_csv) / 1024:.0f} MiB (pyarrow loaded: {rss_csv < 0})")
            prof = tmp / "prof.json"
            subprocess.run([sys.executable, "-m", "modelmon", "reference", "build", str(big), "-o", str(prof),
                            "--config", str(cfg)], env=ENV, check=True, stdout=subprocess.DEVNULL)
            cfg2 = tmp / "serve2.yml"
            cfg2.write_text(cfg.read_text().replace(str(big), str(prof)))
            ready2, rss_prof = serve_ready(cfg2)
            print(f"with the frozen profile instead: ready after {ready2:.2f} s; idle RSS {abs(rss_prof) / 1024:.0f} MiB "
                  f"(pyarrow loaded: {rss_prof < 0})")

        import pyarrow

        size = subprocess.run(["du", "-sh", os.path.dirname(pyarrow.__file__)], capture_output=True, text=True,
                              check=True).stdout.split()[0]
        imp = timed([sys.executable, "-c", "import pyarrow, pyarrow.csv, pyarrow.compute"], args.repeat)
        print(f"\npyarrow {pyarrow.__version__}: {size} installed; import pyarrow + csv + compute {med(imp)} "
              f"(python -c pass {med(start)})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
