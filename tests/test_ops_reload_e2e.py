"""Config reload on a real ``modelmon serve``: SIGHUP and ``POST /-/reload``
re-read the config and the web config; models whose definition did not
change keep their counters; the log says what changed; a bad or
restart-only config is refused with the reason while the running one keeps
serving."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests

from servers import wait_until

pytestmark = pytest.mark.e2e

CONFIG = """
models:
  - name: a
  - name: b
    thresholds: {{accuracy_min: {b_min}}}
{extra}
windows:
  - {{duration: 5m, max_events: 1000}}
web: {{config_file: web.yml}}
"""


def _web(password: str) -> str:
    return f"basic_auth_users:\n  prom: {bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}\n"


def _value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}{{(.*)}} (\S+)$", line) or re.match(rf"{re.escape(name)} (\S+)$", line)
        if not m:
            continue
        if m.lastindex == 1:
            return float(m.group(1)) if not labels else None
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(2))
    return None


def _log_records(path: Path, msg: str) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == msg:
            out.append(rec)
    return out


def test_sighup_and_post_reload(servers: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "modelmon.yml"
    web = tmp_path / "web.yml"
    cfg.write_text(CONFIG.format(b_min=0.8, extra=""))
    web.write_text(_web("old"))
    exp = servers.exporter("--config", str(cfg), "--web.enable-lifecycle")
    log = exp.process.log_path
    old_auth, new_auth = ("prom", "old"), ("prom", "new")

    def metrics(auth: tuple[str, str] = old_auth) -> str:
        r = requests.get(exp.url + "/metrics", auth=auth, timeout=10)
        assert r.status_code == 200, r.status_code
        return r.text

    def hup_and_wait(msg: str) -> dict[str, Any]:
        before = len(_log_records(log, msg))
        os.kill(exp.process.pid, signal.SIGHUP)
        recs = wait_until(lambda: _log_records(log, msg)[before:], 30, what=f"log line {msg!r}")
        assert exp.process.alive(), exp.process.log_tail()
        return recs[0]

    events = [{"model": m, "latency_seconds": 0.05} for m in ("a", "a", "a", "b", "b")]
    r = requests.post(exp.url + "/api/v1/events", json=events, auth=old_auth, timeout=10)
    assert r.status_code == 200, r.text
    assert _value(metrics(), "modelmon_requests_total", model="a") == 3
    assert _value(metrics(), "modelmon_requests_total", model="b") == 2

    # 1. SIGHUP with b's definition changed, c added, and a new password: a keeps its counters.
    cfg.write_text(CONFIG.format(b_min=0.9, extra="  - name: c"))
    web.write_text(_web("new"))
    rec = hup_and_wait("config reloaded")
    assert (rec["kept"], rec["changed"], rec["added"], rec["removed"]) == (["a"], ["b"], ["c"], [])
    assert rec["trigger"] == "SIGHUP" and rec["web_changed"] is True
    assert requests.get(exp.url + "/metrics", auth=old_auth, timeout=10).status_code == 401
    text = metrics(new_auth)
    assert _value(text, "modelmon_requests_total", model="a") == 3, "a kept its counter"
    assert _value(text, "modelmon_requests_total", model="b") is None, "b restarted afresh"
    assert _value(text, "modelmon_threshold_accuracy_min_ratio", model="b") == 0.9
    assert _value(text, "modelmon_threshold_accuracy_min_ratio", model="c") == 0.85
    assert _value(text, "modelmon_config_last_reload_successful") == 1

    # 2. A broken config is refused with the reason; the running one keeps serving.
    cfg.write_text("models:\n  - name: a\n  - name: a2\n    name: oops\n")
    rec = hup_and_wait("config reload refused, the running config stays")
    assert "duplicate key 'name' at line 4" in rec["error"] and str(cfg) in rec["error"]
    text = metrics(new_auth)
    assert _value(text, "modelmon_requests_total", model="a") == 3
    assert _value(text, "modelmon_threshold_accuracy_min_ratio", model="c") == 0.85
    assert _value(text, "modelmon_config_last_reload_successful") == 0

    # 3. POST /-/reload: a change that needs a restart is refused (500 with the reason, as Prometheus) ...
    cfg.write_text(CONFIG.format(b_min=0.9, extra="  - name: c") + "ingest: {max_body_bytes: 1000}\n")
    r = requests.post(exp.url + "/-/reload", auth=new_auth, timeout=30)
    assert r.status_code == 500 and "ingest: changed" in r.json()["error"] and "restart" in r.json()["error"]
    # ... and a good one applies and says what changed.
    cfg.write_text(CONFIG.format(b_min=0.9, extra=""))
    r = requests.post(exp.url + "/-/reload", auth=new_auth, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["kept"] == ["a", "b"] and r.json()["removed"] == ["c"]
    text = metrics(new_auth)
    assert _value(text, "modelmon_requests_total", model="a") == 3
    assert _value(text, "modelmon_threshold_accuracy_min_ratio", model="c") is None
    assert _value(text, "modelmon_config_last_reload_successful") == 1
    assert exp.process.alive()


def test_reload_route_needs_the_lifecycle_flag(servers: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "modelmon.yml"
    cfg.write_text("models:\n  - name: a\n")
    exp = servers.exporter("--config", str(cfg))
    r = requests.post(exp.url + "/-/reload", timeout=10)
    assert r.status_code == 403 and "--web.enable-lifecycle" in r.json()["error"]
    # SIGHUP still reloads.
    os.kill(exp.process.pid, signal.SIGHUP)
    wait_until(lambda: _log_records(exp.process.log_path, "config reloaded"), 30, what="reload by SIGHUP")
    assert exp.process.alive()
