"""Model versions and deploy markers through a rollout: which versions
``modelmon_model_info`` lists, and when each was first seen (the deploy marker
the overview dashboard annotates), on a fake clock so times are exact."""

from __future__ import annotations

from modelmon.collectors import build_registry
from modelmon.config import Config, ModelConfig, WindowConfig
from modelmon.events import Event
from modelmon.pipeline import Pipeline


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _serve(pipeline: Pipeline, version: str, n: int = 10) -> None:
    pipeline.submit_events([Event(model="fraud", timestamp=0, version=version, latency_seconds=0.1, source="api")
                            for _ in range(n)])


def _info(reg) -> set[str]:
    return {s.labels["version"] for m in reg.collect() if m.name == "modelmon_model_info" for s in m.samples}


def test_rollout_info_and_first_seen() -> None:
    model = ModelConfig(name="fraud", task="classification")
    cfg = Config(models=[model], windows=[WindowConfig(name="1m", duration_seconds=60),
                                          WindowConfig(name="1h", duration_seconds=3600)])
    clock = Clock(1_700_000_000.0)
    pipeline = Pipeline(cfg, {"fraud": None}, clock=clock)
    reg = build_registry(pipeline)
    first = "modelmon_model_version_first_seen_timestamp_seconds"

    _serve(pipeline, "1.4.2")
    assert _info(reg) == {"1.4.2"}
    assert reg.get_sample_value(first, {"model": "fraud", "version": "1.4.2"}) == 1_700_000_000.0

    clock.t += 100  # the canary starts taking traffic next to the stable version
    _serve(pipeline, "1.4.2")
    _serve(pipeline, "2.0.0", 2)
    assert _info(reg) == {"1.4.2", "2.0.0"}
    assert reg.get_sample_value(first, {"model": "fraud", "version": "2.0.0"}) == 1_700_000_100.0
    assert reg.get_sample_value(first, {"model": "fraud", "version": "1.4.2"}) == 1_700_000_000.0  # unchanged
    # Alerts and dashboards split by version: canary and stable have their own counters.
    assert reg.get_sample_value("modelmon_requests_total", {"model": "fraud", "version": "2.0.0"}) == 2
    assert reg.get_sample_value("modelmon_requests_total", {"model": "fraud", "version": "1.4.2"}) == 20

    clock.t += 30  # promoted: only 2.0.0 serves from now on
    _serve(pipeline, "2.0.0")
    clock.t += 59  # 1.4.2 last served 89 s ago, more than the shortest window (60 s)
    assert _info(reg) == {"2.0.0"}
    # The deploy markers stay, so a dashboard can still show when 1.4.2 was deployed.
    assert reg.get_sample_value(first, {"model": "fraud", "version": "1.4.2"}) == 1_700_000_000.0

    clock.t += 61  # nothing served within the shortest window: no version is "serving"
    assert _info(reg) == set()
