"""Metric groups switched off with ``--no-collector.NAME`` or
``collectors: {NAME: false}``: the group's families vanish from /metrics,
everything else (and the alert rules' inputs) stays."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelmon.cli import build_parser
from modelmon.collectors import build_registry
from modelmon.collectors.groups import GROUPS, NAMES, group_of
from modelmon.config import (
    CollectorsConfig,
    Config,
    ConfigError,
    FeatureConfig,
    ModelConfig,
    load_config,
)
from modelmon.drift.reference import build_profile
from modelmon.events import Event
from modelmon.pipeline import Pipeline
from modelmon.profile_sections import fit_explain_sections


def busy_registry(disabled: list[str]) -> set[str]:
    """Family names a registry with traffic, labels, drift and fairness emits."""
    model = ModelConfig(name="m", features=[FeatureConfig(name="x"), FeatureConfig(name="c", type="categorical")])
    model.drift.min_samples = 10
    model.fairness.attribute = "c"
    model.fairness.groups = ["a", "b"]
    rng = np.random.default_rng(0)
    model.outliers.enabled = True
    reference = {"x": rng.normal(size=500), "c": ["a", "b"] * 250}
    profile = build_profile(reference, model.features)
    fit_explain_sections(profile, reference, model)  # the outlier model: the explain group's families
    pipeline = Pipeline(Config(models=[model]), {"m": profile})
    registry = build_registry(pipeline, disabled=disabled)
    pipeline.submit_events([
        Event(model="m", timestamp=0, version="v1", latency_seconds=0.1, error=None if i % 9 else "error",
              features={"x": float(rng.normal()), "c": "ab"[i % 2]}, prediction=str(i % 2), score=0.7,
              label=str((i // 2) % 2), attributes={"c": "ab"[i % 2]}, source="api")
        for i in range(300)
    ])
    return {f.name for f in registry.collect() if f.samples}


def test_config_fields_are_the_groups() -> None:
    assert [f.name for f in dataclasses.fields(CollectorsConfig)] == list(NAMES)


def test_every_group_has_families_and_disabling_one_removes_only_it() -> None:
    everything = busy_registry([])
    by_group = {name: {f for f in everything if group_of(f) == name} for name in NAMES}
    for name, families in by_group.items():
        assert families, f"group {name} matches no family a busy exporter emits"
    always = {f for f in everything if group_of(f) is None}
    # What the alert rules and dashboards' variables select on stays.
    assert {"modelmon_threshold_latency_p95_seconds", "modelmon_build_info", "modelmon_reference_info",
            "modelmon_events_accepted", "modelmon_window_events"} <= always
    for name in NAMES:
        left = busy_registry([name])
        assert left == everything - by_group[name], name
    assert busy_registry(list(NAMES)) == always


def test_bins_group_is_what_the_fleet_rules_read() -> None:
    fams = busy_registry([])
    assert {"modelmon_feature_bin_values", "modelmon_reference_bin_ratio"} == {f for f in fams if group_of(f) == "bins"}
    assert group_of("modelmon_drift_score") == "drift" and group_of("process_cpu_seconds") == "process"
    assert group_of("modelmon_request_duration_seconds") == "serving"


def test_explain_group_holds_the_outlier_and_importance_families() -> None:
    fams = busy_registry([])
    assert {"modelmon_outlier_events", "modelmon_outlier_ratio", "modelmon_reference_outlier_ratio"} <= \
        {f for f in fams if group_of(f) == "explain"}
    for family in ("modelmon_feature_importance", "modelmon_feature_importance_ratio",
                   "modelmon_feature_importance_rank_correlation", "modelmon_reference_feature_importance_ratio",
                   "modelmon_attribution_events"):
        assert group_of(family) == "explain", family
    # Their thresholds stay: the alert rules read them.
    assert group_of("modelmon_threshold_outlier_ratio_max_multiple") is None


def test_unknown_group_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown metric group 'bogus'"):
        build_registry(Pipeline(Config(), {}), disabled=["bogus"])


def test_config_switch_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({"collectors": {"bins": False, "process": False}}))
    assert load_config(str(path)).collectors.disabled() == ["bins", "process"]
    path.write_text(yaml.safe_dump({"collectors": {"bogus": False}}))
    with pytest.raises(ConfigError, match="collectors.bogus"):
        load_config(str(path))
    path.write_text(yaml.safe_dump({"collectors": {"bins": "no"}}))
    with pytest.raises(ConfigError, match="collectors.bins.*true or false"):
        load_config(str(path))


def test_flags_parse_last_one_wins() -> None:
    args = build_parser().parse_args(["serve", "--no-collector.bins", "--no-collector.drift", "--collector.drift"])
    assert args.collectors == {"bins": False, "drift": True}
    assert build_parser().parse_args(["serve"]).collectors is None
    assert {g.name for g in GROUPS} == set(NAMES)


@pytest.mark.e2e
def test_disabled_groups_vanish_from_a_real_metrics_page(servers, tmp_path: Path) -> None:
    cfg = tmp_path / "m.yml"
    cfg.write_text(yaml.safe_dump({"simulator": {"enabled": True}, "collectors": {"fairness": False}}))
    full = servers.exporter("--seed=3")
    cut = servers.exporter(f"--config={cfg}", "--seed=3", "--no-collector.bins", "--no-collector.process",
                           "--collector.drift")

    def families(text: str) -> set[str]:
        # TYPE lines name counters with their _total; the groups name families without.
        return {line.split()[2].removesuffix("_total") for line in text.splitlines() if line.startswith("# TYPE ")}

    before, after = families(full.metrics()), families(cut.metrics())
    gone = before - after
    assert {"modelmon_feature_bin_values", "modelmon_reference_bin_ratio", "process_cpu_seconds",
            "python_info"} <= gone, gone
    assert any(f.startswith("modelmon_fairness_") for f in before)
    assert not any(f.startswith("modelmon_fairness_") for f in after)
    assert {group_of(f) for f in gone} == {"bins", "process", "fairness"}, gone
    assert "modelmon_drift_score" in after and "modelmon_threshold_latency_p95_seconds" in after
    assert after <= before
