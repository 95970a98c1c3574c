"""Every dashboard query returns data on first start.

A real ``modelmon serve --scenario incident --anomaly-after 0`` is scraped every second by a real Prometheus that loads the
bundle's own rule files (recording and alerting) from ``prometheus/rules/``.
After a few seconds of scraping, every panel target, annotation and variable
query of every committed dashboard is run through the Prometheus HTTP API with
the variables substituted as Grafana would, and must return a non-empty
result.  A panel that would say "No data" on first start fails here.

The simulated model is a classifier with a large reference, so it has no
regression errors and no test p-values (the default rule picks distance
methods for references over ``drift.small_sample_max`` rows).  Those panels
are checked on a second model this test feeds through the ingestion API: a
regression model with a small reference (so KS and chi-square run).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from conftest import scrape_config

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "grafana"))

from dashgen.inspect import (  # noqa: E402
    LABEL_VALUES_RE, Query, load_dashboards, queries, substitute, variable_names, variables,
)

pytestmark = pytest.mark.e2e

RATE_INTERVAL = "10s"  # what $__rate_interval is at 1 s scrapes and a short range
RANGE = "5m"
SIMULATED = "demo"
FED = "price"  # a regression model fed through POST /api/v1/events in this test
#: Metrics the simulated model cannot have: their queries are checked on FED.
FED_ONLY = ("modelmon_quality_mean_absolute_error", "modelmon_quality_root_mean_squared_error",
            "modelmon_drift_p_value")
REFERENCE_ROWS = 400  # <= drift.small_sample_max: the default rule picks KS / chi-square


def bundle_rule_files() -> list[Path]:
    """The bundle's rule files (files with rule ``groups``; promtool test files are skipped)."""
    files = []
    for path in sorted((REPO / "prometheus" / "rules").glob("*.y*ml")):
        doc = yaml.safe_load(path.read_text()) or {}
        if isinstance(doc, dict) and "groups" in doc:
            files.append(path)
    return files


def recorded_names(files: list[Path]) -> set[str]:
    names = set()
    for path in files:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(r["record"] for r in group.get("rules", []) if "record" in r)
    return names


def write_fed_model(workdir: Path) -> Path:
    """Config for the simulated model plus FED, with FED's reference CSV."""
    import numpy as np

    rng = np.random.default_rng(3)
    ref = workdir / "price-reference.csv"
    rows = ["size,district"] + [f"{rng.normal(100, 15):.3f},{rng.choice(['north', 'south', 'east'])}"
                                for _ in range(REFERENCE_ROWS)]
    ref.write_text("\n".join(rows) + "\n")
    cfg = workdir / "modelmon.yml"
    cfg.write_text(yaml.safe_dump({"models": [{
        "name": FED, "task": "regression",
        "features": [{"name": "size", "type": "numerical"}, {"name": "district", "type": "categorical"}],
        "reference": {"path": str(ref)},
    }]}))
    return cfg


def feed_model(url: str) -> None:
    """FED's predictions with features and labels (some labels sent later, so
    label delay has late labels too), and one malformed request so a
    rejection is counted."""
    import numpy as np

    rng = np.random.default_rng(4)

    def event(eid: str, label: float | None) -> dict[str, Any]:
        ev = {"model": FED, "id": eid, "prediction": float(rng.normal(10, 2)),
              "features": {"size": float(rng.normal(120, 15)), "district": str(rng.choice(["north", "west"]))}}
        if label is not None:
            ev["label"] = float(rng.normal(10, 2))
        return ev

    events = [event(f"r{i}", 1.0) for i in range(150)]
    late = [event(f"late{i}", None) for i in range(30)]
    r = requests.post(f"{url}/api/v1/events", json=events + late, timeout=10)
    assert r.status_code == 200 and r.json()["accepted"] == 180, r.text
    time.sleep(1.0)
    r = requests.post(f"{url}/api/v1/labels", json=[{"model": FED, "id": f"late{i}", "label": 3.0} for i in range(30)],
                      timeout=10)
    assert r.status_code == 200 and r.json()["accepted"] == 30, r.text
    r = requests.post(f"{url}/api/v1/events", data=b"{not json", headers={"Content-Type": "application/json"},
                      timeout=10)
    assert r.status_code == 400, r.text


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import ServerFactory

    workdir = tmp_path_factory.mktemp("dashboards-e2e")
    cfg = write_fed_model(workdir)
    factory = ServerFactory(workdir)
    ok = False
    try:
        exp = factory.exporter(f"--config={cfg}", "--scenario=incident", "--anomaly-after=0", "--seed=7",
                               "--rate=400")
        rules = bundle_rule_files()
        prom = factory.prometheus(scrape_config([exp.address], job="modelmon"), rules)
        prom.wait_targets_up(1)
        # Feed after the first scrape, so rate() sees the counters increase.
        prom.wait_for(f'modelmon_requests_total{{model="{SIMULATED}"}}', timeout=20)
        feed_model(exp.url)
        # Enough samples for rate() over RATE_INTERVAL and for the recording rules.
        prom.wait_for(f'count_over_time(up{{job="modelmon"}}[{RATE_INTERVAL}]) >= 6', timeout=40)
        ok = True
        yield prom, exp, rules
    finally:
        factory.stop_all(show_logs=not ok)


def _values(q: Query, dashboard: dict[str, Any], model: str) -> list[dict[str, str]]:
    """Variable assignments to run ``q`` with: Grafana's first-start defaults
    ("All" = the variable's allValue), and for a repeated panel one assignment
    per value of the repeat variable."""
    base = {"__rate_interval": RATE_INTERVAL, "__range": RANGE, "model": model}
    for name, var in variables(dashboard).items():
        if name in base or var["type"] != "query":
            continue
        current = (var.get("current") or {}).get("value")
        base[name] = var["allValue"] if current == "$__all" else current
        assert base[name], f"{dashboard['uid']}: variable {name} has no default (current) value"
    if not q.repeat:
        return [base]
    return [{**base, q.repeat: v} for v in REPEAT_VALUES[q.repeat]]


#: Values Prometheus has for the repeat variables (filled in by the test).
REPEAT_VALUES: dict[str, list[str]] = {}


def _run(prom: Any, expr: str) -> list[Any]:
    r = requests.get(f"{prom.url}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    if body.get("status") != "success":
        raise AssertionError(f"invalid PromQL {expr!r}: {body.get('error')}")
    data = body["data"]
    return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]


def test_recording_rules_used_by_dashboards_exist(stack: Any) -> None:
    _, _, rules = stack
    assert rules, "no rule files in prometheus/rules/"
    defined = recorded_names(rules)
    used = set()
    for d in load_dashboards().values():
        for q in queries(d):
            used.update(re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", q.expr))
    assert used, "the dashboards use no recording rule (fleet PSI should)"
    missing = used - defined
    assert not missing, f"dashboards use recording rules not defined in prometheus/rules/: {sorted(missing)}"


def test_variable_queries_offer_the_defaults(stack: Any) -> None:
    """Each label_values() variable has values, including the one tests (and users) select."""
    prom, _, _ = stack
    expected = {"job": "modelmon", "model": SIMULATED, "window": "5m", "method": "psi", "feature": "age"}
    for d in load_dashboards().values():
        for name, var in variables(d).items():
            if var["type"] != "query":
                continue
            m = LABEL_VALUES_RE.match(var["query"])
            assert m, f"{d['uid']}: variable {name} is not label_values(selector, label): {var['query']}"
            selector = substitute(m.group(1), {"job": ".+", "instance": ".+", "model": SIMULATED})
            r = requests.get(f"{prom.url}/api/v1/label/{m.group(2)}/values", params={"match[]": selector}, timeout=10)
            values = r.json()["data"]
            assert values, f"{d['uid']}: variable {name} ({var['query']}) has no values"
            if name in expected:
                assert expected[name] in values, f"{d['uid']}: variable {name} lacks {expected[name]}: {values}"
            REPEAT_VALUES[name] = values


def test_every_panel_query_returns_data(stack: Any) -> None:
    prom, _, _ = stack
    if not REPEAT_VALUES:
        test_variable_queries_offer_the_defaults(stack)
    # Each run: a name and the expressions to try; data from any one passes.
    # Queries run on the simulated model; those reading a metric only the fed
    # model has may pass on that model instead.
    runs: list[tuple[str, list[str]]] = []
    for d in load_dashboards().values():
        for q in queries(d):
            models = [SIMULATED] + ([FED] if any(m in q.expr for m in FED_ONLY) else [])
            for values in _values(q, d, SIMULATED):
                exprs = []
                for model in models:
                    expr = substitute(q.expr, {**values, "model": model})
                    leftover = variable_names(expr) - {str(i) for i in range(10)}
                    assert not leftover, f"{q.dashboard} {q.where}: unknown variables {leftover} in {q.expr}"
                    exprs.append(expr)
                runs.append((f"{q.dashboard} {q.where} [{values.get(q.repeat or 'model')}]", exprs))
    assert len(runs) > 60, f"only {len(runs)} queries found"
    # Some series need a drift recomputation or a rule evaluation to appear:
    # poll the empty ones for a while before calling them "No data".
    empty = runs
    deadline = time.monotonic() + 30
    while True:
        empty = [(where, exprs) for where, exprs in empty if not any(_run(prom, e) for e in exprs)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert not empty, "panels with No data on first start:\n" + "\n".join(f"  {w}: {e[-1]}" for w, e in empty)


def test_rejections_and_late_labels_show_up(stack: Any) -> None:
    """The panels fed by the test show the real thing, not just zeros."""
    prom, _, _ = stack
    prom.wait_for('sum(modelmon_events_rejected_total{job="modelmon", reason="malformed"}) >= 1', timeout=20)
    prom.wait_for(f'histogram_quantile(0.95, sum by (le) (rate(modelmon_label_delay_seconds_bucket'
                  f'{{model="{FED}"}}[1m]))) > 0', timeout=20)
