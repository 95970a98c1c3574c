"""The Alertmanager side of the alerting bundle: ``amtool check-config``,
``amtool config routes test --verify.receivers`` for every route and every
alert rule's severity, the commented receiver examples, the message templates
(``amtool template render``), the webhook URL rendered from the environment,
and inhibition on a real Alertmanager through its API."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from servers import REPO, ServerProcess, free_port, require_binary, wait_until

AM_DIR = REPO / "alertmanager"
AM_CONFIG = AM_DIR / "alertmanager.yml"
PLACEHOLDER_URL = "http://webhook:5001/"
RECEIVER_OF_SEVERITY = {"critical": "page", "warning": "ticket", "info": "blackhole"}


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if cmd[0] != "sh":
        require_binary(cmd[0])
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def render_config(dest: Path, webhook_url: str | None) -> Path:
    """alertmanager.yml as the compose entrypoint renders it."""
    env = {"MODELMON_WEBHOOK_URL": webhook_url} if webhook_url else {}
    res = run(["sh", str(AM_DIR / "render-config.sh"), str(AM_CONFIG), str(dest)], env=env)
    assert res.returncode == 0, res.stderr
    return dest


def test_config_for_tests(tmp_path: Path, webhook_url: str) -> str:
    """The bundle's config with the webhook URL from the environment (as in
    compose) and test timings: group_wait / group_interval of 1 s.  Routing,
    receivers, inhibition and templates stay the bundle's own."""
    cfg = yaml.safe_load(render_config(tmp_path / "alertmanager-rendered.yml", webhook_url).read_text())
    cfg["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    return yaml.safe_dump(cfg, sort_keys=False)


test_config_for_tests.__test__ = False  # a helper, not a test


def amtool_routes(config: Path, labels: dict[str, str], receiver: str) -> subprocess.CompletedProcess[str]:
    return run(["amtool", "config", "routes", "test", f"--config.file={config}", f"--verify.receivers={receiver}",
                *(f"{k}={v}" for k, v in labels.items())])


# ------------------------------------------------------------------ amtool checks


def test_alertmanager_config_is_valid() -> None:
    res = run(["amtool", "check-config", str(AM_CONFIG)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 inhibit rules" in res.stdout and "4 receivers" in res.stdout and "1 templates" in res.stdout, res.stdout


ROUTES = [
    ({"alertname": "ModelmonHighErrorRatio", "model": "m", "severity": "critical"}, "page"),
    ({"alertname": "ModelmonHighErrorRatio", "model": "m", "severity": "warning"}, "ticket"),
    ({"alertname": "ModelmonReferenceProfileMismatch", "model": "m", "severity": "info"}, "blackhole"),
    ({"alertname": "ModelmonExporterAbsent", "job": "modelmon", "severity": "critical"}, "page"),
    ({"alertname": "SomeOtherAlert", "team": "x"}, "default"),
    ({"alertname": "SomeOtherAlert", "severity": "none"}, "default"),
]


@pytest.mark.parametrize("labels,receiver", ROUTES, ids=[f"{r[1]}-{r[0].get('severity', 'none')}" for r in ROUTES])
def test_route(labels: dict[str, str], receiver: str) -> None:
    res = amtool_routes(AM_CONFIG, labels, receiver)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == receiver
    # --verify.receivers really verifies: a wrong receiver fails.
    wrong = "default" if receiver != "default" else "page"
    assert amtool_routes(AM_CONFIG, labels, wrong).returncode != 0


def test_every_alert_rule_routes_by_its_severity() -> None:
    for path in sorted((REPO / "prometheus" / "rules").glob("alerts-*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                labels = {"alertname": rule["alert"], "model": "m", **rule["labels"]}
                res = amtool_routes(AM_CONFIG, labels, RECEIVER_OF_SEVERITY[rule["labels"]["severity"]])
                assert res.returncode == 0, f"{rule['alert']}: {res.stdout}{res.stderr}"


def test_commented_examples_are_valid_config(tmp_path: Path) -> None:
    """Uncommenting the Slack and email examples gives a valid config."""
    out, inside, blocks = [], False, 0
    for line in AM_CONFIG.read_text().splitlines():
        if re.match(r"\s*# BEGIN example", line):
            inside, blocks = True, blocks + 1
            continue
        if re.match(r"\s*# END example", line):
            inside = False
            continue
        out.append(re.sub(r"^(\s*)# ", r"\1", line) if inside else line)
    assert blocks == 2
    text = "\n".join(out)
    assert "slack_configs:" in text and "email_configs:" in text
    path = tmp_path / "alertmanager.yml"
    path.write_text(text.replace("  - templates/", f"  - {AM_DIR}/templates/"))
    res = run(["amtool", "check-config", str(path)])
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = yaml.safe_load(text)
    page = next(r for r in cfg["receivers"] if r["name"] == "page")
    assert "modelmon.text" in page["slack_configs"][0]["text"]


# ------------------------------------------------------- webhook URL from the environment


def test_webhook_url_comes_from_the_environment(tmp_path: Path) -> None:
    url = "http://10.1.2.3:8080/hooks/alerts?token=a&b=1"
    path = render_config(tmp_path / "am.yml", url)
    cfg = yaml.safe_load(path.read_text())
    urls = [w["url"] for r in cfg["receivers"] for w in r.get("webhook_configs", [])]
    assert urls == [url] * 3
    assert cfg["templates"] == [f"{AM_DIR}/templates/*.tmpl"]
    res = run(["amtool", "check-config", str(path)])
    assert res.returncode == 0, res.stdout + res.stderr
    # Without the variable the in-network placeholder stays.
    cfg = yaml.safe_load(render_config(tmp_path / "am2.yml", None).read_text())
    assert {w["url"] for r in cfg["receivers"] for w in r.get("webhook_configs", [])} == {PLACEHOLDER_URL}
    # A malformed URL is refused with a message, not rendered.
    res = run(["sh", str(AM_DIR / "render-config.sh"), str(AM_CONFIG), str(tmp_path / "bad.yml")],
              env={"MODELMON_WEBHOOK_URL": "webhook:5001"})
    assert res.returncode == 2 and "MODELMON_WEBHOOK_URL" in res.stderr
    assert not (tmp_path / "bad.yml").exists()


@pytest.mark.e2e
def test_entrypoint_runs_alertmanager_on_the_rendered_config(servers: Any, tmp_path: Path) -> None:
    """entrypoint.sh (what compose runs) renders the config from the
    environment and starts Alertmanager on it."""
    binary = require_binary("prometheus-alertmanager")
    port = free_port()
    url = "http://127.0.0.1:9/from-env"

    class Entrypoint:
        process = ServerProcess(
            "alertmanager-entrypoint",
            ["sh", str(AM_DIR / "entrypoint.sh"), f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.path={tmp_path / 'data'}", "--cluster.listen-address=", "--log.level=warn"],
            tmp_path,
            env={"ALERTMANAGER_BIN": binary, "MODELMON_WEBHOOK_URL": url,
                 "MODELMON_ALERTMANAGER_RENDERED": str(tmp_path / "rendered.yml")},
        )

        def stop(self) -> None:
            self.process.stop()

    ep = servers._track(Entrypoint())
    status = wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/api/v2/status", timeout=2).json(), 30,
                        what="Alertmanager started by entrypoint.sh")
    loaded = yaml.safe_load(status["config"]["original"])
    assert {w["url"] for r in loaded["receivers"] for w in r.get("webhook_configs", [])} == {url}
    assert ep.process.alive()


# ------------------------------------------------------------------------ templates


def test_templates_print_summary_description_model_value_and_runbook(tmp_path: Path) -> None:
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    alert = {
        "status": "firing",
        "labels": {"alertname": "ModelmonFeatureDrift", "model": "fraud", "feature": "amount", "method": "psi",
                   "severity": "critical"},
        "annotations": {"summary": "Feature amount of model fraud has shifted significantly across the fleet.",
                        "description": "The fleet-wide PSI of feature amount of fraud is 0.31.",
                        "value": "0.31", "runbook_url": "https://example.org/runbook.md#modelmonfeaturedrift"},
        "startsAt": now.isoformat(), "endsAt": "0001-01-01T00:00:00Z",
    }
    resolved = {**alert, "status": "resolved", "labels": {**alert["labels"], "feature": "age"},
                "endsAt": (now + dt.timedelta(minutes=7)).isoformat()}
    data = {"receiver": "page", "status": "firing", "alerts": [alert, resolved],
            "groupLabels": {"alertname": "ModelmonFeatureDrift", "model": "fraud"},
            "commonLabels": {"alertname": "ModelmonFeatureDrift", "model": "fraud", "severity": "critical", "method": "psi"},
            "commonAnnotations": {}, "externalURL": "http://alertmanager:9093"}
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data))

    def render(name: str, kind: str = "text") -> str:
        res = run(["amtool", "template", "render", f"--template.glob={AM_DIR}/templates/*.tmpl",
                   f"--template.text={{{{ template \"{name}\" . }}}}", f"--template.data={path}", f"--template.type={kind}"])
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    assert render("modelmon.title").strip() == "[FIRING:1] ModelmonFeatureDrift (fraud)"
    text = render("modelmon.text")
    for needle in (alert["annotations"]["summary"], alert["annotations"]["description"], "Model: fraud",
                   "Feature: amount", "Value: 0.31", "Runbook: https://example.org/runbook.md#modelmonfeaturedrift",
                   "[RESOLVED]", "Feature: age", "Resolved: 2026-01-02 03:11:05 UTC"):
        assert needle in text, (needle, text)
    # A resolved alert says that its condition ended; its present-tense annotations are framed as the past.
    firing_block, resolved_block = text.split("\n\n")
    assert firing_block.startswith(f"[FIRING] CRITICAL: {alert['annotations']['summary']}\n"), firing_block
    assert resolved_block.startswith(
        "[RESOLVED] CRITICAL: Ended: ModelmonFeatureDrift is no longer firing. It was: "
        f"{alert['annotations']['summary']}\nLast seen while firing: {alert['annotations']['description']}"), \
        resolved_block
    assert "Last value while firing: 0.31" in resolved_block and "\nValue: 0.31" in firing_block
    assert "Ended" not in firing_block and "Resolved:" not in firing_block
    html = render("modelmon.html", "html")
    assert "Ended: ModelmonFeatureDrift is no longer firing." in html
    assert "<td>Last value while firing</td><td>0.31</td>" in html
    assert '<a href="https://example.org/runbook.md#modelmonfeaturedrift">' in html
    assert "<td>Value</td><td>0.31</td>" in html and "<td>Model</td><td>fraud</td>" in html
    assert render("modelmon.runbook").strip() == alert["annotations"]["runbook_url"]


# ------------------------------------------------------ inhibition on a real Alertmanager


def _alert(name: str, severity: str, ends: dt.datetime | None = None, **labels: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "labels": {"alertname": name, "severity": severity, **labels},
        "annotations": {"summary": f"{name} {labels}", "description": "test", "value": "1",
                        "runbook_url": f"https://example.org/runbook.md#{name.lower()}"},
        # Now, not earlier: Alertmanager flushes a new group at once (skipping
        # group_wait) for an alert that started more than group_wait ago, which
        # could race with the inhibitor taking in the source alert posted in
        # the same request.
        "startsAt": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    if ends is not None:
        out["endsAt"] = ends.isoformat()
    return out


@pytest.mark.e2e
def test_routing_and_inhibition_on_a_real_alertmanager(servers: Any, tmp_path: Path) -> None:
    webhook = servers.webhook()
    am = servers.alertmanager(test_config_for_tests(tmp_path, webhook.url))
    down_a = _alert("ModelmonExporterDown", "critical", model="a", job="modelmon", instance="a:9874")
    alerts = {
        "down_a": down_a,
        "errors_a": _alert("ModelmonHighErrorRatio", "warning", model="a"),                 # silenced by down_a
        "drift_a": _alert("ModelmonFeatureDrift", "warning", model="a", feature="x", method="ks"),  # silenced by down_a
        "lat_b_crit": _alert("ModelmonHighLatencyP95", "critical", model="b"),
        "lat_b_warn": _alert("ModelmonHighLatencyP95", "warning", model="b"),               # silenced by the critical
        "errors_b": _alert("ModelmonHighErrorRatio", "warning", model="b"),                 # another alert: delivered
        "drift_c_crit": _alert("ModelmonFeatureDrift", "critical", model="c", feature="x", method="psi"),
        "drift_c_x": _alert("ModelmonFeatureDrift", "warning", model="c", feature="x", method="wasserstein"),  # silenced
        "drift_c_y": _alert("ModelmonFeatureDrift", "warning", model="c", feature="y", method="wasserstein"),  # other feature
        "down_nomodel": _alert("ModelmonExporterDown", "critical", job="modelmon", instance="d:9874"),
        "errors_e": _alert("ModelmonHighErrorRatio", "warning", model="e"),   # not silenced by a model-less down
        "absent": _alert("ModelmonExporterAbsent", "critical", job="modelmon"),  # nor is this
        "info_f": _alert("ModelmonReferenceProfileMismatch", "info", model="f"),  # routed nowhere
    }
    r = requests.post(f"{am.url}/api/v2/alerts", json=list(alerts.values()), timeout=10)
    assert r.status_code == 200, r.text
    expected = {"down_a": "page", "lat_b_crit": "page", "errors_b": "ticket", "drift_c_crit": "page",
                "drift_c_y": "ticket", "down_nomodel": "page", "errors_e": "ticket", "absent": "page"}

    def delivered() -> dict[str, str]:
        out = {}
        with webhook._lock:
            notes = list(webhook.notifications)
        for n in notes:
            for a in n["alerts"]:
                key = next(k for k, v in alerts.items() if v["labels"] == a["labels"])
                out[key] = n["receiver"]
        return out

    wait_until(lambda: set(delivered()) >= set(expected), 30, what=f"notifications for {sorted(expected)}")
    # Alertmanager's own view: the silenced alerts are suppressed by inhibition.
    state = {next(k for k, v in alerts.items() if v["labels"] == a["labels"]): a["status"] for a in am.alerts()}
    for key in ("errors_a", "drift_a", "lat_b_warn", "drift_c_x"):
        assert state[key]["state"] == "suppressed" and state[key]["inhibitedBy"], (key, state[key])
    for key in expected:
        assert state[key]["state"] == "active", (key, state[key])
    # Several group intervals later nothing else has arrived.
    time.sleep(3)
    assert delivered() == expected, webhook.notifications

    # ExporterDown resolves: the model's silenced alerts are delivered now.
    resolved = {**down_a, "endsAt": dt.datetime.now(dt.timezone.utc).isoformat()}
    r = requests.post(f"{am.url}/api/v2/alerts", json=[resolved], timeout=10)
    assert r.status_code == 200, r.text
    wait_until(lambda: {"errors_a", "drift_a"} <= set(delivered()), 30, what="alerts released by the resolved ExporterDown")
    assert delivered()["errors_a"] == "ticket"
    assert webhook.wait_for(10, status="resolved", alertname="ModelmonExporterDown", model="a")
    assert "info_f" not in delivered() and "lat_b_warn" not in delivered() and "drift_c_x" not in delivered()
