"""Every committed dashboard validates against Grafana's own dashboard model.

The JSON Schemas are generated from the TypeScript types of the pinned
``@grafana/schema`` npm package (grafana/schema/: package-lock.json,
make-schemas.mjs, grafana_schema.py), cached under .cache/grafana-schema/.  Checked:
the dashboard document itself, and each panel's ``options`` and
``fieldConfig.defaults.custom`` (and ``custom.*`` override values) against
that panel plugin's own schema.  No unknown keys are allowed anywhere.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import jsonschema  # in the [test] extra
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "grafana"))
sys.path.insert(0, str(REPO / "grafana" / "schema"))

import grafana_schema  # noqa: E402

from dashgen.inspect import load_dashboards, panels  # noqa: E402

DASHBOARDS = load_dashboards()


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    try:
        folder = grafana_schema.schema_dir()
    except grafana_schema.SchemaUnavailable as exc:
        pytest.fail(f"cannot build Grafana's dashboard schema: {exc}", pytrace=False)
    return {"dashboard": grafana_schema.dashboard_schema(folder), "panels": grafana_schema.panel_schemas(folder)}


def _errors(schema: dict[str, Any], doc: Any) -> list[str]:
    v = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '.'}: {e.message[:300]}" for e in v.iter_errors(doc)]


def _partial(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without top-level ``required``: an override sets one property."""
    schema = copy.deepcopy(schema)
    root = schema["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    root.pop("required", None)
    return schema


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_matches_grafana_model(schemas: dict[str, Any], name: str) -> None:
    errors = _errors(schemas["dashboard"], DASHBOARDS[name])
    assert not errors, f"{name} does not match Grafana's dashboard model:\n" + "\n".join(errors)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panel_options_match_plugin_schemas(schemas: dict[str, Any], name: str) -> None:
    problems = []
    for panel in panels(DASHBOARDS[name]):
        plugin = schemas["panels"].get(panel["type"])
        where = f"{panel['type']} {panel['title']!r}"
        if plugin is None:
            problems.append(f"{where}: no schema for panel type {panel['type']} (add it to make-schemas.mjs)")
            continue
        problems += [f"{where} options {e}" for e in _errors(plugin["options"], panel.get("options", {}))]
        custom = panel["fieldConfig"]["defaults"].get("custom")
        if custom is not None:
            assert "custom" in plugin, f"{where}: sets custom field config the plugin does not have"
            problems += [f"{where} custom {e}" for e in _errors(plugin["custom"], custom)]
        for override in panel["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                if prop["id"].startswith("custom."):
                    key = prop["id"].split(".", 1)[1]
                    problems += [f"{where} override {prop['id']} {e}"
                                 for e in _errors(_partial(plugin["custom"]), {key: prop["value"]})]
    assert not problems, f"{name}:\n" + "\n".join(problems)


def test_schema_rejects_what_grafana_would_not_load(schemas: dict[str, Any]) -> None:
    """The generated schema is strict enough to catch real mistakes."""
    good = DASHBOARDS["modelmon-overview.json"]
    assert not _errors(schemas["dashboard"], good)
    bad = copy.deepcopy(good)
    bad["panels"][1]["gridPos"]["w"] = "wide"
    assert _errors(schemas["dashboard"], bad)
    bad = copy.deepcopy(good)
    bad["templating"]["list"][0]["refreshOnLoad"] = True  # not a field of the model
    assert _errors(schemas["dashboard"], bad)
    ts = next(p for p in panels(good) if p["type"] == "timeseries")
    assert _errors(schemas["panels"]["timeseries"]["options"], {**ts["options"], "legend": {"show": True}})
