"""``modelmon stack``: the compose stack's alerting path without Docker.

Runs the real command (exporter, Debian's prometheus and
prometheus-alertmanager, the printing webhook) on free ports, and checks that
Prometheus scrapes the local exporter, loads every bundle rule, sends to the
local Alertmanager, that Alertmanager's rendered config points at the local
receiver, and that SIGTERM stops everything; that ``--demo`` brings every
alert of the incident scenario to the terminal within a couple of minutes;
and that a busy port fails at once, naming the port and its holder.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from servers import ServerProcess, free_port, require_binary, wait_until

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


def _closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_stack_runs_the_bundle_locally(tmp_path: Path) -> None:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    ports = {name: free_port() for name in ("exporter", "prometheus", "alertmanager", "webhook", "node-exporter",
                                            "blackbox-exporter")}
    data = tmp_path / "data"
    proc = ServerProcess("modelmon-stack", [
        sys.executable, "-m", "modelmon", "stack", "--scenario=incident", "--anomaly-after=0", "--rate=300",
        "--scrape-interval=1s", f"--data-dir={data}",
        f"--exporter.listen-address=127.0.0.1:{ports['exporter']}",
        f"--prometheus.listen-address=127.0.0.1:{ports['prometheus']}",
        f"--alertmanager.listen-address=127.0.0.1:{ports['alertmanager']}",
        f"--webhook.listen-address=127.0.0.1:{ports['webhook']}",
        f"--node-exporter.listen-address=127.0.0.1:{ports['node-exporter']}",
        f"--blackbox-exporter.listen-address=127.0.0.1:{ports['blackbox-exporter']}",
    ], tmp_path)
    prom = f"http://127.0.0.1:{ports['prometheus']}/api/v1"
    try:
        wait_until(lambda: "Ctrl-C stops everything" in proc.log_path.read_text() or not proc.alive(), 60,
                   what="modelmon stack to start")
        assert proc.alive(), proc.log_tail()
        log = proc.log_path.read_text()
        for name in ("exporter", "prometheus", "alertmanager", "webhook"):
            assert f"127.0.0.1:{ports[name]}" in log, f"the {name} URL is not printed:\n{log}"
        assert "DEMO" not in log
        # Every Prometheus link printed works on the Prometheus it started (Debian's 2.42 has only
        # the classic UI and the API).
        links = re.findall(rf"http://127\.0\.0\.1:{ports['prometheus']}/\S+[^\s,)]", log)
        assert len(links) >= 3, log
        for link in links:
            assert requests.get(link, timeout=5).status_code == 200, link

        def targets_up() -> dict[str, str]:
            active = requests.get(f"{prom}/targets", timeout=5).json()["data"]["activeTargets"]
            return {t["labels"]["job"]: t["scrapeUrl"] for t in active if t["health"] == "up"}

        # Debian's node and blackbox exporters run beside Prometheus (scripts/install-deps.sh installs them).
        require_binary("prometheus-node-exporter")
        require_binary("prometheus-blackbox-exporter")
        jobs = {"modelmon", "prometheus", "node", "blackbox"}
        up = wait_until(lambda: (lambda t: t if set(t) >= jobs else None)(targets_up()), 30, what="targets up")
        assert up["node"] == f"http://127.0.0.1:{ports['node-exporter']}/metrics"
        assert up["blackbox"].startswith(f"http://127.0.0.1:{ports['blackbox-exporter']}/probe?")
        assert up["modelmon"] == f"http://127.0.0.1:{ports['exporter']}/metrics"
        assert up["prometheus"] == f"http://127.0.0.1:{ports['prometheus']}/metrics"
        ams = requests.get(f"{prom}/alertmanagers", timeout=5).json()["data"]["activeAlertmanagers"]
        assert [a["url"] for a in ams] == [f"http://127.0.0.1:{ports['alertmanager']}/api/v2/alerts"]

        bundle_groups = {g["name"] for f in (REPO / "prometheus" / "rules").glob("*.yml")
                         for g in yaml.safe_load(f.read_text())["groups"]}
        loaded = {g["name"] for g in requests.get(f"{prom}/rules", timeout=5).json()["data"]["groups"]}
        assert loaded == bundle_groups

        # The incident scenario trips the bundle's alerts at once (pending until their `for:`).
        wait_until(lambda: [a for a in requests.get(f"{prom}/alerts", timeout=5).json()["data"]["alerts"]
                            if a["labels"].get("model") == "demo"], 30, what="an alert for model demo")

        status = requests.get(f"http://127.0.0.1:{ports['alertmanager']}/api/v2/status", timeout=5).json()
        assert f"http://127.0.0.1:{ports['webhook']}/" in status["config"]["original"], \
            "Alertmanager's rendered config does not post to the local receiver"
    finally:
        code = proc.stop(timeout=20)
    assert code == 0, proc.log_tail()
    for name, port in ports.items():
        assert _closed(port), f"{name} still listening on {port} after the stack stopped"
    assert (data / "prometheus.log").exists() and (data / "prometheus.yml").exists()


#: What the incident scenario must deliver in demo mode.
INCIDENT_ALERTS = {"ModelmonHighLatencyP95", "ModelmonHighErrorRatio", "ModelmonLowAccuracy",
                   "ModelmonLowThroughput", "ModelmonFeatureDrift", "ModelmonDatasetDrift"}


def test_demo_delivers_every_incident_alert_within_two_minutes(tmp_path: Path) -> None:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    ports = {name: free_port() for name in ("exporter", "prometheus", "alertmanager", "webhook", "node-exporter",
                                            "blackbox-exporter")}
    proc = ServerProcess("modelmon-stack-demo", [
        sys.executable, "-m", "modelmon", "stack", "--demo", "--scenario=incident", "--anomaly-after=5s",
        "--rate=600", f"--exporter.listen-address=127.0.0.1:{ports['exporter']}",
        f"--prometheus.listen-address=127.0.0.1:{ports['prometheus']}",
        f"--alertmanager.listen-address=127.0.0.1:{ports['alertmanager']}",
        f"--webhook.listen-address=127.0.0.1:{ports['webhook']}",
        f"--node-exporter.listen-address=127.0.0.1:{ports['node-exporter']}",
        f"--blackbox-exporter.listen-address=127.0.0.1:{ports['blackbox-exporter']}",
    ], tmp_path)
    started = time.monotonic()
    try:
        wait_until(lambda: "Ctrl-C stops everything" in proc.log_path.read_text() or not proc.alive(), 60,
                   what="modelmon stack --demo to start")
        assert proc.alive(), proc.log_tail()
        log = proc.log_path.read_text()
        assert log.startswith("DEMO MODE"), log
        prom = f"http://127.0.0.1:{ports['prometheus']}/api/v1"
        rules = requests.get(f"{prom}/rules", timeout=5).json()["data"]["groups"]
        fors = {r["duration"] for g in rules for r in g["rules"] if r["type"] == "alerting"}
        assert fors == {10.0}, fors

        def delivered() -> set[str]:
            return {m.group(1) for m in re.finditer(r"DEMO notification \[\w+\] firing (\w+) model=demo",
                                                    proc.log_path.read_text())}

        # The throughput guard needs a complete 1m window (60 s up) plus for: 10s: the last one, ~80 s.
        wait_until(lambda: INCIDENT_ALERTS <= delivered() or not proc.alive(), 150,
                   what=f"notifications for {sorted(INCIDENT_ALERTS)}")
        assert proc.alive(), proc.log_tail()
        assert INCIDENT_ALERTS <= delivered(), f"missing {INCIDENT_ALERTS - delivered()}:\n{proc.log_tail()}"
        print(f"demo: every incident alert delivered {time.monotonic() - started:.0f} s after the start")
        # Each alert is printed once per status change, not each time Alertmanager re-sends its group.
        lines = [ln.split(" ", 1)[1] for ln in proc.log_path.read_text().splitlines() if "DEMO notification" in ln]
        for line in set(lines):
            if " firing " in line:
                resolved = line.replace(" firing ", " resolved ", 1).replace(": ", ": ended, no longer true: ", 1)
                assert lines.count(line) <= lines.count(resolved) + 1, (line, lines)
    finally:
        code = proc.stop(timeout=20)
    assert code == 0, proc.log_tail()


def test_busy_port_fails_at_once_naming_port_and_holder(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    try:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "modelmon", "stack",
                               f"--exporter.listen-address=127.0.0.1:{free_port()}",
                               f"--prometheus.listen-address=127.0.0.1:{busy}",
                               f"--alertmanager.listen-address=127.0.0.1:{free_port()}",
                               f"--webhook.listen-address=127.0.0.1:{free_port()}",
                               f"--node-exporter.listen-address=127.0.0.1:{free_port()}",
                               f"--blackbox-exporter.listen-address=127.0.0.1:{free_port()}",
                               f"--data-dir={tmp_path / 'data'}"],
                              capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - started
    finally:
        holder.close()
    assert proc.returncode == 2, proc.stderr
    assert f"Prometheus (--prometheus.listen-address) cannot listen on 127.0.0.1:{busy}" in proc.stderr
    assert f"held by pid {os.getpid()} " in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1, f"one line, no server log:\n{proc.stderr}"
    assert not (tmp_path / "data" / "prometheus.log").exists(), "nothing may start before the ports are checked"
    assert elapsed < 20


def test_stack_rejects_a_missing_bundle(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "modelmon", "stack", f"--bundle={tmp_path}"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert f"{tmp_path}/prometheus/prometheus.yml: not found" in proc.stderr


def test_rewrite_points_compose_services_at_local_servers() -> None:
    from modelmon.stack import Addresses, rewrite_prometheus_config

    bundle = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    local = rewrite_prometheus_config(bundle, REPO / "prometheus",
                                      Addresses("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"), "1s")
    jobs = {j["job_name"]: j for j in local["scrape_configs"]}
    assert jobs["modelmon"]["static_configs"][0]["targets"] == ["127.0.0.1:1"]
    assert "file_sd_configs" not in jobs["modelmon"]
    assert local["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:3"]
    assert all(Path(p).is_absolute() for p in local["rule_files"])
    assert local["global"]["scrape_interval"] == "1s" and "scrape_timeout" not in local["global"]
    original = next(j for j in bundle["scrape_configs"] if j["job_name"] == "modelmon")
    assert original["static_configs"][0]["targets"] == ["exporter:9874"], "the input must not be modified"


def test_rewrite_keeps_system_exporters_that_run_and_drops_the_rest() -> None:
    from modelmon.stack import Addresses, rewrite_prometheus_config

    bundle = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    none = rewrite_prometheus_config(bundle, REPO / "prometheus", Addresses("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"))
    assert {j["job_name"] for j in none["scrape_configs"]} == {"prometheus", "modelmon"}
    both = rewrite_prometheus_config(bundle, REPO / "prometheus", Addresses(
        "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", {"node-exporter": "127.0.0.1:4", "blackbox-exporter": ":5"}))
    jobs = {j["job_name"]: j for j in both["scrape_configs"]}
    assert set(jobs) == {"prometheus", "modelmon", "node", "blackbox"}, "cAdvisor needs Docker: no local job"
    assert jobs["node"]["static_configs"][0]["targets"] == ["127.0.0.1:4"]
    probes = {t: sc.get("labels", {}) for sc in jobs["blackbox"]["static_configs"] for t in sc["targets"]}
    assert probes == {"http://127.0.0.1:1/-/ready": {"probe": "model", "model": "demo"},
                      "http://127.0.0.1:1/-/healthy": {"probe": "exporter"}}
    assert {"target_label": "__address__", "replacement": "127.0.0.1:5"} in jobs["blackbox"]["relabel_configs"]
    # The compose host name goes: the relabelling derives `host` from the local addresses.
    assert all("host" not in sc.get("labels", {}) for j in jobs.values() for sc in j["static_configs"])
    assert "&" not in yaml.safe_dump(both), "the written config must be plain YAML (no anchors)"


def test_missing_system_exporters_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Without Debian's exporters the stack runs on and says what is missing."""
    import argparse

    from modelmon.stack import Stack, start_system_exporters

    monkeypatch.setenv("PATH", str(tmp_path))
    args = argparse.Namespace(node_exporter_listen_address="127.0.0.1:1", blackbox_exporter_listen_address="127.0.0.1:2")
    assert start_system_exporters(Stack(tmp_path), args, REPO) == {}
    out = capsys.readouterr().out
    assert "prometheus-node-exporter not installed (Debian: apt-get install prometheus-node-exporter)" in out
    assert "prometheus-blackbox-exporter not installed" in out
