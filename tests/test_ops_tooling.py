"""Maintainer tooling: ruff and mypy are configured in pyproject.toml with the
project's rule set, the whole tree is clean, .ci/run lints before it tests
(and a lint failure fails CI), the test extra installs the tools, and
pre-commit runs the same tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _tool(module: str) -> None:
    if subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True).returncode != 0:
        pytest.fail(f"{module} is not installed: pip install -e '.[test]' (or scripts/install-deps.sh)", pytrace=False)


def test_ruff_rule_set() -> None:
    lint = PYPROJECT["tool"]["ruff"]["lint"]
    assert {"E", "F", "B", "I", "UP", "SLF001", "PLC0415"} <= set(lint["select"])
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py311"
    assert PYPROJECT["tool"]["mypy"]["files"] == ["exporter/modelmon"]


def test_whole_tree_is_ruff_clean() -> None:
    _tool("ruff")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_package_is_mypy_clean() -> None:
    _tool("mypy")
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "MYPY_CACHE_DIR": str(REPO / ".mypy_cache")})
    assert r.returncode == 0, r.stdout + r.stderr


def test_type_ignores_name_their_error_code() -> None:
    bare = [f"{path.relative_to(REPO)}:{n}" for path in sorted((REPO / "exporter").rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if "# type: ignore" in line and "# type: ignore[" not in line]
    assert bare == []


def test_lint_tools_come_with_the_test_extra() -> None:
    """A fresh machine gets ruff, mypy and the stubs from scripts/install-deps.sh (pip install -e '.[test]')."""
    names = {re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower()
             for req in PYPROJECT["project"]["optional-dependencies"]["test"]}
    assert {"ruff", "mypy", "types-pyyaml", "types-requests"} <= names
    assert '".[test]"' in (REPO / "scripts" / "install-deps.sh").read_text()
    # Packages with stubs installed are type-checked, not skipped.
    skipped = {m for o in PYPROJECT["tool"]["mypy"].get("overrides", []) if o.get("ignore_missing_imports")
               for m in o["module"]}
    assert not skipped & {"yaml.*", "requests.*"}


def _ci_copy(tmp_path: Path, lint_rc: int, test_rc: int) -> Path:
    """.ci/run beside stand-in scripts that record that they ran and exit with the given codes."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "run", tmp_path / ".ci" / "run")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name, rc in (("install-deps", 0), ("lint", lint_rc), ("test", test_rc)):
        (scripts / f"{name}.sh").write_text(f'echo {name} >> "$(dirname "$0")/../ran"\nexit {rc}\n')
    return tmp_path


@pytest.mark.parametrize(("lint_rc", "test_rc", "want_rc", "ran", "message"), [
    (0, 0, 0, ["install-deps", "lint", "test"], ""),
    (1, 0, 1, ["install-deps", "lint"], "CI: lint failed"),
    (0, 1, 1, ["install-deps", "lint", "test"], ""),
    (0, 5, 1, ["install-deps", "lint", "test"], "CI: no tests were collected"),
])
def test_ci_lints_before_testing(tmp_path: Path, lint_rc: int, test_rc: int, want_rc: int, ran: list[str],
                                 message: str) -> None:
    root = _ci_copy(tmp_path, lint_rc, test_rc)
    r = subprocess.run(["bash", str(root / ".ci" / "run")], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == want_rc, r.stdout + r.stderr
    assert (root / "ran").read_text().split() == ran
    assert message in r.stderr


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
