"""Every dashboard query returns data on first start.

A real ``modelmon serve --scenario incident --anomaly-after 0`` is scraped every second by a real Prometheus that loads the
bundle's own rule files (recording and alerting) from ``prometheus/rules/``.
After a few seconds of scraping, every panel target, annotation and variable
query of every committed dashboard is run through the Prometheus HTTP API with
the variables substituted as Grafana would, and must return a non-empty
result.  A panel that would say "No data" on first start fails here.

Beside it run Debian's real node_exporter and blackbox_exporter, scraped
with the bundle's own `node` and `blackbox` jobs (as `modelmon stack`
rewrites them for this machine), the probes going to the exporter and to an
https:// endpoint the test serves with its own CA (so the certificate-expiry
panel has data).  cAdvisor needs Docker: its panels may be empty, and then
must say why (``noValue``).

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
    LABEL_VALUES_RE, Query, load_dashboards, panels, queries, substitute, variable_names, variables,
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
#: Queries of cAdvisor's series (no Docker here).
CADVISOR_RE = re.compile(r"\bcontainer_[a-z_]+\{")


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


class HttpsEndpoint:
    """A TLS endpoint answering 200, with a certificate for 127.0.0.1 signed by a test CA."""

    def __init__(self, workdir: Path):
        import shutil
        import ssl
        import subprocess
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        if shutil.which("openssl") is None:
            pytest.fail("openssl not found on PATH; install it with: apt-get install -y openssl", pytrace=False)
        self.cert, key = workdir / "endpoint.crt", workdir / "endpoint.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(self.cert), "-days", "30",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=30)

        class Ok(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SystemExporter:
    """Debian's prometheus-node-exporter or prometheus-blackbox-exporter on a free port."""

    def __init__(self, workdir: Path, binary: str, *args: str):
        from servers import ServerProcess, free_port, require_binary

        path = require_binary(binary)
        self.address = f"127.0.0.1:{free_port()}"
        self.process = ServerProcess(binary, [path, f"--web.listen-address={self.address}", *args], workdir)
        requests_ok = lambda: requests.get(f"http://{self.address}/metrics", timeout=2).ok  # noqa: E731
        from servers import wait_until

        wait_until(requests_ok, 30, what=f"{binary} at {self.address}")

    def stop(self) -> None:
        self.process.stop()


def system_scrape_config(exporter: str, node: str, blackbox: str, https_url: str) -> dict[str, Any]:
    """The bundle's prometheus.yml as `modelmon stack` points it at this
    machine, every second, plus a probe of the https endpoint for model demo."""
    from modelmon.stack import Addresses, rewrite_prometheus_config

    bundle = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    addrs = Addresses(exporter, "127.0.0.1:1", "127.0.0.1:1", {"node-exporter": node, "blackbox-exporter": blackbox})
    cfg = rewrite_prometheus_config(bundle, REPO / "prometheus", addrs, "1s")
    cfg["scrape_configs"] = [j for j in cfg["scrape_configs"] if j["job_name"] != "prometheus"]
    cfg.pop("alerting", None)
    cfg.pop("rule_files", None)
    probes = next(j for j in cfg["scrape_configs"] if j["job_name"] == "blackbox")
    probes["static_configs"].append({"targets": [https_url], "labels": {"probe": "model", "model": SIMULATED}})
    assert {j["job_name"] for j in cfg["scrape_configs"]} == {"modelmon", "node", "blackbox"}
    return cfg


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import ServerFactory

    workdir = tmp_path_factory.mktemp("dashboards-e2e")
    cfg = write_fed_model(workdir)
    factory = ServerFactory(workdir)
    others: list[Any] = []
    ok = False
    try:
        exp = factory.exporter(f"--config={cfg}", "--scenario=incident", "--anomaly-after=0", "--seed=7",
                               "--rate=400")
        https = HttpsEndpoint(workdir)
        others.append(https)
        others.append(node := SystemExporter(workdir, "prometheus-node-exporter"))
        # The bundle's modules, trusting the test CA.
        modules = yaml.safe_load((REPO / "blackbox" / "blackbox.yml").read_text())
        for module in modules["modules"].values():
            module.setdefault("http", {})["tls_config"] = {"ca_file": str(https.cert)}
        (workdir / "blackbox.yml").write_text(yaml.safe_dump(modules))
        others.append(blackbox := SystemExporter(workdir, "prometheus-blackbox-exporter",
                                                 f"--config.file={workdir / 'blackbox.yml'}"))
        rules = bundle_rule_files()
        prom = factory.prometheus(system_scrape_config(exp.address, node.address, blackbox.address, https.url), rules)
        prom.wait_targets_up(5)
        # Feed after the first scrape, so rate() sees the counters increase.
        prom.wait_for(f'modelmon_requests_total{{model="{SIMULATED}"}}', timeout=20)
        feed_model(exp.url)
        # Enough samples for rate() over RATE_INTERVAL and for the recording rules.
        prom.wait_for(f'count_over_time(up{{job="modelmon"}}[{RATE_INTERVAL}]) >= 6', timeout=40)
        ok = True
        yield prom, exp, rules
    finally:
        for other in reversed(others):
            if not ok and hasattr(other, "process"):
                print(f"\n----- log of {other.process.name} -----\n{other.process.log_tail()}")
            other.stop()
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
        if current == "$__all" and "allValue" not in var:
            # Grafana's "All" without an allValue: every value the variable's query offers, as a
            # regex, escaped for a PromQL string ("127\\.0\\.0\\.1").
            base[name] = "(" + "|".join(re.escape(v).replace("\\", "\\\\") for v in REPEAT_VALUES[name]) + ")"
        else:
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
    expected = {"job": "modelmon", "model": SIMULATED, "window": "5m", "method": "psi", "feature": "age",
                "host": "127.0.0.1"}
    for d in load_dashboards().values():
        for name, var in variables(d).items():
            if var["type"] != "query":
                continue
            m = LABEL_VALUES_RE.match(var["query"])
            assert m, f"{d['uid']}: variable {name} is not label_values(selector, label): {var['query']}"
            selector = substitute(m.group(1), {"job": ".+", "instance": ".+", "model": SIMULATED, "host": ".+"})
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
    may_be_empty: set[str] = set()
    for d in load_dashboards().values():
        no_value = {p["title"]: p["fieldConfig"]["defaults"].get("noValue") for p in panels(d)}
        for q in queries(d):
            title = q.where.split("'")[1] if "'" in q.where else ""
            if CADVISOR_RE.search(q.expr):
                # cAdvisor needs Docker; its panels must say so when empty.
                assert no_value.get(title) and "cAdvisor" in no_value[title], f"{q.dashboard} {q.where}: needs a noValue"
                may_be_empty.add(q.where)
            models = [SIMULATED] + ([FED] if any(m in q.expr for m in FED_ONLY) else [])
            for values in _values(q, d, SIMULATED):
                exprs = []
                for model in models:
                    expr = substitute(q.expr, {**values, "model": model})
                    leftover = variable_names(expr) - {str(i) for i in range(10)}
                    assert not leftover, f"{q.dashboard} {q.where}: unknown variables {leftover} in {q.expr}"
                    exprs.append(expr)
                if q.where not in may_be_empty:
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
