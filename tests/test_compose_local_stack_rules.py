"""``modelmon stack`` without servers: the ``--demo`` rewrite of the bundle's
rules and Alertmanager config, the printed notification lines, and the port
check."""

from __future__ import annotations

import copy
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from modelmon.stack import (
    DEMO_FOR,
    StackError,
    check_ports,
    demo_alertmanager_config,
    demo_rules,
    notification_line,
    write_demo_rules,
)
from servers import require_binary

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "prometheus" / "rules"


def test_demo_rules_shorten_for_and_ranges_only(tmp_path: Path) -> None:
    copies = write_demo_rules([str(RULES / "*.yml")], tmp_path)
    assert sorted(Path(c).name for c in copies) == sorted(p.name for p in RULES.glob("*.yml"))
    r = subprocess.run([require_binary("promtool"), "check", "rules", *copies], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for path in sorted(RULES.glob("*.yml")):
        original = yaml.safe_load(path.read_text())
        before = copy.deepcopy(original)
        demo = demo_rules(original)
        assert original == before, "the input must not be modified"
        for g0, g1 in zip(original["groups"], demo["groups"], strict=True):
            assert g0["name"] == g1["name"] and len(g0["rules"]) == len(g1["rules"])
            for r0, r1 in zip(g0["rules"], g1["rules"], strict=True):
                assert (r1.get("alert"), r1.get("record")) == (r0.get("alert"), r0.get("record"))
                assert r1.get("labels") == r0.get("labels") and r1.get("annotations") == r0.get("annotations")
                if "alert" in r0:
                    assert r1["for"] == DEMO_FOR
                assert "[5m]" not in r1["expr"] and "offset 5m" not in r1["expr"]
                # Only the ranges (and the uptime guard) change.
                assert r1["expr"].replace("[1m]", "[5m]").replace("offset 1m", "offset 5m").replace(
                    ") >= 60", ") >= 300") == r0["expr"], r0["expr"]
    serving = demo_rules(yaml.safe_load((RULES / "alerts-serving.yml").read_text()))
    (low,) = [r for g in serving["groups"] for r in g["rules"] if r.get("alert") == "ModelmonLowThroughput"]
    assert ") >= 60" in low["expr"] and "offset 1m" in low["expr"], low["expr"]


def test_demo_alertmanager_config_shortens_grouping(tmp_path: Path) -> None:
    source = REPO / "alertmanager" / "alertmanager.yml"
    dest = demo_alertmanager_config(source, tmp_path / "am.yml")
    cfg = yaml.safe_load(dest.read_text())
    bundle = yaml.safe_load(source.read_text())
    assert cfg["route"]["group_wait"] == "1s" and cfg["route"]["group_interval"] == "5s"
    assert cfg["route"]["routes"] == bundle["route"]["routes"] and cfg["receivers"] == bundle["receivers"]
    assert cfg["inhibit_rules"] == bundle["inhibit_rules"]
    assert cfg["templates"] == [str(REPO / "alertmanager" / "templates" / "*.tmpl")]
    r = subprocess.run([require_binary("amtool"), "check-config", str(dest)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_resolved_notification_says_the_condition_ended() -> None:
    alert = {"status": "firing", "labels": {"alertname": "ModelmonHighLatencyP95", "model": "fraud",
                                             "severity": "warning"},
             "annotations": {"summary": "Model fraud p95 latency is above its threshold."}}
    firing = notification_line("ticket", alert)
    assert firing == ("notification [ticket] firing ModelmonHighLatencyP95 model=fraud severity=warning: "
                      "Model fraud p95 latency is above its threshold.")
    resolved = notification_line("ticket", {**alert, "status": "resolved"}, demo=True)
    assert resolved.startswith("DEMO notification [ticket] resolved ModelmonHighLatencyP95")
    assert "ended, no longer true: Model fraud p95 latency" in resolved


def test_check_ports_names_every_busy_port_and_duplicates() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(StackError) as err:
            check_ports({"Prometheus": f"127.0.0.1:{port}", "A": "127.0.0.1:1", "B": "127.0.0.1:1"})
    msg = str(err.value)
    assert f"Prometheus cannot listen on 127.0.0.1:{port}: Address already in use, held by pid" in msg
    assert "B and A both want port 1" in msg
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    check_ports({"Prometheus": f"127.0.0.1:{free}"})  # free: no error
