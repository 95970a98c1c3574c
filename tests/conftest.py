"""Shared fixtures.  Real servers come from factories that stop everything they
started when the test ends, and print the servers' logs when it failed.

A test that starts a server process (Prometheus, Alertmanager, the other
Debian servers) or a ``modelmon`` subprocess must be marked ``e2e``, so that
``pytest -m "not e2e"`` is a quick loop that starts none: an audit hook refuses
such a process in any other test and fails the test, naming the command."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The tests exercise this checkout's package, in process and in every
# ``python -m modelmon`` subprocess, whichever checkout pip's editable install
# points at.
_EXPORTER = str(Path(__file__).resolve().parent.parent / "exporter")
sys.path.insert(0, _EXPORTER)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_EXPORTER, os.environ.get("PYTHONPATH")) if p)

from servers import (  # noqa: E402
    AlertmanagerServer,
    ExporterServer,
    PrometheusServer,
    WebhookReceiver,
)

#: Executables that are servers (Debian's names and upstream's).
SERVER_BINARIES = frozenset({
    "prometheus", "prometheus-alertmanager", "alertmanager", "prometheus-node-exporter", "node_exporter",
    "prometheus-blackbox-exporter", "blackbox_exporter", "victoria-metrics", "vmagent", "vmalert", "nginx",
    "grafana-server", "modelmon",
})
SHELLS = frozenset({"sh", "bash", "dash"})
#: Audit events that start a process -> index of their argv (or command) argument.
SPAWN_EVENTS = MappingProxyType({"subprocess.Popen": 1, "os.exec": 1, "os.posix_spawn": 1, "os.spawn": 2, "os.system": 0})


def spawned_server(argv: list[str]) -> str | None:
    """What server or ``modelmon`` command ``argv`` starts, or None.  Looks at
    the executable, ``python -m modelmon``, and every word of a shell script."""
    if not argv:
        return None
    shell = os.path.basename(argv[0]) in SHELLS
    words = [argv[0]]
    for arg in argv[1:]:
        if shell and any(c.isspace() for c in arg):
            try:
                words += shlex.split(arg, comments=True)
            except ValueError:  # unbalanced quotes: plain words are good enough here
                words += arg.split()
        else:
            words.append(arg)
    for i, word in enumerate(words):
        if (i == 0 or shell) and os.path.basename(word) in SERVER_BINARIES:
            return os.path.basename(word)
        if word == "-m" and i + 1 < len(words) and words[i + 1].split(".")[0] == "modelmon":
            return "python -m " + words[i + 1]
    return None


class _ServerGuard:
    """Refuses server processes while a test without the ``e2e`` marker runs."""

    def __init__(self) -> None:
        self.item: pytest.Item | None = None
        self.refused: list[str] = []

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if self.item is None or event not in SPAWN_EVENTS:
            return
        argv = args[SPAWN_EVENTS[event]]
        if isinstance(argv, (str, bytes)):
            argv = ["sh", "-c", os.fsdecode(argv)]
        try:
            argv = [os.fsdecode(a) for a in argv]
        except TypeError:
            return
        what = spawned_server(argv)
        if what is not None:
            self.refused.append(f"{what}: {shlex.join(argv)}")
            raise RuntimeError(f"{self.item.nodeid} starts {what} but is not marked e2e (pytest.mark.e2e)")


GUARD = _ServerGuard()


def pytest_configure(config: pytest.Config) -> None:
    if not getattr(sys, "_modelmon_server_guard", False):  # one hook per interpreter, even with pytester
        sys.addaudithook(lambda event, args: GUARD.audit(event, args))
        sys._modelmon_server_guard = True  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests against a model server installed outside the project (``mlserver``
    marker: MLServer needs its own 500 MB virtual environment) run only when
    MODELMON_MLSERVER names its binary; then a missing binary fails the test.
    They are deselected otherwise, never skipped."""
    if os.environ.get("MODELMON_MLSERVER"):
        return
    keep = [i for i in items if not i.get_closest_marker("mlserver")]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("mlserver")])
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    GUARD.item = None if item.get_closest_marker("e2e") else item
    GUARD.refused = []
    try:
        yield
    finally:
        GUARD.item = None


@pytest.fixture(autouse=True)
def _no_server_without_e2e(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    call = getattr(request.node, "rep_call", None)
    if GUARD.item is request.node and GUARD.refused and not (call is not None and call.failed):
        pytest.fail("not marked e2e, yet starts server processes:\n  " + "\n  ".join(GUARD.refused), pytrace=False)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))


@pytest.fixture
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerFactory]:
    if GUARD.item is request.node:
        pytest.fail(f"{request.node.nodeid} uses the servers fixture but is not marked e2e (pytest.mark.e2e)",
                    pytrace=False)
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
        # SIGTERM to every process first: they shut down in parallel, not one after another.
        for server in reversed(self.started):
            proc = getattr(server, "process", None)
            if proc is not None:
                proc.terminate()
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
