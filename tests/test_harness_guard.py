"""The test harness keeps ``pytest -m "not e2e"`` free of server processes:
conftest.py refuses a server or ``modelmon`` subprocess in a test without the
``e2e`` marker and fails that test, even when it swallows the refusal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import spawned_server

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("argv, expected", [
    (["/usr/bin/prometheus", "--config.file=x"], "prometheus"),
    (["prometheus-alertmanager", "--config.file=x"], "prometheus-alertmanager"),
    ([sys.executable, "-m", "modelmon", "serve"], "python -m modelmon"),
    (["python3", "-m", "modelmon.stack"], "python -m modelmon.stack"),
    (["/venv/bin/modelmon", "drift"], "modelmon"),
    (["bash", "-e", "-c", "set -x\nmodelmon gate --gate g.yml | tee out"], "modelmon"),
    (["sh", "-c", "sleep 1; exec vmagent -promscrape.config=x"], "vmagent"),
    (["sh", "-c", "echo 'unbalanced; nginx -g daemon"], "nginx"),
    # Not servers: the checkers, other scripts, and paths that merely name one.
    (["promtool", "check", "config", "prometheus/prometheus.yml"], None),
    (["amtool", "check-config", "alertmanager/alertmanager.yml"], None),
    (["ruff", "check", "exporter/modelmon"], None),
    (["kubectl", "kustomize", "deploy/kubernetes/prometheus"], None),
    ([sys.executable, "grafana/generate.py", "--check"], None),
    ([sys.executable, "-m", "pytest", "-m", "not e2e"], None),
    (["docker-compose", "-f", "docker-compose.yml", "config", "-q"], None),
    ([], None),
])
def test_spawned_server_names_what_starts(argv: list[str], expected: str | None) -> None:
    assert spawned_server(argv) == expected


def test_a_server_in_an_unmarked_test_fails_it(tmp_path: Path) -> None:
    for name in ("conftest.py", "servers.py"):
        shutil.copy(HERE / name, tmp_path / name)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    e2e: starts servers\n")
    (tmp_path / "test_inner.py").write_text(
        "import subprocess, sys\n"
        "import pytest\n"
        "MODELMON = [sys.executable, '-m', 'modelmon', '--help']\n"
        "def test_unmarked():\n"
        "    subprocess.run(MODELMON, capture_output=True)\n"
        "def test_unmarked_swallowing():\n"
        "    try:\n"
        "        subprocess.Popen(['prometheus', '--version'])\n"
        "    except RuntimeError:\n"
        "        pass\n"
        "def test_unmarked_servers_fixture(servers):\n"
        "    pass\n"
        "def test_unmarked_checker():\n"
        "    subprocess.run(['true', 'prometheus/prometheus.yml'], check=True)\n"
        "@pytest.mark.e2e\n"
        "def test_marked():\n"
        "    assert subprocess.run([sys.executable, '-c', 'pass', '-m', 'modelmon']).returncode == 0\n"
    )
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"}, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "FAILED test_inner.py::test_unmarked - RuntimeError: test_inner.py::test_unmarked starts python -m modelmon" in out
    assert "ERROR test_inner.py::test_unmarked_swallowing - Failed: not marked e2e, yet starts server processes" in out
    assert "ERROR test_inner.py::test_unmarked_servers_fixture - Failed:" in out and "uses the servers fixture" in out
    assert "PASSED test_inner.py::test_unmarked_checker" in out
    assert "PASSED test_inner.py::test_marked" in out
