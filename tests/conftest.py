"""Shared fixtures.  Real servers come from factories that stop everything they
started when the test ends, and print the servers' logs when it failed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import (  # noqa: E402
    AlertmanagerServer,
    ExporterServer,
    PrometheusServer,
    WebhookReceiver,
)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))


@pytest.fixture
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator["ServerFactory"]:
    factory = ServerFactory(tmp_path)
    yield factory
    factory.stop_all(show_logs=_failed(request))


class ServerFactory:
    """Starts real servers for one test; ``stop_all`` runs in the finaliser."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.started: list[Any] = []

    def _track(self, server: Any) -> Any:
        self.started.append(server)
        return server

    def exporter(self, *args: str, env: dict[str, str] | None = None, port: int | None = None) -> ExporterServer:
        """``modelmon serve`` on ``port`` (default: a free one).  Passing ports
        chosen with ``free_port()`` lets a test start Prometheus first, so the
        first scrape follows the exporter's start within a scrape interval."""
        return self._track(ExporterServer(self.workdir, list(args), env, port=port))

    def prometheus(self, config: dict[str, Any] | str, rule_files: list[Path] | None = None, **kw: Any) -> PrometheusServer:
        return self._track(PrometheusServer(self.workdir, config, rule_files, **kw))

    def alertmanager(self, config: str) -> AlertmanagerServer:
        return self._track(AlertmanagerServer(self.workdir, config))

    def webhook(self) -> WebhookReceiver:
        return self._track(WebhookReceiver())

    def stop_all(self, show_logs: bool = False) -> None:
        for server in reversed(self.started):
            proc = getattr(server, "process", None)
            if show_logs and proc is not None:
                print(f"\n----- log of {proc.name} (pid {proc.pid}) -----\n{proc.log_tail()}")
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                print(f"error stopping {server}: {exc}")
        self.started.clear()


def scrape_config(targets: list[str], interval: str = "1s", job: str = "modelmon", **extra: Any) -> dict[str, Any]:
    """A minimal Prometheus config scraping ``targets`` every ``interval``."""
    cfg: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
def make_scrape_config() -> Callable[..., dict[str, Any]]:
    return scrape_config
