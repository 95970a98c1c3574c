"""Maintainer tooling: ruff and mypy are configured in pyproject.toml with the
project's rule set, pre-commit runs the same tools, and the modules already
brought to that standard stay clean (scripts/lint.sh checks the whole tree)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: Files kept ruff- and mypy-clean already; the rest of the tree is reported by scripts/lint.sh.
CLEAN = ["exporter/modelmon/stack.py", "exporter/modelmon/preflight.py", "exporter/modelmon/cli.py",
         "deploy/kubernetes/generate.py", "tests/test_ops_kubernetes.py", "tests/test_compose_local_stack.py",
         "tests/test_compose_local_stack_rules.py", "tests/test_core_config_preflight.py",
         "tests/test_ops_packaging.py", "tests/test_ops_tooling.py", "exporter/modelmon/reload.py",
         "tests/test_ops_reload_plan.py", "tests/test_ops_reload_e2e.py"]


def _tool(module: str) -> None:
    if subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True).returncode != 0:
        pytest.fail(f"{module} is not installed: pip install -e '.[test]' (or scripts/install-deps.sh)", pytrace=False)


def test_ruff_rule_set() -> None:
    lint = PYPROJECT["tool"]["ruff"]["lint"]
    assert {"E", "F", "B", "I", "UP", "SLF001", "PLC0415"} <= set(lint["select"])
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py311"
    assert PYPROJECT["tool"]["mypy"]["files"] == ["exporter/modelmon"]


def test_owned_files_are_ruff_clean() -> None:
    _tool("ruff")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", *CLEAN], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_owned_modules_are_mypy_clean() -> None:
    _tool("mypy")
    modules = [f for f in CLEAN if f.startswith("exporter/")]
    r = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", *modules], cwd=REPO,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "MYPY_CACHE_DIR": str(REPO / ".mypy_cache")})
    assert r.returncode == 0, r.stdout + r.stderr


def test_pre_commit_runs_the_same_tools() -> None:
    cfg = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    hooks = {h["id"]: h for repo in cfg["repos"] for h in repo["hooks"]}
    assert {"ruff", "mypy", "dashboards-generated", "kubernetes-generated"} <= set(hooks)
    assert hooks["ruff"]["entry"].startswith("python3 -m ruff check")
    assert hooks["mypy"]["entry"] == "python3 -m mypy" and hooks["mypy"]["pass_filenames"] is False
    for hook in ("dashboards-generated", "kubernetes-generated"):
        script = hooks[hook]["entry"].split()[1]
        assert (REPO / script).is_file() and hooks[hook]["entry"].endswith("--check")
    lint = REPO / "scripts" / "lint.sh"
    assert os.access(lint, os.X_OK) and shutil.which("bash")
