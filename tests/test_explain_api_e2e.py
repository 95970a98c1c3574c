"""Attributions and outlying inputs from POST /api/v1/events to /metrics through real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
from modelmon.app import Exporter
from modelmon.client import Client
from modelmon.config import config_from_dict
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e


def write_reference(path: Path, rng: np.random.Generator, rows: int = 5000) -> Path:
    lines = ["x,y,attribution_x,attribution_y"]
    for x, y, ax, ay in zip(rng.normal(0, 1, rows), rng.normal(5, 2, rows), rng.normal(0, 2, rows), rng.normal(0, 1, rows)):
        lines.append(f"{x:.5f},{y:.5f},{ax:.5f},{ay:.5f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def metrics(exp: Exporter) -> dict[tuple[str, tuple], float]:
    text = requests.get(f"http://127.0.0.1:{exp.port}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def config(tmp_path, rng):
    return config_from_dict({
        "models": [{"name": "m", "features": [{"name": "x"}, {"name": "y"}],
                    "reference": {"path": str(write_reference(tmp_path / "ref.csv", rng))},
                    "attributions": {"enabled": True}, "drift": {"recompute_interval": 0}}],
        "windows": [{"duration": "5m", "max_events": 10000}],
    })


def test_posted_attributions_and_outliers_reach_metrics(tmp_path):
    rng = np.random.default_rng(9)
    exp = Exporter(config(tmp_path, rng))
    exp.start()
    try:
        n = 1000
        events = [{"model": "m", "id": f"r{i}", "prediction": 1,
                   "features": {"x": float(x), "y": float(y)},
                   "attributions": {"x": float(ax), "y": float(ay)}}
                  for i, (x, y, ax, ay) in enumerate(zip(rng.normal(0, 1, n), rng.normal(5, 2, n),
                                                         rng.normal(0, 0.5, n), rng.normal(0, 3, n)))]
        for ev in events[:100]:
            ev["features"]["x"] = 40.0  # far outside the reference
        events.append({"model": "m", "features": {"x": 1.0, "y": 5.0}, "attributions": {"x": "big"}})
        r = requests.post(f"http://127.0.0.1:{exp.port}/api/v1/events", data=json.dumps(events), timeout=10,
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and r.json()["accepted"] == n, r.text
        got = metrics(exp)
        mw = (("model", "m"), ("window", "5m"))
        assert got[("modelmon_feature_importance_rank_correlation", mw)] == pytest.approx(-1.0)
        assert got[("modelmon_feature_importance_shift_detected", mw)] == 1
        ax = np.mean([abs(e["attributions"]["x"]) for e in events[:n]])
        assert got[("modelmon_feature_importance", (("feature", "x"), *mw))] == pytest.approx(ax, rel=1e-9)
        assert 0.1 <= got[("modelmon_outlier_ratio", mw)] < 0.12
        assert got[("modelmon_outlier_events_total", (("model", "m"),))] >= 100
        assert any(k[0] == "modelmon_drift_score" and ("feature", "attribution_y") in k[1] for k in got)
        assert got[("modelmon_events_rejected_total", (("reason", "invalid_field"), ("source", "api")))] == 1
    finally:
        exp.stop()


def test_client_sends_attributions(tmp_path):
    rng = np.random.default_rng(10)
    exp = Exporter(config(tmp_path, rng))
    exp.start()
    try:
        client = Client(f"http://127.0.0.1:{exp.port}", model="m", flush_interval=30.0)
        for i in range(300):
            assert client.log_event(id=f"c{i}", features={"x": 0.1, "y": 5.0}, prediction=1,
                                    attributions={"x": 2.0, "y": -0.5})
        client.close()
        assert client.stats.sent == 300 and client.stats.rejected == 0
        got = metrics(exp)
        mw = (("model", "m"), ("window", "5m"))
        assert got[("modelmon_attribution_events", mw)] == 300
        assert got[("modelmon_feature_importance", (("feature", "y"), *mw))] == pytest.approx(0.5)
        assert got[("modelmon_feature_importance_rank_correlation", mw)] == pytest.approx(1.0)
    finally:
        exp.stop()
