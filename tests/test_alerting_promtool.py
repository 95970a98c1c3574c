"""The Prometheus side of the alerting bundle, judged by ``promtool``:
``check config``, ``check rules``, the unit tests in ``prometheus/tests/``,
the conventions every alert follows, and the fleet-wide PSI / Jensen-Shannon
recording rules against numpy / scipy on random counts."""

from __future__ import annotations

import glob
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.spatial.distance import jensenshannon

from servers import REPO, require_binary

PROM = REPO / "prometheus"
RULES = PROM / "rules"
TESTS = PROM / "tests"
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/modelmon/modelmon/blob/main/docs/runbook.md#"

#: Names other parts of the project (dashboards, release gate) query.
REQUIRED_RECORDINGS = [
    "model:modelmon_requests:rate5m",
    "model_version:modelmon_requests:rate5m",
    "model:modelmon_request_errors:ratio_rate5m",
    "model_version:modelmon_request_errors:ratio_rate5m",
    *(f"{lvl}:modelmon_request_duration_seconds:{q}_5m" for lvl in ("model", "model_version") for q in ("p50", "p95", "p99")),
    "model:modelmon_accuracy:ratio_rate5m",
    "model:modelmon_dataset_drifted_features:ratio",
    "model_feature:modelmon_fleet_psi:rate5m",
    "model_feature:modelmon_fleet_jensenshannon:rate5m",
]
REQUIRED_ALERTS = [
    "ModelmonHighLatencyP95", "ModelmonLowThroughput", "ModelmonHighErrorRatio", "ModelmonLowAccuracy",
    "ModelmonFeatureDrift", "ModelmonDatasetDrift", "ModelmonFeatureMissingValues", "ModelmonFeatureOutOfRange",
    "ModelmonFeatureNewCategories", "ModelmonLabelsNotArriving", "ModelmonExporterDown", "ModelmonExporterAbsent",
    "ModelmonDriftComputationStale",
    "ModelmonHostDown", "ModelmonHostMemoryLow", "ModelmonHostDiskFull", "ModelmonProbeFailing", "ModelmonProbeSlow",
    "ModelmonProbeCertificateExpiring",
]


def run(cmd: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    require_binary(cmd[0])
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.yml"))


def all_rules() -> list[dict[str, Any]]:
    out = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out.append({**rule, "_file": path.name, "_group": group["name"]})
    return out


def alerting_rules() -> list[dict[str, Any]]:
    return [r for r in all_rules() if "alert" in r]


def runbook_anchors() -> set[str]:
    """GitHub-style anchors of the runbook's headings."""
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        if m := re.match(r"^#{1,6}\s+(.*)$", line):
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


# --------------------------------------------------------------- promtool checks


def test_prometheus_config_is_valid_and_fits_compose() -> None:
    res = run(["promtool", "check", "config", str(PROM / "prometheus.yml")])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "WARNING" not in res.stdout + res.stderr, res.stdout + res.stderr
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    # Service names of the compose network, unchanged.
    assert jobs["modelmon"]["static_configs"][0]["targets"] == ["exporter:9874"]
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    # Every rule file is loaded through the relative glob.
    loaded = sorted({Path(p) for g in cfg["rule_files"] for p in glob.glob(str(PROM / g))})
    assert loaded == rule_files()


def test_rule_files_are_valid() -> None:
    res = run(["promtool", "check", "rules", *map(str, rule_files())])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "WARNING" not in res.stdout + res.stderr, res.stdout + res.stderr


def test_promtool_unit_tests_pass() -> None:
    files = sorted(TESTS.glob("*_test.yml"))
    assert len(files) >= 5
    res = run(["promtool", "test", "rules", *map(str, files)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(files), res.stdout


# --------------------------------------------------------------- conventions


def test_recording_rule_names_are_kept() -> None:
    names = {r["record"] for r in all_rules() if "record" in r}
    missing = [n for n in REQUIRED_RECORDINGS if n not in names]
    assert not missing, f"recording rules other components use are missing: {missing}"
    for name in names:
        level, metric, ops = name.split(":")
        assert level and metric.startswith("modelmon_") and ops, name


def test_alerts_follow_the_conventions() -> None:
    alerts = alerting_rules()
    names = {a["alert"] for a in alerts}
    assert not [n for n in REQUIRED_ALERTS if n not in names]
    anchors = runbook_anchors()
    for a in alerts:
        name = a["alert"]
        assert re.fullmatch(r"Modelmon[A-Z][A-Za-z0-9]+", name), name
        assert a["labels"]["severity"] in ("critical", "warning", "info"), name
        assert a.get("for"), f"{name}: every alert needs a for: against flapping"
        ann = a["annotations"]
        assert {"summary", "description", "runbook_url", "value"} <= set(ann), name
        assert "{{ $value" in ann["description"] or "{{ $value" in ann["value"], name
        assert ann["runbook_url"] == RUNBOOK_URL + name.lower(), name
        assert name.lower() in anchors, f"docs/runbook.md has no section for {name}"
        # A `for:` is explained in a comment somewhere in the rule's file.
        text = (RULES / a["_file"]).read_text()
        assert re.search(r"#.*for:", text), f"{a['_file']}: explain the for: durations in a comment"
    # Tiers of one alert share the name and differ in severity.
    for name in names:
        sev = [a["labels"]["severity"] for a in alerts if a["alert"] == name]
        assert len(sev) == len(set(sev)), f"{name}: two rules with the same severity"


def test_every_alert_is_unit_tested_firing_silent_and_debounced() -> None:
    """Each alert (and each severity tier) has a promtool case where it fires,
    one where it stays silent, and one showing the for: delay (silent before
    firing in the same series, or pending in ALERTS)."""
    fires: set[tuple[str, str]] = set()
    silent: set[str] = set()
    debounced: set[str] = set()
    for path in TESTS.glob("*_test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            by_name: dict[str, list[tuple[int, bool]]] = {}
            for t in case.get("alert_rule_test", []):
                minutes = _minutes(t["eval_time"])
                by_name.setdefault(t["alertname"], []).append((minutes, bool(t.get("exp_alerts"))))
                if not t.get("exp_alerts"):
                    silent.add(t["alertname"])
                for exp in t.get("exp_alerts") or []:
                    fires.add((t["alertname"], exp["exp_labels"]["severity"]))
            for name, evals in by_name.items():
                first_firing = min((m for m, f in evals if f), default=None)
                if first_firing is not None and any(not f and m < first_firing for m, f in evals):
                    debounced.add(name)
            for e in case.get("promql_expr_test", []):
                for s in e.get("exp_samples") or []:
                    if m := re.search(r'alertname="(\w+)",alertstate="pending"', s["labels"]):
                        debounced.add(m.group(1))
    for a in alerting_rules():
        assert (a["alert"], a["labels"]["severity"]) in fires, f"no promtool case where {a['alert']} ({a['labels']['severity']}) fires"
        assert a["alert"] in silent, f"no promtool case where {a['alert']} stays silent"
        assert a["alert"] in debounced, f"no promtool case showing {a['alert']}'s for: delay"


def _minutes(spec: str) -> int:
    m = re.fullmatch(r"(\d+)([smh])", spec)
    assert m, spec
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


# --------------------------------------------- fleet PSI / JS against numpy / scipy


def numpy_psi(ref: np.ndarray, cur: np.ndarray, eps: float = 1e-4) -> float:
    """PSI with the exporter's documented smoothing: shares floored at eps."""
    p = np.maximum(ref / ref.sum(), eps)
    q = np.maximum(cur / cur.sum(), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def test_fleet_psi_and_js_match_numpy_and_scipy(tmp_path: Path) -> None:
    """Random per-replica bin counters (with empty bins on both sides) go
    through the bundle's recording rules in promtool; the fleet PSI and JS must
    equal numpy's PSI and scipy's Jensen-Shannon distance on the union counts."""
    require_binary("promtool")
    rng = np.random.default_rng(20240611)
    replicas = ["r1:9874", "r2:9874", "r3:9874"]
    features = {
        # numerical: out-of-range slots 0 and 11 are empty in the reference
        "num": [str(i) for i in range(12)],
        "cat": ["north", "south", "east", "__other__"],
        "skewed": [str(i) for i in range(6)],
    }
    series: list[dict[str, str]] = []
    expected: dict[str, tuple[float, float, list[float]]] = {}
    for feature, bins in features.items():
        ref = rng.integers(50, 500, len(bins)).astype(float)
        if feature == "num":
            ref[0] = ref[-1] = 0
        if feature == "cat":
            ref[-1] = 0
        ref_frac = ref / ref.sum()
        # Replicas see different mixes of the reference and a shifted
        # distribution, so each has its own PSI and the fleet's is a third value.
        shifted = rng.dirichlet(np.ones(len(bins)))
        if feature == "skewed":
            shifted[:3] = 0                  # most mass where the reference is thin
            shifted /= shifted.sum()
        per_min = np.stack([rng.poisson((ref_frac * (1 - s) + shifted * s) * 800) for s in (0.0, 0.3, 0.7)])
        per_min[:, 0] = 0                    # empty on both sides in "num": contributes 0
        union = per_min.sum(axis=0).astype(float)
        expected[feature] = (numpy_psi(ref, union), float(jensenshannon(ref_frac, union, base=2)),
                             [numpy_psi(ref, per_min[i].astype(float)) for i in range(len(replicas))])
        for i, inst in enumerate(replicas):
            for j, b in enumerate(bins):
                lbl = f'job="modelmon",instance="{inst}",model="m",feature="{feature}",bin="{b}"'
                series.append({"series": f"modelmon_feature_bin_values_total{{{lbl}}}", "values": f"0+{int(per_min[i, j])}x15"})
                series.append({"series": f"modelmon_reference_bin_ratio{{{lbl}}}", "values": f"{float(ref_frac[j])!r}x15"})
    for inst in replicas:
        series.append({"series": f'modelmon_reference_info{{job="modelmon",instance="{inst}",model="m",profile_hash="abc"}}',
                       "values": "1x15"})
    exprs = []
    for feature, (psi, js, single) in expected.items():
        # The fleet value is not any replica's own value, nor their mean:
        # the rules must sum counts, not average scores.
        assert all(abs(psi - s) > 1e-3 for s in [*single, float(np.mean(single))]), (feature, psi, single)
        for name, value in (("psi", psi), ("jensenshannon", js)):
            exprs.append({
                "expr": f'abs(model_feature:modelmon_fleet_{name}:rate5m{{model="m",feature="{feature}"}} - {value!r}) '
                        f'<= bool {max(1e-9 * value, 1e-12)!r}',
                "eval_time": "10m",
                "exp_samples": [{"labels": f'{{model="m",feature="{feature}"}}', "value": 1}],
            })
    test = {
        "rule_files": [str(RULES / "recording.yml")],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": exprs}],
    }
    path = tmp_path / "fleet_psi_test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    res = run(["promtool", "test", "rules", str(path)])
    assert res.returncode == 0, res.stdout + res.stderr + f"\nexpected (psi, js, per-replica psi): {expected}"


def test_psi_smoothing_matches_the_exporter_documentation() -> None:
    """The recording rule's epsilon is the one the exporter's PSI documents."""
    text = (RULES / "recording.yml").read_text()
    psi_src = (REPO / "exporter" / "modelmon" / "drift" / "methods" / "psi.py").read_text()
    m = re.search(r"^EPSILON\s*=\s*([0-9.e-]+)", psi_src, re.M)
    assert m, "exporter/modelmon/drift/methods/psi.py defines no EPSILON"
    eps = float(m.group(1))
    used = {float(x) for x in re.findall(r"clamp_min\([^,]+,\s*([0-9.e-]+)\)", text)}
    assert used == {eps}, f"recording.yml floors shares at {used}, the exporter at {eps}"


def test_group_names_are_unique_across_rule_files() -> None:
    """Rule files can be merged into one (what a generated Kubernetes
    PrometheusRule carries) only when group names are unique across them."""
    groups = [g["name"] for p in rule_files() for g in yaml.safe_load(p.read_text())["groups"]]
    assert len(groups) == len(set(groups)), groups
