"""The bundle's rule files stay in the subset both Prometheus and
VictoriaMetrics' vmalert accept, so the same files run on either engine
(docs/scale-out.md): ``vmalert -dryRun`` parses every file, and recording
rules live in groups of their own.

vmalert evaluates the rules of one group one after another but, unlike
Prometheus, makes an alert that reads a recording of the same group see the
previous evaluation's value at best; separate groups make the dependency
explicit on both engines."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from servers import REPO, require_binary

RULES = sorted((REPO / "prometheus" / "rules").glob("*.yml"))


# vmalert is a server binary (the harness counts it as one even with -dryRun): e2e.
@pytest.mark.e2e
@pytest.mark.parametrize("path", RULES, ids=lambda p: p.name)
def test_vmalert_dry_run_accepts_rule_file(path: Path) -> None:
    binary = require_binary("vmalert")
    proc = subprocess.run([binary, "-dryRun", f"-rule={path}"], capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    # vmalert 1.79 exits 0 even after a fatal log line: judge by the log.
    assert proc.returncode == 0 and "fatal" not in out and "error" not in out.lower(), out


@pytest.mark.e2e
def test_vmalert_dry_run_rejects_a_broken_file(tmp_path: Path) -> None:
    """The check above can fail: vmalert refuses a bad expression."""
    binary = require_binary("vmalert")
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: g\n    rules:\n      - record: a:b:c\n        expr: sum(\n")
    proc = subprocess.run([binary, "-dryRun", f"-rule={bad}"], capture_output=True, text=True, timeout=60)
    assert "fatal" in proc.stdout + proc.stderr


def test_recording_and_alerting_rules_in_separate_groups() -> None:
    recorded: dict[str, str] = {}
    groups = [(p, g) for p in RULES for g in yaml.safe_load(p.read_text())["groups"]]
    for path, group in groups:
        kinds = {"record" if "record" in r else "alert" for r in group["rules"]}
        assert len(kinds) == 1, f"{path.name}: group {group['name']} mixes recording and alerting rules"
        for rule in group["rules"]:
            if "record" in rule:
                recorded[rule["record"]] = group["name"]
    for path, group in groups:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            for name in re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", rule["expr"]):
                assert recorded.get(name) not in (None, group["name"]), (path.name, rule["alert"], name)
