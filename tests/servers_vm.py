"""VictoriaMetrics servers for tests (Debian's ``victoria-metrics`` package):
the single-node database, ``vmagent`` (scrapes, remote-writes) and
``vmalert`` (evaluates Prometheus rule files against it).  Started, polled
and stopped like the servers in ``servers.py``.

VictoriaMetrics hides the newest 30 s from queries by default
(``-search.latencyOffset``), so that slow remote writers are not seen half
written; tests that read seconds-old recordings lower it to 1 s.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from servers import HttpServer, ServerProcess, free_port, wait_until

VM_HINT = "apt-get install -y --no-install-recommends victoria-metrics (or run scripts/install-deps.sh)"


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH; install it with: {VM_HINT}", pytrace=False)
    return path


class VictoriaMetricsServer(HttpServer):
    """Single-node ``victoria-metrics``: Prometheus' query API on /api/v1/, remote write on /api/v1/write."""

    def __init__(self, workdir: Path, latency_offset: str = "1s"):
        binary = _binary("victoria-metrics")
        self.dir = workdir / f"victoria-metrics-{free_port()}"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [binary, f"-httpListenAddr=127.0.0.1:{self.port}", f"-storageDataPath={self.dir / 'data'}",
               "-retentionPeriod=1d", f"-search.latencyOffset={latency_offset}", "-search.disableCache",
               "-loggerLevel=WARN"]
        self.process = ServerProcess(f"victoria-metrics-{self.port}", cmd, self.dir)
        self.wait_ready("/health")

    @property
    def write_url(self) -> str:
        return f"{self.url}/api/v1/write"

    def api(self, path: str, **params: Any) -> Any:
        body = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10).json()
        if body.get("status") != "success":
            raise AssertionError(f"VictoriaMetrics API {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, **params: Any) -> list[dict[str, Any]]:
        data = self.api("query", query=expr, **params)
        return data["result"] if data["resultType"] in ("vector", "matrix") else [{"value": data["result"]}]

    def wait_for(self, expr: str, timeout: float = 60.0,
                 check: Callable[[list[dict[str, Any]]], bool] = bool) -> list[dict[str, Any]]:
        def ready() -> list[dict[str, Any]] | None:
            result = self.query(expr)
            return result if check(result) else None

        return wait_until(ready, timeout, interval=0.5, what=f"MetricsQL {expr!r}")


class VMAgentServer(HttpServer):
    """``vmagent`` scraping with a Prometheus-style config and remote-writing to ``write_url``."""

    def __init__(self, workdir: Path, scrape_config: dict[str, Any], write_url: str):
        binary = _binary("vmagent")
        self.dir = workdir / f"vmagent-{free_port()}"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = self.dir / "scrape.yml"
        cfg.write_text(yaml.safe_dump(scrape_config, sort_keys=False))
        cmd = [binary, f"-httpListenAddr=127.0.0.1:{self.port}", f"-promscrape.config={cfg}",
               f"-remoteWrite.url={write_url}", f"-remoteWrite.tmpDataPath={self.dir / 'queue'}",
               "-remoteWrite.flushInterval=1s", "-loggerLevel=WARN"]
        self.process = ServerProcess(f"vmagent-{self.port}", cmd, self.dir)
        self.wait_ready("/health")


class VMAlertServer(HttpServer):
    """``vmalert`` evaluating ``rule_files`` against ``datasource``, writing
    recordings and alert state back to it and notifying ``notifier``."""

    def __init__(self, workdir: Path, rule_files: list[Path], datasource: str, notifier: str,
                 interval: str = "1s"):
        binary = _binary("vmalert")
        self.dir = workdir / f"vmalert-{free_port()}"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [binary, f"-httpListenAddr=127.0.0.1:{self.port}", *(f"-rule={p}" for p in rule_files),
               f"-datasource.url={datasource}", f"-remoteWrite.url={datasource}", f"-notifier.url={notifier}",
               f"-evaluationInterval={interval}", "-remoteWrite.flushInterval=1s",
               f"-external.url={self.url}", "-loggerLevel=WARN"]
        self.process = ServerProcess(f"vmalert-{self.port}", cmd, self.dir)
        self.wait_ready("/health")

    def groups(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/api/v1/rules", timeout=10).json()["data"]["groups"]

    def alerts(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
