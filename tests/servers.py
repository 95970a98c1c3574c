"""Starting real servers in tests: the exporter, Prometheus, Alertmanager, and
an in-test webhook receiver.

Everything binds to 127.0.0.1 on a free port with its own temp dir, is polled
for readiness (never a blind sleep), and is stopped by PID (SIGTERM, then
SIGKILL) by the fixtures in ``conftest.py``, which also print each server's log
when a test fails.  A missing binary fails the test with the install command;
it never skips silently.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
#: Seconds each exporter subprocess waits before starting (unset: none), e.g.
#: ``MODELMON_TEST_EXPORTER_START_DELAY=6 pytest -m e2e`` to check that tests
#: wait for readiness instead of relying on a quick start.
START_DELAY_ENV = "MODELMON_TEST_EXPORTER_START_DELAY"
INSTALL_HINT = "bash scripts/install-deps.sh (Debian: prometheus prometheus-alertmanager docker-compose kubernetes-client)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample called ``name`` whose labels include ``labels`` in a
    /metrics text (parsed with prometheus_client's own parser), or None when there is none."""
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def require_binary(name: str) -> str:
    """Path of a server binary, or fail the test saying how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH; install it with: {INSTALL_HINT}", pytrace=False)
    return path


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.25, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # servers refuse connections while starting
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


class ServerProcess:
    """A subprocess with its log file, stopped by PID."""

    def __init__(self, name: str, cmd: list[str], workdir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.cmd = cmd
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
        self._terminated = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def terminate(self) -> None:
        """Send SIGTERM without waiting (``stop`` then waits), so that several
        servers shut down at the same time."""
        if self.proc.poll() is None and not self._terminated:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._terminated = True

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            try:
                self.terminate()
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        self._log.close()
        return self.proc.returncode


class HttpServer:
    """Base for servers reached over HTTP."""

    process: ServerProcess
    url: str

    def wait_ready(self, path: str, timeout: float = 30.0) -> None:
        def ok() -> bool:
            if not self.process.alive():
                raise RuntimeError(f"{self.process.name} exited early:\n{self.process.log_tail()}")
            return requests.get(self.url + path, timeout=2).status_code == 200

        try:
            wait_until(ok, timeout, what=f"{self.process.name} at {self.url}{path}")
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)

    def stop(self) -> None:
        self.process.stop()


class ExporterServer(HttpServer):
    """``modelmon serve`` in a subprocess (the real CLI, as a user runs it)."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str] | None = None, port: int | None = None):
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        cmd = [sys.executable, "-m", "modelmon", "serve", f"--web.listen-address={self.address}", *args]
        if delay := os.environ.get(START_DELAY_ENV):
            # A slow start on demand, to reproduce a busy machine (same PID after exec).
            cmd = ["sh", "-c", f'sleep {float(delay):g}; exec "$@"', "sh", *cmd]
        self.process = ServerProcess(f"modelmon-{self.port}", cmd, workdir, env)
        self.wait_ready("/-/ready")

    def metrics(self) -> str:
        return requests.get(self.url + "/metrics", timeout=10).text


class PrometheusServer(HttpServer):
    """A real Prometheus with a config written by the test."""

    def __init__(self, workdir: Path, config: dict[str, Any] | str, rule_files: list[Path] | None = None,
                 extra_args: list[str] | None = None):
        binary = require_binary("prometheus")
        self.dir = workdir / f"prometheus-{free_port()}"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = self.dir / "prometheus.yml"
        self.config = config
        self._write_config(rule_files)
        cmd = [
            binary, f"--config.file={self.config_path}", f"--web.listen-address=127.0.0.1:{self.port}",
            f"--storage.tsdb.path={self.dir / 'data'}", "--web.enable-lifecycle", "--log.level=warn",
            *(extra_args or []),
        ]
        self.process = ServerProcess(f"prometheus-{self.port}", cmd, self.dir)
        self.wait_ready("/-/ready")

    def _write_config(self, rule_files: list[Path] | None) -> None:
        config = self.config
        if isinstance(config, dict):
            config = dict(config)
            if rule_files:
                config["rule_files"] = [str(p) for p in rule_files]
            config = yaml.safe_dump(config, sort_keys=False)
        elif rule_files:
            raise ValueError("rule_files need a config given as a dict")
        self.config_path.write_text(config)

    def load_rules(self, rule_files: list[Path]) -> None:
        """Rewrite the config with ``rule_files`` and reload it (scrapes go on
        untouched: the scrape config is unchanged).  Rule evaluation starts
        from here, so a test can start Prometheus scraping before its targets
        listen and only evaluate rules once every target is up."""
        self._write_config(rule_files)
        r = requests.post(self.url + "/-/reload", timeout=30)
        assert r.status_code == 200, f"Prometheus reload failed: {r.status_code} {r.text}\n{self.process.log_tail()}"
        expected = sum(len(yaml.safe_load(p.read_text())["groups"]) for p in rule_files)
        groups = self.api("rules")["groups"]
        assert len(groups) == expected, f"{len(groups)} rule groups loaded, expected {expected}"

    def api(self, path: str, **params: Any) -> Any:
        r = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus API {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the result vector."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] == "vector" else [{"value": data["result"]}]

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it returns nothing."""
        res = self.query(expr)
        if not res:
            return None
        assert len(res) == 1, f"{expr} returned {len(res)} series: {res}"
        return float(res[0]["value"][1])

    def wait_for(self, expr: str, timeout: float = 60.0,
                 check: Callable[[list[dict[str, Any]]], bool] = bool) -> list[dict[str, Any]]:
        """Poll an expression until its result satisfies ``check`` (default: non-empty)."""
        def satisfied() -> list[dict[str, Any]] | None:
            result = self.query(expr)
            return result if check(result) else None

        return wait_until(satisfied, timeout, interval=0.5, what=f"PromQL {expr!r}")

    def wait_targets_up(self, n: int = 1, timeout: float = 60.0) -> None:
        wait_until(lambda: len([t for t in self.api("targets")["activeTargets"] if t["health"] == "up"]) >= n,
                   timeout, interval=0.5, what=f"{n} scrape target(s) up")

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]


class AlertmanagerServer(HttpServer):
    """A real Alertmanager (Debian's ``prometheus-alertmanager``)."""

    def __init__(self, workdir: Path, config: str):
        binary = require_binary("prometheus-alertmanager")
        self.dir = workdir / f"alertmanager-{free_port()}"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg_path = self.dir / "alertmanager.yml"
        cfg_path.write_text(config)
        cmd = [
            binary, f"--config.file={cfg_path}", f"--web.listen-address=127.0.0.1:{self.port}",
            f"--storage.path={self.dir / 'data'}", "--cluster.listen-address=", "--log.level=warn",
        ]
        self.process = ServerProcess(f"alertmanager-{self.port}", cmd, self.dir)
        self.wait_ready("/-/ready")

    def alerts(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/api/v2/alerts", timeout=10).json()


class WebhookReceiver:
    """An in-test HTTP endpoint collecting Alertmanager webhook notifications."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"raw": body.decode(errors="replace")}
                with receiver._lock:
                    receiver.notifications.append(payload)
                    receiver.received_at.append(time.time())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/webhook"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def alerts(self, status: str | None = None, **labels: str) -> list[dict[str, Any]]:
        """Alerts from all notifications so far, filtered by status and labels."""
        with self._lock:
            out = []
            for n in self.notifications:
                for a in n.get("alerts", []):
                    if status and a.get("status") != status:
                        continue
                    if all(a.get("labels", {}).get(k) == v for k, v in labels.items()):
                        out.append(a)
            return out

    def wait_for(self, timeout: float, status: str | None = None, **labels: str) -> list[dict[str, Any]]:
        return wait_until(lambda: self.alerts(status, **labels), timeout, interval=0.25,
                          what=f"webhook alert status={status} {labels}")

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
