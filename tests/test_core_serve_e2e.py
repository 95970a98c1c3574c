"""``modelmon serve`` as a user runs it: /metrics lint-clean, content
negotiation, health endpoints, clean shutdown, clear start-up errors."""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from servers import require_binary, wait_until

#: Every test here runs ``modelmon`` in a subprocess.
pytestmark = pytest.mark.e2e


def test_metrics_pass_promtool_lint(servers) -> None:
    exp = servers.exporter("--scenario=incident", "--anomaly-after=0", "--seed=1")
    # Wait until drift and quality have data, so every family is in the output.
    wait_until(lambda: "modelmon_drift_score{" in exp.metrics() and "modelmon_quality_accuracy_ratio{" in exp.metrics(),
               30, what="drift and accuracy in /metrics")
    body = exp.metrics()
    promtool = require_binary("promtool")
    res = subprocess.run([promtool, "check", "metrics"], input=body.encode(), capture_output=True, timeout=30)
    assert res.returncode == 0 and res.stdout == b"" and res.stderr == b"", (res.stdout + res.stderr).decode()
    for name in ("modelmon_requests_total", "modelmon_request_duration_seconds_bucket", "modelmon_model_info",
                 "modelmon_events_accepted_total", "modelmon_feature_bin_values_total", "process_cpu_seconds_total"):
        assert name in body


def test_content_negotiation_and_pages(servers) -> None:
    exp = servers.exporter("--seed=1")
    r = requests.get(exp.url + "/metrics", headers={"Accept-Encoding": "gzip"}, stream=True, timeout=10)
    assert r.headers["Content-Encoding"] == "gzip"
    assert b"modelmon_requests_total" in gzip.decompress(r.raw.read())
    r = requests.get(exp.url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}, timeout=10)
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")
    assert 'href="/metrics"' in requests.get(exp.url + "/", timeout=10).text
    assert requests.get(exp.url + "/-/healthy", timeout=10).status_code == 200
    assert requests.get(exp.url + "/-/ready", timeout=10).status_code == 200
    assert requests.get(exp.url + "/nope", timeout=10).status_code == 404


def test_sigterm_shuts_down_cleanly_with_json_logs(servers) -> None:
    exp = servers.exporter("--seed=1")
    exp.process.proc.send_signal(signal.SIGTERM)
    assert exp.process.proc.wait(timeout=10) == 0
    log = exp.process.log_path.read_text()
    assert '"msg": "exporter stopped"' in log
    import json

    for line in log.splitlines():
        json.loads(line)  # every line is a JSON object


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelmon", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_bad_config_fails_fast_naming_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yml"
    cfg.write_text("models:\n  - name: m\n    features:\n      - {name: a, type: text}\n")
    for cmd in (["serve", f"--config={cfg}", "--web.listen-address=127.0.0.1:0"], ["check-config", str(cfg)]):
        res = _run(*cmd, cwd=tmp_path)
        assert res.returncode == 2
        assert f"{cfg}: models[0].features[0].type: must be one of numerical, categorical" in res.stderr


def test_check_config_accepts_good_config(tmp_path: Path) -> None:
    (tmp_path / "ref.csv").write_text("a,b\n1,x\n2,y\n3,x\n")
    cfg = tmp_path / "ok.yml"
    cfg.write_text("models:\n  - name: m\n    features: [{name: a}, {name: b, type: categorical}]\n    reference: {path: ref.csv}\n")
    res = _run("check-config", str(cfg), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout
    (tmp_path / "ref.csv").unlink()
    res = _run("check-config", str(cfg), cwd=tmp_path)
    assert res.returncode == 2 and "models[0].reference.path" in res.stderr and "no such file" in res.stderr


def test_bad_flags_are_reported(tmp_path: Path) -> None:
    res = _run("serve", "--scenario=chaos", "--web.listen-address=127.0.0.1:0", cwd=tmp_path)
    assert res.returncode == 2 and "--scenario: must be one of" in res.stderr
    res = _run("serve", "--web.listen-address=nonsense", cwd=tmp_path)
    assert res.returncode == 2 and "invalid listen address" in res.stderr
