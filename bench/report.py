"""Drift HTML report benchmark: size of the page and the time to make and to load it.

    python bench/report.py            # 25 features x 100k rows, and a 100-feature page
    python bench/report.py --quick    # 10k rows

What is timed:

- ``modelmon drift --format html -o report.html`` end to end as a CI job runs
  it (a fresh process: imports, reading both CSVs, the drift engine, the page);
- the report's own share (histograms + HTML rendering) inside one process,
  so the page's cost can be told apart from the drift computation;
- "load": parsing the page with the standard library's HTML parser, a proxy
  for a browser's parse time (no browser is available on the build machines);
  the page loads nothing else (its CSP forbids it), so size and parse are the
  whole of it.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np


def make_tables(d: Path, rows: int, numerical: int, categorical: int, seed: int = 1) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    cats = [f"c{i}" for i in range(8)]
    paths = []
    for name, shift in (("ref", 0.0), ("cur", 0.3)):
        cols: dict[str, list] = {}
        for j in range(numerical):
            s = shift if j % 4 == 0 else 0.0  # a quarter of the features drift
            cols[f"num_{j}"] = np.round(rng.normal(s, 1.0, rows), 4).tolist()
        for j in range(categorical):
            p = np.full(len(cats), 1 / len(cats))
            if shift and j % 2 == 0:
                p = np.linspace(1, 3, len(cats))
                p /= p.sum()
            cols[f"cat_{j}"] = rng.choice(cats, rows, p=p).tolist()
        path = d / f"{name}.csv"
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(list(cols))
            w.writerows(zip(*cols.values()))
        paths.append(path)
    return paths[0], paths[1]


def time_cli(ref: Path, cur: Path, out: Path, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "modelmon", "drift", "--reference", str(ref), "--current", str(cur),
                            "--format", "html", "-o", str(out)], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode not in (0, 1, 3):
            raise SystemExit(r.stderr)
    return times


def time_render(ref: Path, cur: Path, repeats: int) -> tuple[list[float], list[float]]:
    from modelmon.drift import batch
    from modelmon.report import histograms, render_html

    result = batch.run(ref, cur)
    doc = batch.report_json(result)
    profile, table = result.profile, result.current
    hist_t, render_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        hists = histograms(profile, table, list(doc["features"]))
        t1 = time.perf_counter()
        render_html(doc, hists)
        t2 = time.perf_counter()
        hist_t.append(t1 - t0)
        render_t.append(t2 - t1)
    return hist_t, render_t


def time_parse(page: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        p = HTMLParser()
        t0 = time.perf_counter()
        p.feed(page)
        p.close()
        times.append(time.perf_counter() - t0)
    return times


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} ms (median of {len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rows = 10_000 if args.quick else 100_000
    repeats = 3
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for numerical, categorical in ((20, 5), (80, 20)):
            n_rows = rows if numerical == 20 else rows // 10
            ref, cur = make_tables(d, n_rows, numerical, categorical)
            out = d / "report.html"
            cli = time_cli(ref, cur, out, repeats)
            hist_t, render_t = time_render(ref, cur, repeats)
            page = out.read_text(encoding="utf-8")
            parse = time_parse(page, repeats)
            print(f"{numerical + categorical} features ({numerical} numerical, {categorical} categorical), "
                  f"{n_rows} rows per file:")
            print(f"  report size           {len(page.encode()) / 1024:.0f} KiB")
            print(f"  modelmon drift --format html (whole command)  {ms(cli)}")
            print(f"  of which histograms   {ms(hist_t)}")
            print(f"  of which HTML render  {ms(render_t)}")
            print(f"  parse (html.parser)   {ms(parse)}")


if __name__ == "__main__":
    main()
