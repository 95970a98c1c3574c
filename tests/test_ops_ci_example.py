"""The example CI workflow (examples/ci/github-actions.yml): its stages gate
each other, and its modelmon steps, run as written, pass on the example data
and stop the pipeline on drifted data or a failing evaluation.  The live
canary step runs against a real Prometheus in test_ops_gate.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / "examples" / "ci" / "github-actions.yml"


def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def step(name: str) -> str:
    """The ``run`` script of the step called ``name``."""
    for job in workflow()["jobs"].values():
        for s in job["steps"]:
            if s.get("name") == name:
                return s["run"]
    raise AssertionError(f"no step {name!r} in {WORKFLOW}")


def run_step(name: str, cwd: Path, env: dict[str, str] | None = None, replace: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess:
    """Run a step's script with bash -e as the runner does, in ``cwd`` (which links examples/ to the repo's)."""
    script = step(name)
    for old, new in (replace or {}).items():
        assert old in script, old
        script = script.replace(old, new)
    link = cwd / "examples"
    if not link.exists():
        link.symlink_to(REPO / "examples")
    wf_env = {k: str(v) for k, v in workflow()["env"].items() if "${{" not in str(v)}
    full_env = {**os.environ, **wf_env, **(env or {}),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_stages_gate_each_other() -> None:
    jobs = workflow()["jobs"]
    chain = ["test", "data", "gate", "canary", "promote"]
    assert list(jobs) == chain
    for before, after in zip(chain, chain[1:]):
        assert jobs[after]["needs"] == before
    # The failing-stage steps have no continue-on-error or always() that would let the next stage run.
    for name in ("Drift check on the new training data", "Release gate", "Canary analysis"):
        s = next(s for j in jobs.values() for s in j["steps"] if s.get("name") == name)
        assert "if" not in s and not s.get("continue-on-error")


@pytest.mark.e2e
def test_drift_step_passes_on_the_example_data_and_stops_on_drift(tmp_path: Path) -> None:
    r = run_step("Drift check on the new training data", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0/4 features drifted" in r.stdout
    # New training data whose amounts doubled and whose countries changed: the pipeline stops here.
    rng = np.random.default_rng(5)
    lines = (REPO / "examples/ci/data/train-new.csv").read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        amount, age, country, device = line.split(",")
        out.append(f"{float(amount) * 2:.2f},{age},{rng.choice(['US', 'US', 'FR'])},{device}")
    (tmp_path / "drifted.csv").write_text("\n".join(out) + "\n")
    r = run_step("Drift check on the new training data", tmp_path,
                 replace={"examples/ci/data/train-new.csv": str(tmp_path / "drifted.csv")})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "-> DRIFT" in r.stdout


@pytest.mark.e2e
def test_drift_report_step_writes_the_artifact(tmp_path: Path) -> None:
    r = run_step("Drift report", tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "drift-report.html").read_text().startswith("<!doctype html>")


@pytest.mark.e2e
def test_gate_step_passes_the_example_evaluation_and_stops_a_worse_one(tmp_path: Path) -> None:
    r = run_step("Release gate", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "RELEASE GATE: PASS  (3/3 checks passed)" in r.stdout
    verdict = json.loads((tmp_path / "gate.json").read_text())
    assert verdict["passed"] is True
    # The seed's rule: accuracy below 0.90 stops the release.
    worse = json.loads((REPO / "examples/ci/evaluation.json").read_text())
    worse["metrics"]["accuracy"] = 0.87
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    r = run_step("Release gate", tmp_path, replace={"examples/ci/evaluation.json": str(tmp_path / "worse.json")})
    assert r.returncode == 1
    assert "accuracy >= 0.9" in r.stdout and "FAIL" in r.stdout
    # A missing evaluation is bad input, not a pass.
    r = run_step("Release gate", tmp_path, replace={"examples/ci/evaluation.json": str(tmp_path / "none.json")})
    assert r.returncode == 2 and "cannot read" in r.stderr


@pytest.mark.parametrize("path", ["gate.yml", "canary-gate.yml"])
def test_example_gate_files_are_valid(path: str) -> None:
    from modelmon.gate import load_gate

    gate = load_gate(REPO / "examples" / "ci" / path)
    assert gate.evaluation or gate.live
