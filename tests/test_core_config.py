"""Config validation: every bad field gets a message naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelmon.config import ConfigError, load_config, parse_duration

GOOD = """
models:
  - name: fraud
    task: classification
    features:
      - {name: amount, type: numerical}
      - {name: country, type: categorical, categories: [US, DE]}
    reference: {path: ref.csv}
    thresholds: {accuracy_min: 0.9}
windows:
  - {duration: 5m, max_events: 5000}
  - {name: hour, duration: 1h}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "modelmon.yml"
    p.write_text(text)
    return p


def test_good_config_loads_into_dataclasses(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    m = cfg.model("fraud")
    assert m is not None and m.features[1].categories == ["US", "DE"]
    assert m.thresholds.accuracy_min == 0.9
    assert m.thresholds.latency_p95_seconds == 0.2  # the default
    assert [(w.name, w.duration_seconds, w.max_events) for w in cfg.windows] == [("5m", 300.0, 5000), ("hour", 3600.0, 100_000)]
    assert cfg.resolve_path("ref.csv") == tmp_path / "ref.csv"


@pytest.mark.parametrize(
    "old,new,field,message",
    [
        ("type: numerical}", "type: numeric}", "models[0].features[0].type", "must be one of numerical, categorical"),
        ("task: classification", "task: ranking", "models[0].task", "must be one of classification, regression"),
        ("accuracy_min: 0.9", "accuracy_min: 1.5", "models[0].thresholds.accuracy_min", "must be between 0 and 1"),
        ("accuracy_min: 0.9", "accuracy_min: high", "models[0].thresholds.accuracy_min", "must be a number"),
        ("duration: 5m,", "duration: five,", "windows[0].duration", "must be a duration"),
        ("max_events: 5000", "max_events: 0", "windows[0].max_events", "must be between 1 and 10000000"),
        ("max_events: 5000", "max_events: 1.5", "windows[0].max_events", "must be an integer"),
        ("thresholds: {accuracy_min: 0.9}", "threshold: {accuracy_min: 0.9}", "models[0].threshold", "unknown field"),
        ("categories: [US, DE]", "categories: [US, US]", "models[0].features[1].categories", "must be unique"),
        ("- {name: amount, type: numerical}", "- {name: country, type: numerical}", "models[0].features[1].name",
         "duplicate feature name"),
        ("{name: amount, type: numerical}", "{name: amount, type: numerical, categories: [a]}",
         "models[0].features[0].categories", "only categorical features have categories"),
        ("categories: [US, DE]}", "categories: [US, DE], methods: [meanstd]}",
         "models[0].features[1].methods[0]", "does not apply to categorical"),
        ("{name: amount, type: numerical}", "{name: amount, type: numerical, methods: [nope]}",
         "models[0].features[0].methods[0]", "unknown drift method"),
        ("- name: fraud", "- name: 'bad name!'", "models[0].name", "must be a name"),
    ],
)
def test_bad_field_is_named(tmp_path: Path, old: str, new: str, field: str, message: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert text.startswith(f"{path}: {field}: "), text
    assert message in text


def test_missing_required_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\[0\]\.name: is required"):
        load_config(write(tmp_path, "models:\n  - task: regression\n"))


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"invalid YAML: line \d+, column \d+"):
        load_config(write(tmp_path, "models:\n  - name: [unclosed\n"))


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yml")


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


@pytest.mark.parametrize("text,seconds", [("5m", 300), ("30s", 30), ("1h", 3600), ("250ms", 0.25), (12, 12), ("0", 0)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "-1s", True, "m5"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)
