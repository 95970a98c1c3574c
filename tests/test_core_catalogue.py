"""docs/metrics.md lists every metric the exporter can emit."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from modelmon.collectors import build_registry
from modelmon.config import Config, FeatureConfig, ModelConfig
from modelmon.drift.reference import build_profile
from modelmon.events import Event
from modelmon.pipeline import Pipeline

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "metrics.md").read_text()
DOCUMENTED = set(re.findall(r"^\| `(modelmon_[a-z0-9_]+)`", DOC, flags=re.M))


def test_every_metric_name_in_the_source_is_documented() -> None:
    """Metric names are string literals in the collectors; counters are
    declared without the ``_total`` that the exposition adds."""
    names = set()
    for path in (REPO / "exporter" / "modelmon").rglob("*.py"):
        names |= set(re.findall(r'"(modelmon_[a-z0-9_]+)"', path.read_text()))
    assert len(names) > 40
    missing = sorted(n for n in names if n not in DOCUMENTED and f"{n}_total" not in DOCUMENTED)
    assert missing == [], f"add these to docs/metrics.md: {missing}"


def test_every_family_a_busy_exporter_emits_is_documented() -> None:
    model = ModelConfig(name="m", features=[FeatureConfig(name="x"), FeatureConfig(name="c", type="categorical")])
    model.drift.min_samples = 10
    model.fairness.attribute = "c"
    model.fairness.groups = ["a", "b"]
    cfg = Config(models=[model])
    rng = np.random.default_rng(0)
    profile = build_profile({"x": rng.normal(size=500), "c": ["a", "b"] * 250}, model.features)
    pipeline = Pipeline(cfg, {"m": profile})
    registry = build_registry(pipeline)
    pipeline.submit_events([
        Event(model="m", timestamp=0, version="v1", latency_seconds=0.1, error=None if i % 9 else "error",
              features={"x": float(rng.normal()), "c": "ab"[i % 2]}, prediction=str(i % 2), score=0.7,
              label=str((i // 2) % 2), attributes={"c": "ab"[i % 2]}, source="api")
        for i in range(300)
    ])
    emitted = set()
    for family in registry.collect():
        for sample in family.samples:
            name = sample.name
            for suffix in ("_bucket", "_count", "_sum", "_created"):
                if family.type == "histogram" and name.endswith(suffix):
                    name = name[: -len(suffix)]
            emitted.add(name)
    ours = {n for n in emitted if n.startswith("modelmon_")}
    assert {"modelmon_requests_total", "modelmon_drift_score", "modelmon_quality_f1_ratio",
            "modelmon_fairness_demographic_parity_difference"} <= ours
    assert sorted(ours - DOCUMENTED) == []
