"""Per-replica cardinality of the exporter, measured on a real /metrics.

    python bench/cardinality.py              # the tables of docs/scale-out.md
    python bench/cardinality.py --json       # machine-readable

Starts ``modelmon serve`` (the simulated model: 4 numerical + 2 categorical
features, default config: windows 5m and 1h, 10 bins, Wasserstein + PSI per
numerical feature and Jensen-Shannon + PSI per categorical one), waits until
every drift score is exported, and counts the series of each family on
``/metrics``.  Each family's series are attributed by their labels: to a
feature (``feature`` label), and within that to a bin (``bin``) or a window
(``window``); the rest is per model or per exporter.  From those measured
counts it projects the series of one replica for 10 / 100 / 1000 numerical
features, with every metric group on and with groups switched off
(``--no-collector.NAME``), and checks the projection against a second real
exporter started with those switches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "exporter"))

from modelmon.collectors.groups import group_of
from modelmon.sources.simulator import demo_model_config

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Drift score series of the simulated model once every column is scored.
DRIFT_SCORES = len(demo_model_config("demo").monitored_features()) * 2 * 2


def scrape(*flags: str, timeout: float = 60) -> str:
    """/metrics of a fresh simulated exporter once every drift score is there."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "exporter")}
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "modelmon", "serve", f"--web.listen-address=127.0.0.1:{port}",
                                 "--seed=1", "--rate=1000", *flags], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=tmp, env=env)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                    # Every watched column (features, and the attributions the
                    # simulator sends) x 2 methods x 2 windows scored: before
                    # that the count depends on how far the first recomputation got.
                    if text.count("\nmodelmon_drift_score{") >= DRIFT_SCORES:
                        return text
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("exporter did not export all drift scores in time")
                time.sleep(1)
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def attribute(text: str) -> dict[str, Any]:
    """Series per family, split by what they scale with."""
    numerical = {"age", "income", "credit_score", "session_seconds"}
    out: dict[str, Any] = {"families": defaultdict(lambda: defaultdict(int)), "total": 0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = sample.labels
            if "feature" in labels:
                kind = "numerical" if labels["feature"] in numerical else "categorical"
                scale = f"per {kind} feature" + (" and bin" if "bin" in labels else "") + \
                        (" and window" if "window" in labels else "")
            elif "window" in labels:
                scale = "per model and window"
            elif "model" in labels:
                scale = "per model"
            else:
                scale = "per exporter"
            out["families"][family.name][scale] += 1
            out["total"] += 1
    return out


def per_feature(att: dict[str, Any], n_numerical: int = 4) -> dict[str, dict[str, float]]:
    """Series one numerical feature adds, per family group (measured / features)."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family, scales in att["families"].items():
        group = group_of(family) or "always"
        for scale, n in scales.items():
            if scale.startswith("per numerical feature"):
                out[group][scale] += n / n_numerical
    return out


def budget(att: dict[str, Any], features: int, disabled: set[str]) -> int:
    """Series of one replica with ``features`` numerical features (default
    config), leaving out ``disabled`` groups: the measured fixed part plus
    ``features`` times the measured per-numerical-feature part."""
    fixed = 0.0
    per = 0.0
    for family, scales in att["families"].items():
        if (group_of(family) or "always") in disabled:
            continue
        for scale, n in scales.items():
            if scale.startswith("per numerical feature"):
                per += n / 4
            elif not scale.startswith("per categorical feature"):
                fixed += n
    return round(fixed + features * per)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    full = attribute(scrape())
    lean_flags = ("--no-collector.bins", "--no-collector.fairness", "--no-collector.process")
    lean = attribute(scrape(*lean_flags))
    groups = per_feature(full)
    scenarios = {"all groups": set(), "--no-collector.bins": {"bins"},
                 "--no-collector.bins --no-collector.data_quality": {"bins", "data_quality"},
                 "--no-collector.drift --no-collector.data_quality (fleet drift only)": {"drift", "data_quality"}}
    table = {name: {n: budget(full, n, off) for n in (10, 100, 1000)} for name, off in scenarios.items()}
    # The projection with bins, fairness and process off, against the second exporter.
    projected_lean = budget(full, 4, {"bins", "fairness", "process"}) + sum(
        n for fam, sc in full["families"].items() if (group_of(fam) or "always") not in {"bins", "fairness", "process"}
        for s, n in sc.items() if s.startswith("per categorical feature"))
    result = {
        "measured total series (demo model, 6 features, 2 windows)": full["total"],
        "measured with " + " ".join(lean_flags): lean["total"],
        "projected for that": projected_lean,
        "series one numerical feature adds, by group and scale": {g: dict(v) for g, v in groups.items()},
        "families": {f: dict(s) for f, s in sorted(full["families"].items())},
        "budget (numerical features -> series per replica)": table,
        "load": open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else None,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"measured: {full['total']} series; with {' '.join(lean_flags)}: {lean['total']} "
          f"(projection {projected_lean})")
    print("\nseries per numerical feature (default config: 2 windows, 10 bins -> 12 bin slots, 2 methods):")
    for group, scales in sorted(groups.items()):
        for scale, n in sorted(scales.items()):
            print(f"  {group:<13} {scale:<36} {n:g}")
    print("\n| switches | 10 features | 100 features | 1000 features |\n| --- | ---: | ---: | ---: |")
    for name, row in table.items():
        print(f"| {name} | {row[10]:,} | {row[100]:,} | {row[1000]:,} |")
    print(f"\nload: {result['load']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
