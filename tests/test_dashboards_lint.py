"""Lint rules for the committed dashboards, in the spirit of
grafana/dashboard-linter, plus "the JSON is what the generator writes".

No servers needed: these judge the JSON files Grafana provisions.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "grafana"))

from dashgen.inspect import load_dashboards, panels, queries, variable_names, variables  # noqa: E402

DASHBOARDS = load_dashboards()
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
BUILTIN_VARS = {"__rate_interval", "__range"}
#: Grafana unit ids used here (from Grafana's unit picker).  A typo would show raw numbers.
KNOWN_UNITS = {"reqps", "eps", "percentunit", "s", "short", "none", "bytes", "Bps", "pps"}
#: Families of the system exporters (node_exporter, cAdvisor, blackbox_exporter) -> their scrape job.
SYSTEM_JOBS = {"node_": "node", "container_": "cadvisor", "probe_": "blackbox"}


def catalogue() -> dict[str, set[str]]:
    """Metric name -> its labels, from the tables in docs/metrics.md
    (``| `name` | type | unit | labels | meaning |``; the thresholds table says
    in prose that its gauges carry ``model``)."""
    out: dict[str, set[str]] = {}
    for line in (REPO / "docs" / "metrics.md").read_text().splitlines():
        m = re.match(r"\|\s*`(modelmon_\w+)`\s*\|(.*)", line)
        if not m:
            continue
        cells = [c.strip() for c in m.group(2).split("|")]
        if m.group(1).startswith("modelmon_threshold_"):
            out[m.group(1)] = {"model"}
        else:
            out[m.group(1)] = set(re.findall(r"\w+", cells[2]))
    return out


CATALOGUE = catalogue()
METRIC_RE = re.compile(r"\b((?:modelmon_|process_|scrape_|node_|container_|probe_)[A-Za-z0-9_]+|up|ALERTS|"
                       r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+)\b"
                       r"(\{[^}]*\})?(\[[^\]]*\])?")
RANGE_FN_RE = re.compile(r"\b(rate|irate|increase|delta|idelta|deriv|changes|resets|[a-z]+_over_time)\s*\(")


def all_panels() -> list[tuple[str, dict[str, Any]]]:
    return [(d["uid"], p) for d in DASHBOARDS.values() for p in panels(d)]


def all_queries() -> list[Any]:
    return [q for d in DASHBOARDS.values() for q in queries(d)]


def test_expected_dashboards_exist() -> None:
    assert set(DASHBOARDS) == {"modelmon-overview.json", "modelmon-drift.json", "modelmon-quality.json",
                               "modelmon-exporter.json", "modelmon-system.json"}


def test_generator_output_matches_committed_json() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "grafana" / "generate.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"committed dashboards differ from the generator:\n{proc.stderr}"


def test_generator_check_detects_a_difference(tmp_path: Path) -> None:
    out = tmp_path / "dashboards"
    subprocess.run([sys.executable, str(REPO / "grafana" / "generate.py"), "--out", str(out)], check=True,
                   capture_output=True, timeout=60)
    path = out / "modelmon-overview.json"
    path.write_text(path.read_text().replace("Request rate", "Request rates", 1))
    proc = subprocess.run([sys.executable, str(REPO / "grafana" / "generate.py"), "--check", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "modelmon-overview.json" in proc.stderr


def test_uids_titles_and_file_names_are_unique() -> None:
    uids = [d["uid"] for d in DASHBOARDS.values()]
    titles = [d["title"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    for name, d in DASHBOARDS.items():
        assert name == f"{d['uid']}.json"
        assert len(d["uid"]) <= 40, "Grafana limits uids to 40 characters"
        assert "modelmon" in d["tags"] and d.get("description")


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_template_variables(name: str) -> None:
    d = DASHBOARDS[name]
    vs = variables(d)
    ds = vs.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", "needs a Prometheus datasource variable"
    assert ds["current"]["value"] == "modelmon-prometheus", "defaults to the provisioned datasource uid"
    for required in ("model", "job", "instance"):
        assert required in vs, f"{name}: missing the {required} variable"
    for v in vs.values():
        assert v.get("label") and v.get("description"), f"{name}: variable {v['name']} needs a label and description"
        if v["type"] == "query":
            assert v["datasource"] == DATASOURCE, f"{name}: variable {v['name']} must use $datasource"
            assert v["refresh"] == 2, f"{name}: variable {v['name']} must refresh on time range change"
            assert v["query"].startswith("label_values("), v["query"]
            used = variable_names(v["query"])
            order = list(vs)
            assert all(order.index(u) < order.index(v["name"]) for u in used), \
                f"{name}: variable {v['name']} uses a variable defined after it"


@pytest.mark.parametrize("uid,panel", all_panels(), ids=lambda x: x if isinstance(x, str) else x.get("title"))
def test_panel_rules(uid: str, panel: dict[str, Any]) -> None:
    where = f"{uid}: panel {panel.get('title')!r}"
    assert panel.get("title"), f"{where}: no title"
    assert len(panel.get("description", "")) >= 20, f"{where}: needs a description saying what it shows"
    assert panel.get("datasource") == DATASOURCE, f"{where}: must use the $datasource variable"
    unit = panel["fieldConfig"]["defaults"].get("unit")
    assert unit in KNOWN_UNITS, f"{where}: unit {unit!r} missing or unknown"
    targets = panel.get("targets", [])
    assert targets, f"{where}: no queries"
    refs = [t["refId"] for t in targets]
    assert len(set(refs)) == len(refs) and all(refs), f"{where}: refIds must be unique and set"
    for t in targets:
        assert t.get("datasource") == DATASOURCE, f"{where} {t['refId']}: must use the $datasource variable"
        assert t.get("expr"), f"{where} {t['refId']}: empty query"
    grid = panel["gridPos"]
    assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_layout_ids_and_titles(name: str) -> None:
    d = DASHBOARDS[name]
    ids = [p["id"] for p in d["panels"]]
    assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
    titles = [p["title"] for p in panels(d)]
    assert len(set(titles)) == len(titles), f"{name}: duplicate panel titles"
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{name}: panel {p['title']!r} overlaps another"
        cells |= mine


@pytest.mark.parametrize("query", all_queries(), ids=lambda q: f"{q.dashboard}:{q.where}")
def test_query_rules(query: Any) -> None:
    where = f"{query.dashboard} {query.where}"
    expr = query.expr
    dashboard = next(d for d in DASHBOARDS.values() if d["uid"] == query.dashboard)
    unknown = variable_names(expr) - set(variables(dashboard)) - BUILTIN_VARS - {str(i) for i in range(10)}
    assert not unknown, f"{where}: undefined variables {unknown}"
    # Every range uses Grafana's interval: $__rate_interval, or $__range for an
    # instant "over the whole time range" query.  No hard-coded [5m].
    no_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    for m in re.finditer(r"\[([^\]]*)\]", no_strings):
        allowed = {"$__rate_interval"} | ({"$__range"} if query.instant else set())
        assert m.group(1) in allowed, f"{where}: range [{m.group(1)}] must be [$__rate_interval]: {expr}"
    for fn in RANGE_FN_RE.finditer(expr):
        assert fn.group(1) in ("rate", "increase"), f"{where}: use rate() or increase(), not {fn.group(1)}()"
    found = False
    for m in METRIC_RE.finditer(expr):
        metric, matchers, rng = m.group(1), m.group(2) or "", m.group(3)
        if expr[m.end():m.end() + 1] == "(" or metric in ("by", "on"):
            continue  # a function name
        found = True
        recorded = ":" in metric
        system = next((job for prefix, job in SYSTEM_JOBS.items() if metric.startswith(prefix)), None)
        if system:
            # Another exporter's series: its own job, tied to the selected
            # exporter instances through the host label (or, for a model's
            # endpoint probe, the model); never $job / $instance, which name modelmon's.
            assert f'job="{system}"' in matchers, f"{where}: {metric} must select job={system}: {expr}"
            assert 'host=~"$host"' in matchers or (system == "blackbox" and 'model="$model"' in matchers), \
                f"{where}: {metric} must be filtered by $host: {expr}"
            assert "$instance" not in matchers and "$job" not in matchers, f"{where}: {metric}: {expr}"
            if metric.endswith("_total"):
                assert rng and re.search(r"\brate\($", expr[:m.start()].rstrip()), f"{where}: {metric} needs rate()"
            else:
                assert not rng, f"{where}: gauge {metric} must not be rated: {expr}"
            continue
        if metric != "ALERTS" and not recorded:
            assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, \
                f"{where}: {metric} must be filtered by $job and $instance: {expr}"
        if metric.startswith("modelmon_"):
            base = re.sub(r"_(bucket|count|sum)$", "", metric)
            labels = CATALOGUE.get(metric, CATALOGUE.get(base))
            assert labels is not None, f"{where}: {metric} is not in docs/metrics.md"
            needs_model = "model" in labels
        else:
            needs_model = recorded or metric == "ALERTS"
        if needs_model:
            assert 'model="$model"' in matchers, f"{where}: {metric} must be filtered by $model: {expr}"
        else:
            assert "model=" not in matchers, f"{where}: {metric} has no model label: {expr}"
        if metric.endswith(("_total", "_bucket", "_count")):
            assert rng, f"{where}: counter {metric} must be inside rate()/increase(): {expr}"
            before = expr[:m.start()].rstrip()
            assert re.search(r"\b(rate|increase)\($", before), f"{where}: counter {metric} needs rate(): {expr}"
        else:
            assert not rng, f"{where}: gauge {metric} must not be rated: {expr}"
    assert found, f"{where}: no metric found in {expr}"


def test_every_rate_uses_rate_interval() -> None:
    """The headline rule, over all queries at once."""
    for q in all_queries():
        for m in re.finditer(r"\b(?:rate|irate)\([^\[]*\[([^\]]*)\]", q.expr):
            assert m.group(1) == "$__rate_interval", f"{q.dashboard} {q.where}: {q.expr}"


def test_threshold_lines_come_from_the_threshold_gauges() -> None:
    """The overview's limits are the model's configured thresholds, not numbers baked into JSON."""
    overview = DASHBOARDS["modelmon-overview.json"]
    by_title = {p["title"]: p for p in panels(overview)}
    expected = {
        "Request rate by version": "modelmon_threshold_throughput_min_requests_per_second",
        "Error ratio by reason": "modelmon_threshold_error_ratio_max",
        "Latency percentiles": "modelmon_threshold_latency_p95_seconds",
        "Accuracy against limits": "modelmon_threshold_release_accuracy_min_ratio",
    }
    for title, gauge in expected.items():
        panel = by_title[title]
        refs = [t["refId"] for t in panel["targets"] if gauge in t["expr"]]
        assert refs, f"{title}: no {gauge} line"
        dashed = {o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]
                  if o["matcher"]["id"] == "byFrameRefID"
                  and {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}} in o["properties"]}
        assert set(refs) <= dashed, f"{title}: the {gauge} line is not drawn dashed"


def test_overview_has_deploy_annotations_and_alerts() -> None:
    overview = DASHBOARDS["modelmon-overview.json"]
    anns = {a["name"]: a for a in overview["annotations"]["list"]}
    deploy = anns["Deploys"]
    assert "modelmon_model_version_first_seen_timestamp_seconds" in deploy["expr"] and deploy["useValueForTime"]
    assert "* 1000" in deploy["expr"], "useValueForTime expects milliseconds"
    assert any("ALERTS{" in t["expr"] for p in panels(overview) for t in p["targets"])
