"""Fleet benchmark: N exporter replicas of one model on this machine behind
one Prometheus running the bundle's rules.

    python bench/fleet.py                    # 20 replicas, ~1 minute
    python bench/fleet.py --replicas 5 --duration 30

Each replica is ``modelmon serve`` simulating model ``fleet`` (same seed, so
the same reference profile; --rate requests/s each).  Prometheus (Debian's)
scrapes them every --interval with the bundle's ``modelmon`` job and
evaluates every rule file of prometheus/rules/.  After --duration it reports:

- scrape duration per replica (``scrape_duration_seconds``: mean and max over
  the run) and series per scrape (``scrape_samples_scraped``), with
  Prometheus' scrape of itself as the floor measured in the same run;
- series in Prometheus' head (``prometheus_tsdb_head_series``);
- the fleet PSI recording rule's evaluation time (``/api/v1/rules``
  evaluationTime of ``model_feature:modelmon_fleet_psi:rate5m``, and of the
  rule summing every replica's bin counters that it reads) and its
  group's (``prometheus_rule_group_last_duration_seconds``, mean and max over
  the run), beside the serving group's as a peer.

The machine is shared: the report carries /proc/loadavg at the start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from localservers import free_port

REPO = Path(__file__).resolve().parent.parent



def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    return get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))["data"]["result"]


def scalar(prom: str, expr: str) -> float | None:
    res = query(prom, expr)
    return float(res[0]["value"][1]) if res else None


def group_seconds(name: str) -> str:
    """Prometheus's own evaluation time of the modelmon-NAME.rules group."""
    return f'prometheus_rule_group_last_duration_seconds{{rule_group=~".*;modelmon-{name}.rules"}}'


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def loadavg() -> list[str]:
    return open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--rate", type=float, default=50.0, help="simulated requests/s per replica (default 50)")
    parser.add_argument("--interval", default="5s", help="scrape and evaluation interval (default 5s)")
    parser.add_argument("--duration", type=float, default=45.0, help="seconds to measure after all are up")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    prometheus = shutil.which("prometheus")
    if not prometheus:
        raise SystemExit("prometheus not found (apt-get install prometheus, or scripts/install-deps.sh)")
    load_start = loadavg()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="modelmon-fleet-") as tmp:
        work = Path(tmp)
        try:
            ports = [free_port() for _ in range(args.replicas)]
            bundle = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
            job = next(j for j in bundle["scrape_configs"] if j["job_name"] == "modelmon")
            job = {**job, "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]}
            job.pop("file_sd_configs", None)
            prom_port = free_port()
            prom = f"http://127.0.0.1:{prom_port}"
            cfg = {"global": {"scrape_interval": args.interval, "evaluation_interval": args.interval},
                   "rule_files": [str(p) for p in sorted((REPO / "prometheus" / "rules").glob("*.yml"))],
                   "scrape_configs": [{"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}]},
                                      job]}
            (work / "prometheus.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            log = open(work / "prometheus.log", "wb")
            procs.append(subprocess.Popen([prometheus, f"--config.file={work / 'prometheus.yml'}",
                                           f"--web.listen-address=127.0.0.1:{prom_port}",
                                           f"--storage.tsdb.path={work / 'data'}", "--log.level=warn"],
                                          stdout=log, stderr=subprocess.STDOUT, cwd=work))
            env = {**os.environ, "PYTHONPATH": str(REPO / "exporter")}
            (work / "fleet.yml").write_text(yaml.safe_dump({"simulator": {"model": "fleet"}}))
            for i, port in enumerate(ports):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "modelmon", "serve", f"--web.listen-address=127.0.0.1:{port}",
                     f"--config={work / 'fleet.yml'}", "--scenario=data-drift" if i % 2 else "--scenario=normal",
                     "--anomaly-after=0", "--seed=7", f"--rate={args.rate:g}"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work, env=env))
            wait(lambda: scalar(prom, 'count(up{job="modelmon"} == 1)') == args.replicas, 120,
                 f"{args.replicas} replicas scraped")
            wait(lambda: query(prom, 'model_feature:modelmon_fleet_psi:rate5m{model="fleet"}'), 60, "fleet PSI")
            start = time.time()
            time.sleep(args.duration)
            rng = f"[{int(time.time() - start)}s]"
            rules = get(f"{prom}/api/v1/rules")["data"]["groups"]
            by_rule = {r.get("name"): r for g in rules for r in g["rules"]}
            psi_rule = by_rule["model_feature:modelmon_fleet_psi:rate5m"]
            group_time = {g["name"]: g["evaluationTime"] for g in rules}
            result = {
                "replicas": args.replicas, "rate per replica": args.rate, "interval": args.interval,
                "measured for s": round(time.time() - start),
                "scrape duration s (mean, max over replicas and run)": [
                    scalar(prom, f'avg(avg_over_time(scrape_duration_seconds{{job="modelmon"}}{rng}))'),
                    scalar(prom, f'max(max_over_time(scrape_duration_seconds{{job="modelmon"}}{rng}))')],
                "floor: Prometheus self-scrape s (mean)": scalar(
                    prom, f'avg_over_time(scrape_duration_seconds{{job="prometheus"}}{rng})'),
                "series per replica scrape (mean)": scalar(prom, 'avg(scrape_samples_scraped{job="modelmon"})'),
                "series scraped per interval, all replicas": scalar(prom, 'sum(scrape_samples_scraped{job="modelmon"})'),
                "head series in Prometheus": scalar(prom, "prometheus_tsdb_head_series"),
                "fleet PSI rule evaluation s (last)": psi_rule["evaluationTime"],
                "its input, the summed bin rates over all replicas, s (last)":
                    by_rule["model_feature_bin:modelmon_feature_bin_values:rate5m"]["evaluationTime"],
                "fleet PSI series": len(query(prom, 'model_feature:modelmon_fleet_psi:rate5m')),
                "drift rule group s (mean, max over run)": [
                    scalar(prom, f"avg_over_time({group_seconds('drift')}{rng})"),
                    scalar(prom, f"max_over_time({group_seconds('drift')}{rng})")],
                "peer: serving rule group s (mean)": scalar(
                    prom, f"avg_over_time({group_seconds('serving')}{rng})"),
                "rule groups s (last)": group_time,
                "load at start, end": [load_start, loadavg()],
            }
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
