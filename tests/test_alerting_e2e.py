"""End to end on the real servers: simulated scenarios -> ``modelmon serve``
exporters -> a real Prometheus running the bundle's rules -> a real
Alertmanager with the bundle's routing -> a webhook receiver in the test.

One Prometheus, one Alertmanager and one exporter per scenario run together
(each exporter simulates a model named after its scenario), plus two replicas
of a model ``fleet`` with split traffic for the fleet-wide PSI.  The test copy
of the bundle changes only timings: 1 s scrape and evaluation, every alert's
``for:`` shortened to 3 s, Alertmanager's group_wait / group_interval 1 s, and
the webhook URL (given through MODELMON_WEBHOOK_URL, as compose does).  The
rule expressions, routes, inhibitions and templates are the bundle's own.
Prometheus scrapes from before the exporters listen but evaluates the rules
only once every exporter is up: with a 3 s ``for:``, a slow start would
otherwise page ModelmonExporterDown.

Because the rules keep their 5-minute windows, a young exporter's window holds
everything since its start: an anomaly shows once it is a large enough share
of that, and clears once it is a small enough share (times below).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from modelmon.sources.simulator import demo_model_config
from servers import REPO, WebhookReceiver, free_port, wait_until
from test_alerting_alertmanager import test_config_for_tests as alertmanager_test_config

pytestmark = pytest.mark.e2e

RULES = REPO / "prometheus" / "rules"
TEST_FOR = "3s"
#: Rules must be evaluating by this many seconds after each exporter's start:
#: the accuracy condition holds from t = 12 s to 24 s (below), less TEST_FOR.
RULES_LOADED_BY = 18.0

#: model -> (scenario, anomaly after, anomaly duration or None), in seconds.
#: Window arithmetic (t = seconds since the exporter started; the 5m windows
#: hold everything since then):
#:   latency:  p95 > 200 ms while > ~5.6 % of the window is anomalous (89 % of
#:             N(250 ms, 40 ms) is above 200 ms): from t ~ 8.1 s, resolves at t ~ D / 0.056 = 36 s
#:   errors:   ratio 0.01 + 0.09 (t - A) / t, then 0.01 + 0.09 D / t: above 5 % from
#:             t = 1.8 A = 14.4 s (peak 6.9 % at 23 s), resolves at t = 2.25 D = 34 s
#:   accuracy: 0.95 - 0.15 s < 0.85 while the anomalous share s > 2/3: from t = 3 A = 12 s
#:             (peak s = 0.8, accuracy 0.83), resolves at t = 1.5 D = 24 s
#:   drift:    no end; scores are recomputed every 10 s (drift.recompute_interval)
SCENARIOS: dict[str, tuple[str, float, float | None]] = {
    "normal": ("normal", 0, None),
    "latency": ("latency-spike", 8, 2),
    "errors": ("error-burst", 8, 15),
    "accuracy": ("accuracy-decay", 4, 16),
    "drift": ("data-drift", 5, None),
    "throughput": ("throughput-drop", 0, None),
}
#: Two replicas of one model: one sees normal traffic, the other drifted.
FLEET = [("normal", 600.0), ("data-drift", 400.0)]

#: Every column the simulated model's drift engine watches: its six features
#: and, since the simulator sends attributions, each feature's attribution.
FLEET_DRIFT_FEATURES = {f.name for f in demo_model_config("fleet").monitored_features()}


def bundle_rules_test_copy(dest: Path) -> list[Path]:
    """The bundle's rule files with every ``for:`` set to TEST_FOR; nothing else changes."""
    out = []
    for path in sorted(RULES.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        original = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = TEST_FOR
        for g1, g2 in zip(doc["groups"], original["groups"]):
            assert [r["expr"] for r in g1["rules"]] == [r["expr"] for r in g2["rules"]]
        copy = dest / path.name
        copy.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(copy)
    return out


def prometheus_test_config(targets: list[str], alertmanager: str) -> dict[str, Any]:
    """The bundle's prometheus.yml pointed at the test's servers, scraping every second."""
    cfg = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "modelmon")
    job["static_configs"] = [{"targets": targets}]
    job.pop("file_sd_configs", None)
    # Prometheus' self-scrape: its port is only known once it runs.
    cfg["scrape_configs"] = [job]
    cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager]
    return cfg


def simulator_started_at(log_path: Path) -> float:
    """Wall-clock time the exporter's simulator started (its JSON log)."""
    def find() -> float | None:
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == "simulator started":
                return dt.datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()
        return None

    return wait_until(find, 10, what=f"'simulator started' in {log_path}")


def first_up_sample(prom: Any) -> dict[str, float]:
    """instance -> timestamp of Prometheus' first successful scrape of it."""
    series = prom.api("query", query='up{job="modelmon"}[5m]')["result"]
    return {s["metric"]["instance"]: min(float(t) for t, v in s["values"] if v == "1") for s in series}


def first_delivery(webhook: WebhookReceiver, status: str, **labels: str) -> tuple[float, dict[str, Any], dict[str, Any]] | None:
    """(received at, notification, alert) of the first notification carrying
    an alert with these labels in this status."""
    with webhook._lock:
        pairs = list(zip(webhook.received_at, webhook.notifications))
    for at, note in pairs:
        for alert in note.get("alerts", []):
            if alert["status"] == status and all(alert["labels"].get(k) == v for k, v in labels.items()):
                return at, note, alert
    return None


def numpy_psi(ref: np.ndarray, cur: np.ndarray, eps: float = 1e-4) -> float:
    p = np.maximum(ref / ref.sum(), eps)
    q = np.maximum(cur / cur.sum(), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def prometheus_increase(points: list[tuple[float, float]], range_start: float, range_end: float) -> float:
    """``increase()`` of one counter over [range_start, range_end] the way
    Prometheus 2.42 computes it (promql/functions.go extrapolatedRate): the
    raw increase, extrapolated towards the range's edges by at most half a
    sample interval (or to the edge when it is closer than 1.1 intervals), and
    never back past the counter's zero point."""
    (t0, v0), (tn, vn) = points[0], points[-1]
    increase = vn - v0 + sum(prev for (_, prev), (_, cur) in zip(points, points[1:]) if cur < prev)
    sampled = tn - t0
    to_start, to_end = t0 - range_start, range_end - tn
    if increase > 0 and v0 >= 0:
        to_start = min(to_start, sampled * v0 / increase)
    step = sampled / (len(points) - 1)
    interval = sampled + (to_start if to_start < step * 1.1 else step / 2) + (to_end if to_end < step * 1.1 else step / 2)
    return increase * interval / sampled


def check_fleet_psi(prom: Any) -> dict[str, tuple[float, float, float, float]]:
    """Compare Prometheus' fleet PSI with numpy's PSI on the union of the two
    replicas' counts over the same 5-minute window.

    Two references: the union of the raw counts in the window (what the
    exporter would compute on the union; rate()'s extrapolation at the
    window's edges makes Prometheus differ from it by a few per cent on a
    young window), and the union of the per-series increases as Prometheus
    defines them, which must agree to 1e-6 relative.  For the latter: a scrape stamped
    just before the rule evaluation may be committed just after it, so each
    replica's newest scrape is tried with and without.  Returns feature ->
    (prometheus, numpy on the raw union, each replica alone)."""
    from modelmon.drift.methods.psi import psi as exporter_psi

    recorded = prom.api("query", query='model_feature:modelmon_fleet_psi:rate5m{model="fleet"}[10s]')["result"]
    assert {r["metric"]["feature"] for r in recorded} == FLEET_DRIFT_FEATURES, recorded
    ts = min(float(r["values"][-1][0]) for r in recorded)
    fleet = {r["metric"]["feature"]: float([v for v in r["values"] if float(v[0]) <= ts][-1][1]) for r in recorded}
    counters = prom.api("query", query='modelmon_feature_bin_values_total{model="fleet"}[5m]', time=ts)["result"]
    refs = prom.api("query", query='modelmon_reference_bin_ratio{model="fleet"}', time=ts)["result"]
    instances = sorted({c["metric"]["instance"] for c in counters})
    assert len(instances) == 2, instances
    newest = {i: max(float(c["values"][-1][0]) for c in counters if c["metric"]["instance"] == i) for i in instances}
    # (drop the newest scrape of replica 0?, of replica 1?)
    variants = [(d0, d1) for d0 in (False, True) for d1 in (False, True)
                if (not d0 or newest[instances[0]] > ts - 1) and (not d1 or newest[instances[1]] > ts - 1)]
    out = {}
    for feature, value in fleet.items():
        bins = sorted({c["metric"]["bin"] for c in counters if c["metric"]["feature"] == feature})
        raw = np.zeros((2, len(bins)))
        extrapolated = {v: np.zeros(len(bins)) for v in variants}
        for c in counters:
            if c["metric"]["feature"] != feature:
                continue
            points = [(float(t), float(v)) for t, v in c["values"]]
            i, j = instances.index(c["metric"]["instance"]), bins.index(c["metric"]["bin"])
            raw[i, j] = points[-1][1] - points[0][1]
            for v in variants:
                pts = points[:-1] if v[i] and points[-1][0] == newest[instances[i]] else points
                extrapolated[v][j] += prometheus_increase(pts, ts - 300, ts)
        ref: dict[str, set[float]] = {}
        for r in refs:
            if r["metric"]["feature"] == feature:
                ref.setdefault(r["metric"]["bin"], set()).add(float(r["value"][1]))
        # Both replicas run the same reference (same seed): identical shares.
        assert all(len(v) == 1 for v in ref.values()), ref
        ref_frac = np.array([next(iter(ref[b])) for b in bins])
        union = raw.sum(axis=0)
        expected = numpy_psi(ref_frac, union)
        # The exporter's own PSI on the union counts agrees with numpy.
        assert exporter_psi(ref_frac, union) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        out[feature] = (value, expected, numpy_psi(ref_frac, raw[0]), numpy_psi(ref_frac, raw[1]))
        exact = [numpy_psi(ref_frac, e) for e in extrapolated.values()]
        # 1e-6 relative (floor 1e-10): far tighter than the per-cent gaps
        # between the variants, yet above the ~1e-9 that float summation order
        # and millisecond scrape timestamps leave between PromQL and numpy.
        assert min(abs(value - e) for e in exact) <= max(1e-6 * value, 1e-10), (feature, value, exact)
        assert value == pytest.approx(expected, rel=0.05, abs=0.005), (feature, out[feature])
    return out


def test_scenarios_fire_route_and_resolve_end_to_end(servers: Any, tmp_path: Path) -> None:
    webhook = servers.webhook()
    am = servers.alertmanager(alertmanager_test_config(tmp_path, webhook.url))

    def start(model: str, scenario: str, after: float, duration: float | None, rate: float | None, seed: int,
              port: int) -> Any:
        cfg = tmp_path / f"{model}-{seed}.yml"
        cfg.write_text(yaml.safe_dump({"simulator": {"model": model}}))
        args = [f"--config={cfg}", f"--scenario={scenario}", f"--anomaly-after={after:g}s", f"--seed={seed}"]
        if duration is not None:
            args.append(f"--anomaly-duration={duration:g}s")
        if rate is not None:
            args.append(f"--rate={rate:g}")
        return servers.exporter(*args, port=port)

    jobs = [(m, s, a, d, None, 10 + i) for i, (m, (s, a, d)) in enumerate(SCENARIOS.items())]
    jobs += [("fleet", s, 0, None, r, 7) for s, r in FLEET]   # same seed: same reference profile
    ports = [free_port() for _ in jobs]
    # Prometheus first, already polling the exporters' ports: each exporter is
    # scraped within a second of its start, so no short anomaly can happen
    # before Prometheus's first sample (it would then never show in increase()).
    # It starts without rules: until an exporter listens it is `up == 0`, which
    # on a busy machine lasts longer than the test's 3 s `for:`.  The rules are
    # loaded once every target is up, so every alert below comes from a fleet
    # that is fully up, and none may be blamed on start-up.
    prom = servers.prometheus(prometheus_test_config([f"127.0.0.1:{p}" for p in ports], am.url.removeprefix("http://")))
    with ThreadPoolExecutor(len(jobs)) as pool:
        exporters = list(pool.map(lambda jp: start(*jp[0], port=jp[1]), zip(jobs, ports)))
    by_model = {j[0]: e for j, e in zip(jobs, exporters) if j[0] != "fleet"}
    started = {m: simulator_started_at(e.process.log_path) for m, e in by_model.items()}
    prom.wait_for('count(up{job="modelmon"} == 1)', timeout=30, check=lambda r: bool(r) and int(float(r[0]["value"][1])) == len(exporters))
    prom.load_rules(bundle_rules_test_copy(tmp_path))
    rules_loaded = time.time()
    # Each anomaly began after its exporter's first scrape (its counters'
    # baseline), and each scenario's alert condition lasts past the rules' load.
    first_up = first_up_sample(prom)
    for model, e in by_model.items():
        after = SCENARIOS[model][1]
        if after > 0:
            assert first_up[e.address] < started[model] + after, \
                f"{model}: first scrape {first_up[e.address] - started[model]:.1f}s after its start, after its anomaly ({after:g}s)"
        assert rules_loaded - started[model] < RULES_LOADED_BY, \
            f"rules loaded {rules_loaded - started[model]:.1f}s after {model} started; its alert may come and go before"

    expected_firing = {
        "latency": dict(alertname="ModelmonHighLatencyP95", model="latency", severity="warning"),
        "errors": dict(alertname="ModelmonHighErrorRatio", model="errors", severity="warning"),
        "accuracy": dict(alertname="ModelmonLowAccuracy", model="accuracy", severity="warning"),
        "drift-critical": dict(alertname="ModelmonFeatureDrift", model="drift", feature="credit_score",
                               method="psi", severity="critical"),
        "drift-warning": dict(alertname="ModelmonFeatureDrift", model="drift", feature="age", severity="warning"),
        "dataset": dict(alertname="ModelmonDatasetDrift", model="drift", severity="warning"),
    }
    expected_resolved = ["latency", "errors", "accuracy"]
    fleet: dict[str, tuple[float, float, float, float]] = {}

    def done() -> bool:
        nonlocal fleet
        if not fleet and time.time() - started["normal"] > 25 and time.time() - rules_loaded > 10:
            fleet = check_fleet_psi(prom)
        return bool(fleet) and all(first_delivery(webhook, "firing", **l) for l in expected_firing.values()) and all(
            first_delivery(webhook, "resolved", **expected_firing[k]) for k in expected_resolved)

    wait_until(done, 100, interval=0.5, what="every expected alert fired and resolved, and the fleet PSI compared")

    # ---- labels, annotations, receivers of what arrived
    timings = {}
    for key, labels in expected_firing.items():
        at, note, alert = first_delivery(webhook, "firing", **labels)
        model = labels["model"]
        assert note["receiver"] == ("page" if labels["severity"] == "critical" else "ticket"), (key, note["receiver"])
        assert note["groupLabels"] == {"alertname": labels["alertname"], "model": model}, note["groupLabels"]
        ann = alert["annotations"]
        assert ann["runbook_url"].endswith("docs/runbook.md#" + labels["alertname"].lower()), ann
        assert model in ann["summary"] and model in ann["description"], ann
        assert ann["value"], ann
        scenario, after, duration = SCENARIOS[model]
        anomaly_start = started[model] + after
        timings[key] = {"fired_after_anomaly_start_s": round(at - anomaly_start, 1)}
        if key in expected_resolved:
            r_at, _, _ = first_delivery(webhook, "resolved", **labels)
            assert duration is not None
            timings[key]["resolved_after_anomaly_end_s"] = round(r_at - (anomaly_start + duration), 1)
            assert r_at > at
    # The measured values are beyond the default thresholds.
    lat = first_delivery(webhook, "firing", **expected_firing["latency"])[2]
    assert lat["labels"] == expected_firing["latency"]
    assert lat["annotations"]["summary"] == "Model latency p95 latency is above its threshold."
    assert "above the threshold of 200ms" in lat["annotations"]["description"]
    assert float(re.fullmatch(r"([\d.]+)ms", lat["annotations"]["value"]).group(1)) > 200
    err = first_delivery(webhook, "firing", **expected_firing["errors"])[2]
    assert err["labels"] == expected_firing["errors"]
    assert "above the threshold of 5%" in err["annotations"]["description"]
    assert float(err["annotations"]["value"].rstrip("%")) > 5
    acc = first_delivery(webhook, "firing", **expected_firing["accuracy"])[2]
    assert acc["labels"] == expected_firing["accuracy"]
    assert "below the minimum of 85%" in acc["annotations"]["description"]
    assert float(acc["annotations"]["value"].rstrip("%")) < 85
    crit = first_delivery(webhook, "firing", **expected_firing["drift-critical"])[2]
    assert crit["labels"] == expected_firing["drift-critical"]
    assert float(crit["annotations"]["value"]) >= 0.25
    # Each scenario model alerts only for what its scenario changed.
    scenario_alerts = {"latency": {"ModelmonHighLatencyP95"}, "errors": {"ModelmonHighErrorRatio"},
                       "accuracy": {"ModelmonLowAccuracy"}}
    for model, names in scenario_alerts.items():
        got = {a["labels"]["alertname"] for a in webhook.alerts(model=model)}
        assert got == names, (model, got)

    # ---- normal traffic over the same time: no alert at all (nor one without a model)
    assert webhook.alerts(model="normal") == []
    assert [a for a in webhook.alerts() if "model" not in a["labels"]] == []
    assert prom.query('ALERTS{model="normal"}') == []

    # ---- the rate() pitfall: the young windows under-reported throughput ...
    assert prom.value('min_over_time(model:modelmon_requests:rate5m{model="normal"}[5m])') < 500
    assert prom.value('min_over_time(model:modelmon_requests:rate5m{model="throughput"}[5m])') < 500
    # ... (the throughput-drop model really serves 400 req/s) but the guarded
    # alert never even became pending.
    assert prom.query('count_over_time(ALERTS{alertname="ModelmonLowThroughput"}[10m])') == []

    # ---- fleet-wide PSI: the union's, not one replica's nor their mean
    for feature, (got, union, a, b) in fleet.items():
        if abs(a - b) > 0.1:
            assert abs(got - union) < abs(got - (a + b) / 2) and abs(got - union) < min(abs(got - a), abs(got - b)), \
                (feature, fleet[feature])
    assert any(abs(a - b) > 0.1 for _, _, a, b in fleet.values())

    report = {"rules_loaded_after_start_s": {m: round(rules_loaded - t, 1) for m, t in sorted(started.items())},
              "anomaly_to_webhook": timings,
              "fleet_psi (prometheus, numpy on the union, replica 1 alone, replica 2 alone)":
                  {f: tuple(round(x, 4) for x in v) for f, v in sorted(fleet.items())}}
    print("\nalerting e2e:", json.dumps(report, indent=1))
