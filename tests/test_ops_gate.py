"""The release gate: offline evaluation checks, gate-file validation, exit codes,
and live canary analysis against a real Prometheus scraping three exporters
(stable v1.0, a good canary v2.0 and a bad canary v3.0) fed with deterministic
traffic whose error ratio, p95 latency and accuracy are computed by hand below."""

from __future__ import annotations

import io
import json
import math
import threading
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelmon.app import Exporter
from modelmon.cli import main
from modelmon.config import config_from_dict
from modelmon.events import EventBatch
from modelmon.gate import LiveConfig, SideConfig, judge, render_query
from servers import PrometheusServer, free_port


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["gate", *args])
    return rc, out.getvalue(), err.getvalue()


def write(path: Path, data: Any) -> str:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


# --------------------------------------------------------------------------- offline


@pytest.mark.parametrize("accuracy, rc", [(0.93, 0), (0.90, 0), (0.8999, 1), (0.83, 1)])
def test_default_gate_is_accuracy_at_least_0_90(tmp_path: Path, accuracy: float, rc: int) -> None:
    ev = write(tmp_path / "eval.json", {"accuracy": accuracy, "f1": 0.5})
    code, out, _ = run_cli("--evaluation", ev)
    assert code == rc
    assert ("RELEASE GATE: PASS" if rc == 0 else "RELEASE GATE: FAIL") in out
    assert "accuracy >= 0.9" in out


def test_gate_file_with_several_evaluation_checks_and_json(tmp_path: Path) -> None:
    gate = write(tmp_path / "gate.yml", yaml.safe_dump({"evaluation": [
        {"metric": "accuracy", "min": 0.9}, {"metric": "f1", "min": 0.85},
        {"metric": "metrics.calibration_error", "max": 0.05}, {"metric": "auc", "min": 0.8, "max": 0.999},
    ]}))
    ev = write(tmp_path / "eval.json", {"metrics": {"accuracy": 0.93, "f1": 0.84, "auc": 0.91, "calibration_error": 0.02}})
    code, out, _ = run_cli("--gate", gate, "--evaluation", ev, "--format", "json")
    verdict = json.loads(out)
    assert code == 1 and verdict["passed"] is False and verdict["exit_code"] == 1
    status = {c["rule"]: c["status"] for c in verdict["checks"]}
    assert status == {"accuracy >= 0.9": "pass", "f1 >= 0.85": "fail", "metrics.calibration_error <= 0.05": "pass",
                      "auc >= 0.8": "pass", "auc <= 0.999": "pass"}



def test_a_drift_document_with_a_vanished_column_fails_the_gate(tmp_path: Path) -> None:
    """``modelmon drift -o drift.json`` as evidence: the share of drifted
    features counts scored features only, so a gate on it also bounds
    ``dataset.unusable_features``, which counts a feature column missing from
    the current data (it must not read as "no drift")."""
    write(tmp_path / "ref.csv", "x,y\n" + "".join(f"{i % 7},{i % 5}\n" for i in range(400)))
    write(tmp_path / "cur.csv", "x\n" + "".join(f"{i % 7}\n" for i in range(400)))  # y vanished
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert main(["drift", "--reference", str(tmp_path / "ref.csv"), "--current", str(tmp_path / "cur.csv"),
                     "-o", str(tmp_path / "drift.json")]) == 3
    gate = write(tmp_path / "gate.yml", yaml.safe_dump({"evaluation": [
        {"metric": "dataset.drifted_share", "max": 0.5}, {"metric": "dataset.unusable_features", "max": 0}]}))
    code, out, _ = run_cli("--gate", gate, "--evaluation", str(tmp_path / "drift.json"), "--format", "json")
    status = {c["rule"]: c["status"] for c in json.loads(out)["checks"]}
    assert code == 1
    assert status == {"dataset.drifted_share <= 0.5": "pass", "dataset.unusable_features <= 0": "fail"}


@pytest.mark.parametrize("files, args, message", [
    ({}, ["--evaluation", "{d}/missing.json"], "cannot read"),
    ({"e.json": "{not json"}, ["--evaluation", "{d}/e.json"], "invalid JSON"),
    ({"e.json": "[0.93]"}, ["--evaluation", "{d}/e.json"], "expected a JSON object"),
    ({"e.json": '{"f1": 0.9}'}, ["--evaluation", "{d}/e.json"], "no metric 'accuracy'"),
    ({"e.json": '{"accuracy": "0.93"}'}, ["--evaluation", "{d}/e.json"], "accuracy: must be a finite number"),
    ({}, [], "no evidence"),
    ({"g.yml": "evaluation: [{metric: accuracy, min: 0.9}]"}, ["--gate", "{d}/g.yml"], "give the evaluation file"),
    ({"g.yml": "evaluation: [{metric: accuracy, min: 0.9, treshold: 1}]"}, ["--gate", "{d}/g.yml"],
     "g.yml: evaluation[0].treshold: unknown field"),
    ({"g.yml": "evaluation: [{min: 0.9}]"}, ["--gate", "{d}/g.yml"], "evaluation[0].metric: is required"),
    ({"g.yml": "evaluation: [{metric: accuracy}]"}, ["--gate", "{d}/g.yml"], "needs a bound"),
    ({"g.yml": "evaluation: [{metric: accuracy, max_decrease: 0.1}]"}, ["--gate", "{d}/g.yml"], "only live checks"),
    ({"g.yml": "live: {model: m, checks: [{metric: toxicity, max: 1}]}"}, ["--gate", "{d}/g.yml"], "unknown live metric"),
    ({"g.yml": "live: {model: m, checks: [{metric: error_ratio, max_increase: 0.01}]}"}, ["--gate", "{d}/g.yml"],
     "needs live.baseline"),
    ({"g.yml": "live: {model: m, candidate: {version: '2'}, baseline: {version: '1'}, "
               "checks: [{metric: drifted_features_ratio, max: 0.5}]}"},
     ["--gate", "{d}/g.yml"], "exported per model, not per version"),
    ({"g.yml": "live: {model: m, checks: [{metric: error_ratio, max: 0.05}]}"}, ["--gate", "{d}/g.yml"],
     "give --prometheus.url"),
    ({}, ["--prometheus.url", "http://127.0.0.1:{port}", "--model", "m", "--evaluation", "{d}/e.json"],
     "is unreachable"),
    ({}, ["--prometheus.url", "http://127.0.0.1:9", "--window", "soon"], "--window"),
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path: Path, files: dict, args: list, message: str) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    if "{port}" in " ".join(args):
        write(tmp_path / "e.json", {"accuracy": 0.99})
    args = [a.format(d=tmp_path, port=free_port()) for a in args]
    code, out, err = run_cli(*args)
    assert code == 2, (out, err)
    assert message in err, err
    code, out, _ = run_cli(*args, "--format", "json")
    assert code == 2 and json.loads(out)["exit_code"] == 2 and message in json.loads(out)["error"]


@pytest.mark.parametrize("bound, thr, cand, base, status, observed", [
    ("min", 0.9, 0.9, None, "pass", 0.9),
    ("max", 0.05, 0.06, None, "fail", 0.06),
    ("max_increase", 0.01, 0.035, 0.025, "pass", 0.01),  # exactly at the bound
    ("max_increase", 0.01, 0.1, 0.025, "fail", 0.075),
    ("max_decrease", 0.02, 0.8, 0.95, "fail", 0.15),
    ("max_ratio", 1.25, 0.12, 0.1, "pass", 1.2),
    ("max_ratio", 1.25, 0.13, 0.1, "fail", 1.3),
    ("max_ratio", 1.25, 0.0, 0.0, "pass", 1.0),
    ("max_ratio", 1.25, 0.01, 0.0, "fail", None),
    ("max_increase", 0.01, 0.1, None, "no_data", None),
    ("min", 0.9, None, 0.95, "no_data", None),
])
def test_judge(bound: str, thr: float, cand: float | None, base: float | None, status: str, observed: float | None) -> None:
    got_status, got_observed, _ = judge(bound, thr, cand, base)
    assert got_status == status
    assert got_observed == (pytest.approx(observed) if observed is not None else None)


def test_queries_escape_label_values() -> None:
    live = LiveConfig(model='we"ird', window_seconds=1800, candidate=SideConfig(version="2\\0", selector={"track": "canary"}))
    q = render_query("sum(increase(modelmon_requests_total{sv}[{w}]))", live, live.candidate)
    assert q == 'sum(increase(modelmon_requests_total{model="we\\"ird",track="canary",version="2\\\\0"}[30m]))'


# --------------------------------------------------------------------------- live


#: Per tick of 40 events.  Latencies alternate 60 ms / 90 ms (buckets (0.05, 0.075] and
#: (0.075, 0.1]), so histogram_quantile(0.95) = 0.075 + 0.025 * (0.95 - 0.5) / 0.5 = 0.0975.
#: The bad canary's 240 ms all fall in (0.2, 0.25]: p95 = 0.2 + 0.05 * 0.95 = 0.2475.
TRACKS = {
    "stable": {"version": "1.0", "errors": 1, "wrong": 2, "latency": (0.06, 0.09), "shift": 0.0},
    "canary": {"version": "2.0", "errors": 1, "wrong": 2, "latency": (0.06, 0.09), "shift": 0.0},
    "canary-bad": {"version": "3.0", "errors": 4, "wrong": 8, "latency": (0.24, 0.24), "shift": 0.5},
}
EXPECTED = {  # hand-computed from TRACKS
    "stable": {"error_ratio": 1 / 40, "latency_p95_seconds": 0.0975, "accuracy": 38 / 40, "drifted_features_ratio": 0.0},
    "canary": {"error_ratio": 1 / 40, "latency_p95_seconds": 0.0975, "accuracy": 38 / 40, "drifted_features_ratio": 0.0},
    "canary-bad": {"error_ratio": 4 / 40, "latency_p95_seconds": 0.2475, "accuracy": 32 / 40, "drifted_features_ratio": 1.0},
}
GOLDEN = (math.sqrt(5) - 1) / 2


def _batch(track: str, tick: int) -> EventBatch:
    t = TRACKS[track]
    n = 40
    # Feature x: a low-discrepancy sequence, uniform on [0, 1) like the reference (shifted for the bad canary).
    xs = [((tick * n + i) * GOLDEN) % 1.0 + t["shift"] for i in range(n)]
    labels = [i % 2 for i in range(n)]
    preds = [(1 - y) if i < t["wrong"] else y for i, y in enumerate(labels)]
    import time

    now = time.time()
    return EventBatch(
        model="fraud", timestamps=[now] * n, versions=[t["version"]] * n, ids=[None] * n,
        latency_seconds=[t["latency"][i % 2] for i in range(n)],
        errors=["error" if i < t["errors"] else None for i in range(n)],
        features={"x": xs}, predictions=preds, scores=[None] * n, labels=labels, attributes={}, source="client",
    )


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("canary")
    (d / "ref.csv").write_text("x\n" + "\n".join(f"{(i * GOLDEN) % 1.0:.6f}" for i in range(2000)) + "\n")
    exporters: dict[str, Exporter] = {}
    stop = threading.Event()
    prom = None
    try:
        for track in TRACKS:
            cfg = config_from_dict({"models": [{"name": "fraud", "reference": {"path": str(d / "ref.csv")},
                                                "features": [{"name": "x"}], "drift": {"recompute_interval": "1s"}}]})
            exporters[track] = Exporter(cfg, listen="127.0.0.1:0")
            exporters[track].start()

        def feed() -> None:
            tick = 0
            while not stop.wait(0.2):
                for track, exp in exporters.items():
                    exp.pipeline.submit(_batch(track, tick))
                tick += 1

        threading.Thread(target=feed, daemon=True, name="canary-feed").start()
        prom = PrometheusServer(d, {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "modelmon", "static_configs": [
                {"targets": [f"127.0.0.1:{exp.port}"], "labels": {"track": track}} for track, exp in exporters.items()]}],
        })
        # increase() needs two samples per series; drift needs min_samples values in the window.
        prom.wait_for("count_over_time(modelmon_requests_total[1m]) >= 3", timeout=40, check=lambda r: len(r) == 3)
        # The 5m window reaches the drift minimum first; the 1h window samples
        # (720k arrivals an hour > max_events) and fills more slowly.
        prom.wait_for('modelmon_dataset_drifted_features_ratio{window="5m"}', timeout=30, check=lambda r: len(r) == 3)
        yield {"url": prom.url, "dir": d, "prom": prom}
    finally:
        stop.set()
        if prom is not None:
            prom.stop()
        for exp in exporters.values():
            exp.stop()


def _gate_file(d: Path, url: str, candidate: str, name: str = "gate.yml") -> str:
    return write(d / name, yaml.safe_dump({"live": {
        "prometheus_url": url, "model": "fraud", "window": "1m", "min_requests": 50, "min_labelled": 50,
        "candidate": {"version": TRACKS[candidate]["version"], "selector": {"track": candidate}},
        "baseline": {"version": "1.0", "selector": {"track": "stable"}},
        "checks": [
            {"metric": "error_ratio", "max": 0.05, "max_increase": 0.01},
            {"metric": "latency_p95_seconds", "max": 0.2, "max_ratio": 1.25},
            {"metric": "accuracy", "min": 0.9, "max_decrease": 0.02},
            {"metric": "drifted_features_ratio", "max": 0.5},
        ],
    }}))


def _by_rule(verdict: dict) -> dict[str, dict]:
    return {c["rule"]: c for c in verdict["checks"]}


@pytest.mark.e2e
def test_live_gate_passes_a_good_canary(canary: dict[str, Any]) -> None:
    code, out, err = run_cli("--gate", _gate_file(canary["dir"], canary["url"], "canary"), "--format", "json")
    verdict = json.loads(out)
    assert code == 0, out + err
    checks = _by_rule(verdict)
    for metric, value in EXPECTED["canary"].items():
        rules = [c for c in checks.values() if c["metric"] == metric]
        assert rules and all(c["candidate"] == pytest.approx(value, rel=1e-6, abs=1e-9) for c in rules), (metric, rules)
    assert checks["error_ratio - baseline <= 0.01"]["baseline"] == pytest.approx(EXPECTED["stable"]["error_ratio"], rel=1e-6)
    assert checks["error_ratio - baseline <= 0.01"]["observed"] == pytest.approx(0.0, abs=1e-9)
    assert checks["latency_p95_seconds / baseline <= 1.25"]["observed"] == pytest.approx(1.0, rel=1e-6)


@pytest.mark.e2e
def test_live_gate_fails_a_bad_canary_on_every_check(canary: dict[str, Any]) -> None:
    code, out, err = run_cli("--gate", _gate_file(canary["dir"], canary["url"], "canary-bad"), "--format", "json")
    assert code == 1, out + err
    checks = _by_rule(json.loads(out))
    bad, stable = EXPECTED["canary-bad"], EXPECTED["stable"]
    observed = {
        "error_ratio <= 0.05": bad["error_ratio"],
        "error_ratio - baseline <= 0.01": bad["error_ratio"] - stable["error_ratio"],
        "latency_p95_seconds <= 0.2": bad["latency_p95_seconds"],
        "latency_p95_seconds / baseline <= 1.25": bad["latency_p95_seconds"] / stable["latency_p95_seconds"],
        "accuracy >= 0.9": bad["accuracy"],
        "baseline - accuracy <= 0.02": stable["accuracy"] - bad["accuracy"],
        "drifted_features_ratio <= 0.5": bad["drifted_features_ratio"],
    }
    assert set(checks) == set(observed)
    for rule, value in observed.items():
        assert checks[rule]["status"] == "fail", rule
        assert checks[rule]["observed"] == pytest.approx(value, rel=1e-6), rule
    # The table says the same for humans.
    code, table, _ = run_cli("--gate", _gate_file(canary["dir"], canary["url"], "canary-bad"))
    assert code == 1 and table.startswith("RELEASE GATE: FAIL  (0/7 checks passed)")


@pytest.mark.e2e
def test_live_gate_from_flags_with_default_checks(canary: dict[str, Any], tmp_path: Path) -> None:
    ev = write(tmp_path / "eval.json", {"accuracy": 0.93})
    base = ["--evaluation", ev, "--prometheus.url", canary["url"], "--model", "fraud", "--window", "1m",
            "--baseline-version", "1.0"]
    code, out, err = run_cli(*base, "--candidate-version", "2.0")
    assert code == 0, out + err
    assert "error_ratio - baseline <= 0.01" in out and "latency_p95_seconds / baseline <= 1.25" in out
    code, out, _ = run_cli(*base, "--candidate-version", "3.0")
    assert code == 1
    # A version that served nothing is no evidence: the gate fails and says why.
    code, out, _ = run_cli(*base, "--candidate-version", "2.0.typo", "--format", "json")
    verdict = json.loads(out)
    assert code == 1
    live = [c for c in verdict["checks"] if c["source"] == "live"]
    assert live and all(c["status"] == "no_data" for c in live)
    assert "candidate has 0 requests in 1m (< min_requests 100)" in live[0]["detail"]


@pytest.mark.e2e
def test_live_gate_rejects_a_url_that_is_not_prometheus(canary: dict[str, Any]) -> None:
    code, _, err = run_cli("--prometheus.url", canary["url"] + "/nothing-here", "--model", "fraud",
                           "--candidate-version", "2.0")
    assert code == 2 and "Prometheus" in err


@pytest.mark.e2e
def test_ci_example_canary_step(canary: dict[str, Any], tmp_path: Path) -> None:
    """The example workflow's canary step, run as written against the live canary."""
    from test_ops_ci_example import run_step

    env = {"PROMETHEUS_URL": canary["url"], "STABLE_VERSION": "1.0", "CANARY_WINDOW": "1m"}
    r = run_step("Canary analysis", tmp_path, env={**env, "CANDIDATE_VERSION": "2.0"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "RELEASE GATE: PASS  (7/7 checks passed)" in r.stdout
    # The same step with Prometheus down stops the pipeline with exit 2.
    r = run_step("Canary analysis", tmp_path, env={**env, "CANDIDATE_VERSION": "2.0",
                                                   "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}"})
    assert r.returncode == 2 and "unreachable" in r.stderr
