"""Config reload without servers: which models a new config keeps (counters
and windows carry on), starts afresh or drops, and which changes need a
restart and are refused."""

from __future__ import annotations

import copy

import pytest

from modelmon.config import Config, ConfigError, config_from_dict
from modelmon.events import Event
from modelmon.pipeline import Pipeline
from modelmon.reload import plan

BASE = {"models": [{"name": "a"}, {"name": "b", "thresholds": {"accuracy_min": 0.8}}, {"name": "c"}],
        "windows": [{"duration": "5m", "max_events": 1000}]}


def _cfg(data: dict) -> Config:
    return config_from_dict(copy.deepcopy(data), source="m.yml")


def test_plan_keeps_unchanged_models_and_names_the_rest() -> None:
    new = copy.deepcopy(BASE)
    new["models"][1]["thresholds"]["accuracy_min"] = 0.9   # b changed
    del new["models"][2]                                   # c removed
    new["models"].append({"name": "d"})                    # d added
    p = plan(_cfg(BASE), _cfg(new), {}, {})
    assert (p.kept, p.changed, p.added, p.removed) == (["a"], ["b"], ["d"], ["c"])
    assert p.summary()["kept"] == ["a"] and not p.windows_changed


def test_windows_change_restarts_every_model() -> None:
    new = copy.deepcopy(BASE)
    new["windows"][0]["max_events"] = 2000
    p = plan(_cfg(BASE), _cfg(new), {}, {})
    assert p.kept == [] and p.changed == ["a", "b", "c"] and p.windows_changed


@pytest.mark.parametrize("section,value", [("ingest", {"max_body_bytes": 10}), ("simulator", {"rate": 5}),
                                            ("logs", {"enabled": True}), ("proxy", {"timeout": "5s"})])
def test_settings_applied_only_at_start_are_refused(section: str, value: dict) -> None:
    new = {**copy.deepcopy(BASE), section: value}
    with pytest.raises(ConfigError, match=rf"^m\.yml: {section}: changed, and {section} settings apply only at start"):
        plan(_cfg(BASE), _cfg(new), {}, {})


def test_pipeline_reconfigure_keeps_counters_of_kept_models() -> None:
    now = [1000.0]
    old = _cfg(BASE)
    pipe = Pipeline(old, {}, clock=lambda: now[0])
    pipe.submit_events([Event(model=name, timestamp=now[0], source="api", latency_seconds=0.1) for name in ("a", "b", "c")])
    kept_a = pipe.monitors["a"]
    new_data = copy.deepcopy(BASE)
    new_data["models"][1]["thresholds"]["accuracy_min"] = 0.9
    del new_data["models"][2]
    new = _cfg(new_data)
    p = plan(old, new, {}, {})
    pipe.reconfigure(new, {}, set(p.kept))
    assert pipe.monitors["a"] is kept_a and set(pipe.monitors) == {"a", "b"}
    assert pipe.monitors["b"].cfg.thresholds.accuracy_min == 0.9
    assert sum(v.requests for v in kept_a.versions.values()) == 1
    assert pipe.monitors["b"].versions == {}, "a changed model starts afresh"
    # Exporter health counters carry on for configured models; a removed model's go.
    assert pipe.accepted == {("a", "api"): 1, ("b", "api"): 1}
    assert pipe.config is new
